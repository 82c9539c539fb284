"""Id tracking, the finalising writer, the video pipeline and `walkcut video` (small synthetic clips)."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from walkcut.runtime.segmenter import Segmenter
from walkcut.runtime.sources.pixels import PixelSource
from walkcut.runtime.video import (
    VideoInput,
    VideoInputError,
    VideoPipeline,
    VideoReader,
    VideoWriter,
    limit_blas_threads,
)
from walkcut.runtime.video.tracking import IdTracker, change_fraction

from walkcut.cli import main


def scene(t: int, h=72, w=96) -> np.ndarray:
    """BGR frame: three colour regions, the middle one sliding right by 2 px per frame."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (40, 160, 40)
    img[:, : w // 3] = (200, 40, 40)
    x0 = 20 + 2 * t
    img[20:52, x0 : x0 + 30] = (30, 30, 220)
    return img


def write_clip(path, n=12, **kw):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 72))
    for t in range(n):
        w.write(scene(t, **kw))
    w.release()
    return path


def count_frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


# --- tracking ------------------------------------------------------------------------------------

def test_tracker_undoes_a_relabelling():
    rng = np.random.default_rng(0)
    base = np.repeat(np.arange(4), 25).reshape(10, 10)
    tracker = IdTracker(match_size=None)
    first = tracker.update(base)
    perm = rng.permutation(4)
    second = tracker.update(perm[base])
    np.testing.assert_array_equal(first, second)


def test_tracker_gives_new_region_a_fresh_small_id():
    tracker = IdTracker(match_size=None)
    a = np.zeros((10, 10), int)
    a[:, 5:] = 1
    tracker.update(a)
    b = a.copy()
    b[:3, :3] = 2  # a new region appears
    b = np.array([1, 0, 2])[b]  # and the labels are renamed
    ids = tracker.update(b)
    assert ids[9, 0] == 0 and ids[9, 9] == 1 and ids[0, 0] == 2
    assert ids.max() < 4


def test_tracker_validates_options():
    with pytest.raises(ValueError, match="min_overlap"):
        IdTracker(min_overlap=2)
    with pytest.raises(ValueError, match="2-D"):
        IdTracker().update(np.zeros(5, int))


def test_change_fraction():
    a = np.zeros((4, 4), int)
    b = a.copy()
    b[0] = 1
    assert change_fraction(a, b) == 0.25


# --- inputs and writer ---------------------------------------------------------------------------

def test_video_input_parsing(tmp_path):
    assert VideoInput.parse("0") == VideoInput(0, True, "camera 0")
    assert VideoInput.parse("rtsp://cam/stream").live
    with pytest.raises(VideoInputError, match="no such file"):
        VideoInput.parse(str(tmp_path / "missing.mp4"))
    with pytest.raises(VideoInputError, match="directory"):
        VideoInput.parse(str(tmp_path))
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoInputError, match="empty"):
        VideoInput.parse(str(tmp_path / "empty.mp4"))
    clip = write_clip(tmp_path / "c.mp4", n=2)
    assert not VideoInput.parse(str(clip)).live


def test_writer_finalises_on_exception(tmp_path):
    out = tmp_path / "o.mp4"
    with pytest.raises(KeyboardInterrupt), VideoWriter(out, 10) as w:
        for t in range(5):
            w.write(scene(t))
        raise KeyboardInterrupt
    assert out.exists() and count_frames(out) == 5
    assert [p.name for p in tmp_path.iterdir()] == ["o.mp4"]  # no temporary left


def test_writer_with_no_frames_leaves_nothing(tmp_path):
    with VideoWriter(tmp_path / "o.mp4", 10):
        pass
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_a_frame_of_another_size(tmp_path):
    with VideoWriter(tmp_path / "o.mp4", 10) as w:
        w.write(scene(0))
        with pytest.raises(ValueError, match="differs"):
            w.write(np.zeros((10, 10, 3), np.uint8))


# --- pipeline ------------------------------------------------------------------------------------

def make_segmenter():
    return Segmenter(PixelSource(grid=8))


def run_pipeline(clip, **kw):
    seen = []
    pipeline = VideoPipeline(make_segmenter, cut_options={"max_segments": 8}, **{k: v for k, v in kw.items()
                                                                                 if k in ("workers", "track")})
    with VideoReader(VideoInput.parse(str(clip))) as reader:
        summary = pipeline.run(reader, kw.get("writer"), on_frame=lambda i, ids, pic: seen.append((i, ids)),
                               labels_dir=kw.get("labels_dir"))
    return summary, seen


def test_pipeline_file_mode_keeps_every_frame_in_order(tmp_path):
    clip = write_clip(tmp_path / "c.mp4", n=10)
    out = tmp_path / "out" / "o.mp4"
    with VideoWriter(out, 10) as writer:
        summary, seen = run_pipeline(clip, writer=writer, workers=2, labels_dir=tmp_path / "labels")
    assert summary.frames_read == summary.frames_written == 10 and summary.dropped == 0
    assert [i for i, _ in seen] == list(range(10))
    assert count_frames(out) == 10
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == [f"{i:06d}.png" for i in range(10)]
    labels = cv2.imread(str(tmp_path / "labels" / "000003.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16 and labels.shape == (72, 96)
    table = summary.percentiles()
    assert {"decode", "cuts", "upsample", "track", "encode"} <= set(table)
    assert "FPS" in summary.lines()[0]


def test_matching_makes_ids_more_stable(tmp_path):
    clip = write_clip(tmp_path / "c.mp4", n=10)
    _, tracked = run_pipeline(clip, track=True)
    _, raw = run_pipeline(clip, track=False)
    change = lambda seq: np.mean([change_fraction(a, b) for (_, a), (_, b) in itertools.pairwise(seq)])
    assert change(tracked) < change(raw)


class FakeCamera:
    """An OpenCV-like capture delivering ``n`` frames quickly, then failing (unplugged)."""

    def __init__(self, n):
        self.n, self.i = n, 0

    def isOpened(self):
        return True

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: 30.0, cv2.CAP_PROP_FRAME_WIDTH: 96, cv2.CAP_PROP_FRAME_HEIGHT: 72}.get(prop, 0)

    def read(self):
        if self.i >= self.n:
            return False, None
        self.i += 1
        return True, scene(self.i % 10)

    def release(self):
        pass


class SlowSegmenter:
    def __init__(self):
        self.inner = make_segmenter()

    def set_image(self, img):
        time.sleep(0.03)
        self.inner.set_image(img)
        return self

    def segment(self, **kw):
        return self.inner.segment(**kw)


def test_live_mode_drops_frames_and_a_vanished_camera_ends_cleanly(caplog):
    reader = VideoReader(VideoInput(0, True, "camera 0"), capture=FakeCamera(60), retries=2)
    pipeline = VideoPipeline(SlowSegmenter, cut_options={"max_segments": 4}, queue_size=1)
    summary = pipeline.run(reader)
    assert summary.frames_read == 60
    assert summary.dropped > 0
    assert summary.frames_written + summary.dropped == 60
    assert "disconnected" in summary.stop_reason
    assert any("stopped delivering frames" in r.message for r in caplog.records)


def test_file_mode_never_drops_with_a_slow_consumer(tmp_path):
    clip = write_clip(tmp_path / "c.mp4", n=8)
    with VideoReader(VideoInput.parse(str(clip))) as reader:
        summary = VideoPipeline(SlowSegmenter, cut_options={"max_segments": 4}, queue_size=1).run(reader)
    assert summary.dropped == 0 and summary.frames_written == 8


def test_interrupt_mid_stream_finalises_the_output(tmp_path):
    clip = write_clip(tmp_path / "c.mp4", n=12)
    out = tmp_path / "o.mp4"

    def interrupt(i, ids, pic):
        if i == 3:
            raise KeyboardInterrupt

    with VideoWriter(out, 10) as writer, VideoReader(VideoInput.parse(str(clip))) as reader:
        summary = VideoPipeline(make_segmenter, cut_options={"max_segments": 4}).run(reader, writer,
                                                                                      on_frame=interrupt)
    assert summary.stop_reason == "interrupted"
    assert count_frames(out) == 4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_segment_error_stops_with_a_message_and_a_playable_file(tmp_path):
    clip = write_clip(tmp_path / "c.mp4", n=6)

    class Failing(SlowSegmenter):
        calls = 0

        def set_image(self, img):
            Failing.calls += 1
            if Failing.calls == 3:
                raise ValueError("engine exploded")
            return super().set_image(img)

    out = tmp_path / "o.mp4"
    with VideoWriter(out, 10) as writer, VideoReader(VideoInput.parse(str(clip))) as reader:
        summary = VideoPipeline(Failing, cut_options={"max_segments": 4}).run(reader, writer)
    assert summary.stop_reason == "error: engine exploded"
    assert count_frames(out) == 2


def test_limit_blas_threads_rejects_zero():
    with pytest.raises(ValueError):
        limit_blas_threads(0)


# --- command -------------------------------------------------------------------------------------

def test_video_command_end_to_end(tmp_path, capsys):
    clip = write_clip(tmp_path / "c.mp4", n=6)
    rc = main(["video", str(clip), "--out", str(tmp_path / "o.mp4"), "--grid", "8", "--workers", "2"])
    assert rc == 0
    assert count_frames(tmp_path / "o.mp4") == 6
    err = capsys.readouterr().err
    assert "6 frames written of 6 read, 0 dropped" in err and "p50" in err


def test_video_command_with_engine(tmp_path, capsys):
    from test_backends import build_fake_model

    model = tmp_path / "fake.onnx"
    build_fake_model(model)
    clip = write_clip(tmp_path / "c.mp4", n=4)
    rc = main(["video", str(clip), "--out", str(tmp_path / "o.mp4"), "--engine", str(model)])
    assert rc == 0, capsys.readouterr().err
    assert count_frames(tmp_path / "o.mp4") == 4
    assert "engine" in capsys.readouterr().err


def test_video_command_bad_input(tmp_path, capsys):
    rc = main(["video", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o.mp4")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.mp4: no such file" in err[0]
    assert not (tmp_path / "o.mp4").exists()
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    assert main(["video", str(junk), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "cannot open" in capsys.readouterr().err


@pytest.mark.slow  # a child process that must start, write and be killed: ~6 s
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_finalises_the_output(tmp_path):
    clip = tmp_path / "long.mp4"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 72))
    for t in range(400):
        w.write(scene(t % 20))
    w.release()
    out, labels = tmp_path / "o.mp4", tmp_path / "labels"
    proc = subprocess.Popen([sys.executable, "-m", "walkcut", "video", str(clip), "--out", str(out),
                             "--labels-dir", str(labels), "--grid", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and (not labels.exists() or len(list(labels.glob("*.png"))) < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "terminated" in err
    n = count_frames(out)
    assert 3 <= n < 400
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_threads_are_not_left_behind(tmp_path):
    before = threading.active_count()
    clip = write_clip(tmp_path / "c.mp4", n=3)
    run_pipeline(clip)
    time.sleep(0.2)
    assert threading.active_count() <= before


def test_video_command_with_worker_processes(tmp_path, capsys):
    clip = write_clip(tmp_path / "c.mp4", n=6)
    rc = main(["video", str(clip), "--out", str(tmp_path / "o.mp4"), "--grid", "8", "--workers", "2",
               "--processes", "--labels-dir", str(tmp_path / "labels")])
    assert rc == 0, capsys.readouterr().err
    assert count_frames(tmp_path / "o.mp4") == 6
    assert len(list((tmp_path / "labels").glob("*.png"))) == 6  # and the folder's marker, .walkcut-frames.json
