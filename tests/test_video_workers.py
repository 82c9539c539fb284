"""Video workers: the plan chosen from the machine, one builder for threads and processes, BLAS limits,
``--max-latency`` drops and the command's defaults."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_video import FakeCamera, count_frames, scene, write_clip
from threadpoolctl import threadpool_info, threadpool_limits
from walkcut.runtime.segmenter import Segmenter
from walkcut.runtime.sources.pixels import PixelSource
from walkcut.runtime.sources.given import GivenSource
from walkcut.runtime.video import (
    ProcessSegmenter,
    SegmenterSpec,
    VideoInput,
    VideoPipeline,
    VideoReader,
    available_cores,
    build_video_segmenter,
    limit_blas_threads,
    plan_workers,
    worker_factory,
)

from walkcut.cli import main

# --- plan ----------------------------------------------------------------------------------------

def test_plan_uses_every_core_with_processes():
    assert plan_workers(cores=1) == plan_workers(cores=1, workers=None)
    one = plan_workers(cores=1)
    assert (one.workers, one.processes) == (1, False)
    two = plan_workers(cores=2)
    assert (two.workers, two.processes) == (2, True) and "2 cores" in two.reason
    # chosen automatically, the first worker runs in this process (one interpreter fewer to start)
    assert two.in_process == 1 and "1 worker in this process, 1 worker process" in two.reason
    assert plan_workers(cores=4).reason.endswith("1 worker in this process, 3 worker processes")
    assert plan_workers(cores=64).workers == 8  # capped: the parent's encode thread is the limit
    # asked for processes, or an engine stage in this process: every worker is a process
    assert plan_workers(cores=2, processes=True).in_process == 0
    assert plan_workers(cores=4, engine=True).in_process == 0
    assert plan_workers(cores=2, workers=1).in_process == 0


def test_plan_leaves_a_core_to_the_engine_stage():
    assert plan_workers(cores=4, engine=True).workers == 3
    assert plan_workers(cores=1, engine=True).workers == 1


def test_plan_overrides_and_validation():
    plan = plan_workers(cores=4, workers=3, processes=False)
    assert (plan.workers, plan.processes) == (3, False) and "--workers" in plan.reason
    assert plan_workers(cores=1, processes=True).processes
    with pytest.raises(ValueError, match="workers"):
        plan_workers(workers=0)
    with pytest.raises(ValueError, match="cores"):
        plan_workers(cores=0)
    assert available_cores() >= 1


# --- one builder ---------------------------------------------------------------------------------

def test_thread_and_process_workers_are_built_the_same_way():
    spec = SegmenterSpec(source=PixelSource(grid=8), label_side=128, upsample="nearest")
    seg = worker_factory(spec, processes=False)()
    assert isinstance(seg, Segmenter)
    assert seg.upsample == "nearest" and seg.max_label_side == 128
    # The pixel source cuts each frame alone (the partition `walkcut segment` gives); asked, it warm-starts.
    assert not seg.warm_start and build_video_segmenter(SegmenterSpec(source=PixelSource(grid=8),
                                                                      warm_start=True)).warm_start

    class ModelSpec:  # any other source spec (a model's): dense attention walks, warm by default
        cut_defaults: dict = {}

        def open(self):
            return PixelSource(grid=8)

    assert SegmenterSpec(source=ModelSpec()).warm and build_video_segmenter(SegmenterSpec(source=ModelSpec())).warm_start
    with pytest.raises(TypeError, match="warm_start"):
        SegmenterSpec(warm_start="yes")
    assert isinstance(seg.source, PixelSource) and seg.source.grid == 8
    make = worker_factory(spec, processes=True)
    # The process worker runs the very same builder with the very same spec inside its child.
    assert make.process.func is ProcessSegmenter
    assert make.process.args[0].func is build_video_segmenter and make.process.args[0].args == (spec,)
    # ... and a worker kept in this process (WorkerPlan.in_process) the same builder in a thread
    mixed = worker_factory(spec, processes=True, in_process=1)
    assert mixed.thread.func is build_video_segmenter and mixed.thread.args[0] is spec
    first = mixed.for_worker(0)
    assert isinstance(first, Segmenter) and first.upsample == "nearest" and first.max_label_side == 128


def test_thread_and_process_workers_give_the_same_labels():
    spec = SegmenterSpec(source=PixelSource(grid=8))
    frames = [cv2.cvtColor(scene(t), cv2.COLOR_BGR2RGB) for t in range(3)]
    in_thread = worker_factory(spec, processes=False)()
    in_process = worker_factory(spec, processes=True)()
    try:
        for rgb in frames:  # the same warm-start chain in both
            a = in_thread.set_image(rgb).segment(max_segments=4)
            b = in_process.set_image(rgb).segment(max_segments=4)
            np.testing.assert_array_equal(a.labels, b.labels)
    finally:
        in_process.close()


def test_thread_workers_share_an_opened_source():
    source = PixelSource(grid=8)
    make = worker_factory(SegmenterSpec(source=PixelSource(grid=8)), processes=False, source=source)
    assert make().source is source and make() is not make()


def test_given_source():
    src = GivenSource()
    with pytest.raises(RuntimeError, match="hand"):
        src.transition(np.zeros((4, 4, 3), np.uint8))
    tr = PixelSource(grid=4).transition(np.zeros((16, 16, 3), np.uint8))
    src.hand(tr, {"engine": 0.5})
    assert src.transition(None) is tr and src.last_timings == {"engine": 0.5}
    with pytest.raises(RuntimeError):
        src.transition(None)  # each transition serves one frame


def test_limit_blas_threads_sets_every_loaded_blas():
    import scipy.linalg  # noqa: F401 (loads scipy's own BLAS)

    with threadpool_limits(limits=2, user_api="blas"):  # restores the previous limits afterwards
        n = limit_blas_threads(1)
        blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
        assert n == len(blas) >= 1
        assert all(i["num_threads"] == 1 for i in blas)
    with pytest.raises(ValueError, match="n must be"):
        limit_blas_threads(0)


# --- --max-latency -------------------------------------------------------------------------------

class SlowPixels:
    """A Segmenter whose source takes 40 ms: slower than the fake camera's frames."""

    def __init__(self):
        self.inner = Segmenter(PixelSource(grid=8))

    def set_image(self, img):
        import time

        time.sleep(0.04)
        self.inner.set_image(img)
        return self

    def segment(self, **kw):
        return self.inner.segment(**kw)


def test_max_latency_works_on_the_newest_frame_and_reports_drops():
    reader = VideoReader(VideoInput(0, True, "camera 0"), capture=FakeCamera(40), retries=1)
    seen = []
    pipeline = VideoPipeline(SlowPixels, cut_options={"max_segments": 4}, max_latency=0.5)
    summary = pipeline.run(reader, on_frame=lambda i, ids, pic: seen.append(i))
    assert summary.frames_read == 40
    assert summary.dropped > 0 and summary.frames_written + summary.dropped == 40
    assert summary.drops["replaced by a newer frame"] > 0
    assert seen == sorted(seen) and len(seen) == summary.frames_written
    assert "replaced by a newer frame" in summary.lines()[0]


class PacedCamera(FakeCamera):
    """A camera delivering a frame every 10 ms, like a real one: frames keep arriving while both
    workers are busy (a burst of instant frames could all be replaced before any of them aged)."""

    def read(self):
        import time

        time.sleep(0.01)
        return super().read()


def test_max_latency_drops_frames_that_waited_too_long():
    reader = VideoReader(VideoInput(0, True, "camera 0"), capture=PacedCamera(20), retries=1)
    # Two workers and a tiny latency budget: a frame waiting while both are busy is too old.
    pipeline = VideoPipeline(SlowPixels, cut_options={"max_segments": 4}, workers=2, max_latency=1e-4)
    summary = pipeline.run(reader)
    assert summary.frames_written + summary.dropped == 20
    assert summary.drops["older than --max-latency"] > 0


def test_max_latency_is_validated():
    with pytest.raises(ValueError, match="max_latency"):
        VideoPipeline(SlowPixels, max_latency=0)


def test_max_latency_command(tmp_path, capsys):
    clip = write_clip(tmp_path / "c.mp4", n=8)
    assert main(["video", str(clip), "--out", str(tmp_path / "o.mp4"), "--max-latency", "-5"]) == 2
    assert not (tmp_path / "o.mp4").exists()
    assert "positive number of milliseconds" in capsys.readouterr().err
    # Threads and 5 s: on a loaded machine, worker processes that take over 1 s to start drop every
    # frame, and a video that writes nothing now fails (exit 1).
    rc = main(["video", str(clip), "--out", str(tmp_path / "o.mp4"), "--grid", "8", "--max-latency", "5000",
               "--threads"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "frames written of 8 read" in err


# --- command defaults ----------------------------------------------------------------------------

def test_video_command_defaults_use_the_machine(tmp_path, capsys, monkeypatch):
    from walkcut.runtime.video import workers

    monkeypatch.setattr(workers, "available_cores", lambda: 2)
    clip = write_clip(tmp_path / "c.mp4", n=5)
    assert main(["video", str(clip), "--out", str(tmp_path / "o.mp4"), "--grid", "8"]) == 0
    err = capsys.readouterr().err
    assert "workers: 2 cores: 1 worker in this process, 1 worker process" in err
    assert "5 frames written of 5 read, 0 dropped" in err
    assert count_frames(tmp_path / "o.mp4") == 5
    assert main(["video", str(clip), "--out", str(tmp_path / "o.mp4"), "--grid", "8", "--threads", "--overwrite"]) == 0
    assert "2 worker threads (set by --processes/--threads)" in capsys.readouterr().err


def test_processes_and_threads_flags_exclude_each_other(tmp_path, capsys):
    clip = write_clip(tmp_path / "c.mp4", n=2)
    assert main(["video", str(clip), "--out", str(tmp_path / "o.mp4"), "--threads", "--processes"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_pipeline_built_from_a_spec_matches_a_direct_run(tmp_path):
    """The pipeline with a worker from the spec gives the labels of a warm-started Segmenter."""
    clip = write_clip(tmp_path / "c.mp4", n=5)
    spec = SegmenterSpec(source=PixelSource(grid=8))
    got = []
    pipeline = VideoPipeline(worker_factory(spec, processes=False), cut_options={"max_segments": 4}, track=False)
    with VideoReader(VideoInput.parse(str(clip))) as reader:
        pipeline.run(reader, on_frame=lambda i, ids, pic: got.append(ids))
    direct = build_video_segmenter(spec)
    cap = cv2.VideoCapture(str(clip))
    for ids in got:
        _, frame = cap.read()
        want = direct.set_image(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).segment(max_segments=4).labels
        np.testing.assert_array_equal(ids, want)
    cap.release()
    assert len(got) == 5



def test_default_mixed_workers_write_the_labels_threads_write(tmp_path, capsys, monkeypatch):
    # 2 cores, chosen automatically: one worker in this process, one in a child; the label frames
    # are those of two thread workers (same Segmenter, same tracker, frames in order)
    from walkcut.runtime.video import workers

    monkeypatch.setattr(workers, "available_cores", lambda: 2)
    clip = write_clip(tmp_path / "c.mp4", n=8)
    for name, extra in (("mixed", []), ("threads", ["--threads"])):
        assert main(["video", str(clip), "--out", str(tmp_path / f"{name}.mp4"), "--grid", "8",
                     "--labels-dir", str(tmp_path / name), *extra]) == 0
    assert "1 worker in this process, 1 worker process" in capsys.readouterr().err
    mixed = sorted((tmp_path / "mixed").glob("*.png"))
    assert len(mixed) == 8
    for path in mixed:
        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / "threads" / path.name), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(a, b)
