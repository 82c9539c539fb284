"""The model stage: frame t + 1's engine pass runs while frame t is cut; errors, stats, the command.

On CPU with a small ONNX attention model (test_backends.build_fake_model) and with the tiny model
exported from a random SD UNet (export_fixtures; skipped without torch/diffusers).
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from test_video import count_frames, write_clip
from walkcut.runtime.sources.engine import EngineSource, EngineSpec
from walkcut.runtime.video import (
    ModelStage,
    SegmenterSpec,
    VideoInput,
    VideoPipeline,
    VideoReader,
    build_video_segmenter,
    worker_factory,
)

from walkcut.cli import main

pytest.importorskip("onnx")


@pytest.fixture
def fake_engine(tmp_path):
    from test_backends import build_fake_model

    path = tmp_path / "fake.onnx"
    build_fake_model(path)
    return path


class Recorder:
    """Wraps a source and a worker factory to log when each frame's engine pass and cut run."""

    def __init__(self, source, pause=0.03):
        self.source, self.pause, self.events, self.lock = source, pause, [], threading.Lock()
        self.n = 0

    def log(self, what, frame):
        with self.lock:
            self.events.append((what, frame))

    def transition(self, image_rgb):
        frame = self.n
        self.n += 1
        self.log("engine start", frame)
        time.sleep(self.pause)  # a GPU call's duration, so the two stages visibly share time
        out = self.source.transition(image_rgb)
        self.log("engine end", frame)
        return out

    @property
    def last_timings(self):
        return self.source.last_timings

    def worker(self, make):
        recorder = self

        class Logged:
            def __init__(self):
                self.inner, self.frame = make(), 0

            @property
            def source(self):
                return self.inner.source

            def set_image(self, img):
                self.inner.set_image(img)
                return self

            def segment(self, **kw):
                recorder.log("cut start", self.frame)
                time.sleep(recorder.pause)
                out = self.inner.segment(**kw)
                recorder.log("cut end", self.frame)
                self.frame += 1
                return out

        return Logged


def run_overlapped(clip, source, spec, *, workers=1, processes=False, **kw):
    ids = []
    pipeline = VideoPipeline(worker_factory(spec, processes=processes), cut_options={"max_segments": 4},
                             engine=source, workers=workers, track=False, **kw)
    with VideoReader(VideoInput.parse(str(clip))) as reader:
        summary = pipeline.run(reader, on_frame=lambda i, x, pic: ids.append(x))
    return summary, ids


def test_engine_runs_ahead_while_the_previous_frame_is_cut(tmp_path, fake_engine):
    clip = write_clip(tmp_path / "c.mp4", n=6)
    recorder = Recorder(EngineSource.from_path(fake_engine, backend="ort-cpu"))
    spec = SegmenterSpec(handed=True)
    pipeline = VideoPipeline(recorder.worker(worker_factory(spec, processes=False)),
                             cut_options={"max_segments": 4}, engine=recorder)
    with VideoReader(VideoInput.parse(str(clip))) as reader:
        summary = pipeline.run(reader)
    assert summary.frames_written == 6 and summary.stop_reason == "end of stream"
    order = {event: i for i, event in enumerate(recorder.events)}
    # Frame t + 1's engine pass starts before frame t's cut ends, for every t: they overlap.
    for t in range(5):
        assert order[("engine start", t + 1)] < order[("cut end", t)], recorder.events
    stats = summary.engine
    assert stats.calls == 6 and stats.busy_s > 0
    assert "engine: 6 calls" in "\n".join(summary.lines())


def test_overlapped_labels_equal_the_sequential_ones(tmp_path, fake_engine):
    clip = write_clip(tmp_path / "c.mp4", n=5)
    source = EngineSource.from_path(fake_engine, backend="ort-cpu")
    summary, ids = run_overlapped(clip, source, SegmenterSpec(handed=True))
    assert summary.frames_written == 5 and summary.stages["engine"]
    direct = build_video_segmenter(SegmenterSpec(source=EngineSpec(fake_engine, backend="ort-cpu")))
    cap = cv2.VideoCapture(str(clip))
    for got in ids:
        _, frame = cap.read()
        want = direct.set_image(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).segment(max_segments=4).labels
        np.testing.assert_array_equal(got, want)
    cap.release()


def test_overlap_with_worker_processes(tmp_path, fake_engine):
    clip = write_clip(tmp_path / "c.mp4", n=5)
    source = EngineSource.from_path(fake_engine, backend="ort-cpu")
    summary, ids = run_overlapped(clip, source, SegmenterSpec(handed=True), workers=2, processes=True)
    assert summary.stop_reason == "end of stream" and len(ids) == 5
    _, in_threads = run_overlapped(clip, source, SegmenterSpec(handed=True), workers=1)
    for a, b in zip(ids[:1], in_threads[:1]):  # the first frame has no warm start in either
        np.testing.assert_array_equal(a, b)


def test_engine_error_stops_in_frame_order(tmp_path, fake_engine):
    clip = write_clip(tmp_path / "c.mp4", n=6)

    class Failing:
        def __init__(self):
            self.inner, self.n = EngineSource.from_path(fake_engine, backend="ort-cpu"), 0

        def transition(self, image_rgb):
            self.n += 1
            if self.n == 3:
                raise ValueError("engine exploded")
            return self.inner.transition(image_rgb)

    summary, ids = run_overlapped(clip, Failing(), SegmenterSpec(handed=True))
    assert summary.stop_reason == "error: engine exploded"
    assert len(ids) == 2


def test_model_stage_needs_a_source():
    with pytest.raises(TypeError, match="transition"):
        ModelStage(object())


def test_video_command_overlaps_the_engine(tmp_path, fake_engine, capsys):
    clip = write_clip(tmp_path / "c.mp4", n=4)
    rc = main(["video", str(clip), "--out", str(tmp_path / "o.mp4"), "--engine", str(fake_engine),
               "--backend", "ort-cpu", "--processes", "--workers", "1"])
    assert rc == 0, capsys.readouterr().err
    assert count_frames(tmp_path / "o.mp4") == 4
    err = capsys.readouterr().err
    assert "engine: 4 calls" in err and "engine stage in the parent" in err


def test_tiny_exported_model_overlapped(tmp_path, tiny_onnx):
    clip = write_clip(tmp_path / "c.mp4", n=4)
    source = EngineSource.from_path(tiny_onnx, backend="ort-cpu")
    summary, ids = run_overlapped(clip, source, SegmenterSpec(handed=True), workers=1, processes=True)
    assert summary.stop_reason == "end of stream" and len(ids) == 4
    assert summary.engine.calls == 4
    assert all(x.shape == (72, 96) for x in ids)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from export_fixtures import TINY_ATTN_RES, TINY_IMAGE_SIZE, build_tiny_pipeline

    model_dir = build_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd"))
    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    rc = main(["export", "--model", str(model_dir), "--out", str(out), "--image-size", str(TINY_IMAGE_SIZE),
               "--attn-res", str(TINY_ATTN_RES), "--no-progress"])
    assert rc == 0
    return out
