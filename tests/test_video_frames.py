"""The video pipeline's messages and shared objects: frame order, counters behind a lock, and one
colour conversion each way per frame."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from test_video import write_clip
from walkcut.runtime.draw import overlay
from walkcut.runtime.sources.pixels import PixelSource
from walkcut.runtime.video import (
    Frame,
    FrameResult,
    ReorderBuffer,
    RunCounters,
    SegmenterSpec,
    VideoInput,
    VideoPipeline,
    VideoReader,
    worker_factory,
)
from walkcut.runtime.video.pipeline import ID_COLORS


def _result(index):
    return FrameResult(Frame(index, np.zeros((2, 2, 3), np.uint8), 0.0))


def test_reorder_buffer_waits_for_gaps_in_a_file():
    buf = ReorderBuffer()
    for i in (2, 0, 3):
        buf.add(_result(i))
    assert [r.index for r in buf.ready(wait_for_gaps=True)] == [0]  # 1 is still being cut
    buf.add(_result(1))
    assert [r.index for r in buf.ready(wait_for_gaps=True)] == [1, 2, 3]
    assert len(buf) == 0 and buf.overtaken == 0


def test_reorder_buffer_goes_past_gaps_and_drops_overtaken_frames():
    buf = ReorderBuffer()
    buf.add(_result(3))
    assert [r.index for r in buf.ready(wait_for_gaps=False)] == [3]  # live: 0-2 were dropped
    buf.add(_result(1))  # a slow worker's frame, overtaken by frame 3
    buf.add(_result(5))
    assert [r.index for r in buf.ready(wait_for_gaps=False)] == [5]
    assert buf.overtaken == 1


def test_run_counters_are_exact_under_threads():
    counters = RunCounters(("late", "replaced"))

    def work():
        for _ in range(2000):
            counters.drop("late")
            counters.count_read()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counters.read == 16000 and counters.drops() == {"late": 16000, "replaced": 0}
    with pytest.raises(ValueError, match="unknown drop reason 'typo'"):
        counters.drop("typo")


def test_each_frame_is_converted_once_each_way(tmp_path, monkeypatch):
    """BGR -> RGB once when read, RGB -> BGR once when drawn (the pixel source's Lab conversions are
    not counted)."""
    clip = write_clip(tmp_path / "c.mp4", n=5)
    swaps = {cv2.COLOR_BGR2RGB, cv2.COLOR_RGB2BGR}  # one OpenCV code: swapping is its own inverse
    calls = []
    convert = cv2.cvtColor

    def counting(src, code, *args, **kwargs):
        if code in swaps:
            calls.append(code)
        return convert(src, code, *args, **kwargs)

    monkeypatch.setattr(cv2, "cvtColor", counting)
    shown = []
    pipeline = VideoPipeline(worker_factory(SegmenterSpec(source=PixelSource(grid=8)), processes=False),
                             cut_options={"max_segments": 4}, workers=2)
    with VideoReader(VideoInput.parse(str(clip))) as reader:
        summary = pipeline.run(reader, on_frame=lambda i, ids, picture: shown.append((ids, picture)))
    assert summary.frames_written == 5
    assert len(calls) == 2 * 5  # 0.2 converted 3 times per frame
    # The pictures handed on are the BGR overlays of the frames, as a writer wants them.
    cap = cv2.VideoCapture(str(clip))
    for ids, picture in shown:
        _, frame_bgr = cap.read()
        want = convert(overlay(convert(frame_bgr, cv2.COLOR_BGR2RGB), ids, colors=ID_COLORS), cv2.COLOR_RGB2BGR)
        np.testing.assert_array_equal(picture, want)
    cap.release()
