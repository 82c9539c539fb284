"""Video segmentation: a pipelined run from a frame reader to a finalising writer.

Pipeline (threads, bounded queues, so memory stays flat on an endless stream)::

    reader --Frame--> [model stage] --> segment workers --FrameResult--> main thread --TrackedFrame--> encoder
    (decode,          (one engine       (source + cuts + upsample;     (reorder,           (draw, encode,
     to RGB once)      call in flight)   threads or processes)          track ids)          label PNGs)

Messages are the dataclasses of :mod:`walkcut.runtime.video.frames`. A frame is converted to RGB
once, by the reader, and back to BGR once, where its overlay is drawn for the writer. The reader and
the writer are chosen by the command from the input and output kinds (a video file, camera or stream
and :class:`~walkcut.runtime.video.io.VideoWriter`; a ROS bag, :mod:`walkcut.runtime.video.bags`);
everything between them is the same for every kind.

- File mode: the reader blocks when the frame queue is full; no frame is ever dropped.
- Live mode (camera, stream URL, or ``live=True``): the reader never waits; when the queue is full
  the oldest waiting frame is dropped (so latency stays bounded) and counted. With ``max_latency``
  the queue holds only the newest frame, and a frame older than ``max_latency`` when a worker (or
  the model stage) is free is dropped: work always starts on the newest frame.
- With an engine source the engine runs in its own stage ahead of the workers
  (:mod:`walkcut.runtime.video.overlap`); the workers then load no model.
- Counts that several threads update (frames read, drops) sit behind one lock
  (:class:`~walkcut.runtime.video.frames.RunCounters`).
- Drawing and encoding run in their own thread, off the path that orders and tracks frames (except
  with ``show``: windows belong to the main thread).
- Ids are made temporally consistent by :class:`~walkcut.runtime.video.tracking.IdTracker` in frame order.
- The writer is a context manager writing to a temporary name that is renamed on exit, whatever the
  exit (end of stream, error, Ctrl-C, SIGTERM turned into an exception by the command): the output
  is either a finalised, playable file or absent (no frames).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from walkcut.runtime.draw import overlay, palette
from walkcut.runtime.imageio import atomic_write_bytes, encode_png
from walkcut.runtime.video.io import Terminated, VideoReader, VideoWriter
from walkcut.runtime.video.frames import (
    END,
    FrameResult,
    ReorderBuffer,
    RunCounters,
    SourcedFrame,
    TrackedFrame,
    WorkerFailed,
    put_until_stopped,
)
from walkcut.runtime.video.overlap import ModelStage, ModelStats
from walkcut.runtime.video.tracking import IdTracker
from walkcut.runtime.video.workers import FrameSegmentation, ProcessSegmenter, limit_blas_threads

__all__ = ["FrameSegmentation", "ProcessSegmenter", "VideoPipeline", "VideoSummary", "limit_blas_threads"]

logger = logging.getLogger(__name__)

#: Colours for tracked ids (id k gets colour k mod 64): fixed, so an id keeps its colour.
ID_COLORS = palette(64)
#: Timing samples kept per stage (a ring buffer: percentiles over the most recent frames).
MAX_SAMPLES = 10_000
#: Drop reasons, in the order the summary lists them.
DROP_REASONS = ("replaced by a newer frame", "older than --max-latency", "overtaken")
#: Frames named one by one in the summary before "and N more".
NAMED_FRAMES = 10
#: Stages timed per frame, in the order the summary lists them.
STAGES = ("decode", "source", "preprocess", "engine", "cuts", "upsample", "track", "encode", "latency")


@dataclass
class VideoSummary:
    """What a run did: frame counts, throughput and per-stage latency percentiles (ms)."""

    frames_read: int = 0
    frames_written: int = 0
    dropped: int = 0
    seconds: float = 0.0
    stop_reason: str = "end of stream"
    output: str | None = None
    stages: dict = field(default_factory=dict)  # name -> deque of seconds
    drops: dict = field(default_factory=dict)  # why frames were dropped -> count
    workers: str = ""  # how the workers were chosen
    error: BaseException | None = None  # what stopped the run, when an exception did
    engine: ModelStats | None = None
    failed: list = field(default_factory=list)  # (name, reason) of frames the reader could not decode
    unwritten: list = field(default_factory=list)  # names of named (bag) frames read but not written

    @property
    def fps(self) -> float:
        return self.frames_written / self.seconds if self.seconds > 0 else 0.0

    def percentiles(self) -> dict[str, tuple[float, float]]:
        """``{stage: (p50_ms, p90_ms)}``."""
        return {k: (1e3 * float(np.percentile(v, 50)), 1e3 * float(np.percentile(v, 90)))
                for k, v in self.stages.items() if len(v)}

    def lines(self) -> list[str]:
        why = ", ".join(f"{n} {k}" for k, n in self.drops.items() if n)
        out = [f"{self.frames_written} frames written of {self.frames_read} read, {self.dropped} dropped"
               + (f" ({why})" if why else "")
               + (f", {len(self.failed)} failed" if self.failed else "")
               + f", {self.seconds:.1f} s, {self.fps:.1f} FPS ({self.stop_reason})"
               + (f" -> {self.output}" if self.output else "")]
        if self.failed:
            out.append("failed (not decoded, skipped): " + _named([f"{n} ({why})" for n, why in self.failed]))
        if self.unwritten:
            out.append("read, not written: " + _named(self.unwritten))
        table = self.percentiles()
        if table:
            out.append("latency ms (p50 / p90): " + ", ".join(f"{k} {a:.1f}/{b:.1f}" for k, (a, b) in table.items()))
        if self.engine is not None:
            out.append(self.engine.line())
        if self.workers:
            out.append(f"workers: {self.workers}")
        return out


def _named(names: list[str]) -> str:
    more = len(names) - NAMED_FRAMES
    return ", ".join(names[:NAMED_FRAMES]) + (f" and {more} more" if more > 0 else "")


class VideoPipeline:
    """Segment a video stream frame by frame with consistent ids.

    Parameters
    ----------
    make_segmenter : callable returning a Segmenter
        Called once per worker (Segmenter keeps per-image state; the source may be shared). Build it
        with :func:`~walkcut.runtime.video.workers.worker_factory` so every worker kind gets the same
        options.
    cut_options : dict
        Passed to ``Segmenter.segment``.
    workers : int, default 1
        Segment workers (see :func:`~walkcut.runtime.video.workers.plan_workers` for a choice made
        from the machine).
    queue_size : int, default 4
        Bound of each queue.
    track : bool, default True
        Match ids across frames (:class:`IdTracker`); ``False`` for raw per-frame ids.
    tracker : IdTracker, optional
        A configured tracker (``None``: default matching).
    engine : object with ``transition(image_rgb)``, optional
        An engine source run in its own stage ahead of the workers (:class:`ModelStage`, one call in
        flight); the workers' Segmenters must then take handed-over transitions
        (``SegmenterSpec(handed=True)``: a :class:`~walkcut.runtime.sources.given.GivenSource`).
    max_latency : float, optional
        Seconds. In live mode, keep only the newest frame waiting and drop a frame older than this
        when work on it would start. Ignored for files (they never drop frames).
    """

    def __init__(self, make_segmenter, *, cut_options: dict | None = None, workers: int = 1, queue_size: int = 4,
                 track: bool = True, tracker: IdTracker | None = None, engine=None,
                 max_latency: float | None = None) -> None:
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, (int, np.integer)) or queue_size < 1:
            raise ValueError(f"queue_size must be an integer >= 1, got {queue_size!r}")
        if max_latency is not None and not (np.isfinite(max_latency) and max_latency > 0):
            raise ValueError(f"max_latency must be a positive number of seconds, got {max_latency!r}")
        self.make_segmenter = make_segmenter
        self.cut_options = dict(cut_options or {})
        self.workers = int(workers)
        self.queue_size = int(queue_size)
        self.tracker = (tracker or IdTracker()) if track else None
        self.engine = None if engine is None else (engine if isinstance(engine, ModelStage) else ModelStage(engine))
        self.max_latency = None if max_latency is None else float(max_latency)
        self.stop = threading.Event()
        self.describe_workers = ""  # set by whoever chose the workers; shown in the summary

    # --- the run ---------------------------------------------------------------------------------
    def run(self, reader: VideoReader, writer: VideoWriter | None = None, *, live: bool | None = None,
            labels_dir=None, show: bool = False, on_frame=None, max_frames: int | None = None,
            sinks=()) -> VideoSummary:
        """Process ``reader`` to the end (or until stopped) and return the summary.

        ``reader`` and ``writer`` are a video file's, camera's or stream's (:mod:`.io`) or a ROS bag's
        (:mod:`.bags`): the contract is in :mod:`walkcut.runtime.video.io`'s docstring.
        ``writer`` must be entered already (``with VideoWriter(...) as w``); its exit finalises the
        file whatever happens here. ``on_frame(index, ids, picture_bgr)`` is called for each frame in
        order (from the encoder thread; used by benchmarks and tests; what it raises stops the run as
        if raised here). Each of ``sinks`` (e.g. a :class:`~walkcut.runtime.rerun_log.RerunLog`) gets
        ``sink.write_frame(tracked, picture_bgr)``, a
        :class:`~walkcut.runtime.video.frames.TrackedFrame` with its timings, for each frame in order,
        from the same thread, before ``on_frame``. KeyboardInterrupt (and the command's SIGTERM) stop
        the run cleanly: the summary's ``stop_reason`` says so and the exception is not re-raised.
        """
        live = reader.source.live if live is None else live
        self.stop.clear()
        if labels_dir is not None:
            Path(labels_dir).mkdir(parents=True, exist_ok=True)
        run = _Run(self, reader, writer, live=live, labels_dir=labels_dir, show=show, on_frame=on_frame,
                   max_frames=max_frames, sinks=sinks)
        run.start()
        try:
            self._collect(run)
            run.finish_encoding()
        except KeyboardInterrupt as exc:
            run.summary.stop_reason = "terminated" if isinstance(exc, Terminated) else "interrupted"
        except Exception as exc:
            run.summary.stop_reason = f"error: {exc}"
            run.summary.error = exc
            logger.debug("video run failed", exc_info=True)
            run.flush_encoder_after_error()
        finally:
            self.stop.set()
            run.close()
        return run.summary

    def _collect(self, run: _Run) -> None:
        """Main thread: results from the workers, back in frame order, tracked, handed on."""
        finished = 0
        while finished < self.workers and not self.stop.is_set():
            try:
                item = run.results.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is END:
                finished += 1
            elif isinstance(item, WorkerFailed):
                raise item.error
            else:
                run.order.add(item)
            # Live indices have gaps (drops): emit what is there; a file waits for its next frame
            # while workers still run.
            for result in run.order.ready(wait_for_gaps=not run.live and finished < self.workers):
                if not self._deliver(result, run):
                    break

    def _deliver(self, result: FrameResult, run: _Run) -> bool:
        """Track one result in frame order and hand it to the encoder (or the window); False: stop."""
        if result.error is not None:
            raise result.error
        for stage, seconds in result.segmentation.timings.items():
            if stage in run.stages:
                run.stages[stage].append(seconds)
        t0 = time.perf_counter()
        labels = result.segmentation.labels
        ids = self.tracker.update(labels) if self.tracker is not None else labels
        t_track = time.perf_counter() - t0
        run.stages["track"].append(t_track)
        tracked = TrackedFrame(result.frame, ids, {**result.segmentation.timings, "track": t_track})
        if run.encoder is not None:
            return put_until_stopped(run.encoded, tracked, self.stop)
        return run.show(self._emit(tracked, run))

    # --- stage threads -------------------------------------------------------------------------
    def _read(self, run: _Run, frames: queue.Queue, consumers: int) -> None:
        """Reader thread: decode (to RGB, once, in the reader), queue; live input replaces waiting frames."""
        reader, counters = run.reader, run.counters
        newest_only = run.live and self.max_latency is not None
        try:
            t = time.perf_counter()
            for frame in run.reader.frames():  # RGB, converted once by the reader
                if run.max_frames is not None and counters.read >= run.max_frames:
                    break
                counters.count_read(frame)
                if self.stop.is_set():
                    break
                run.stages["decode"].append(frame.t_read - t)
                if newest_only:  # only the newest frame waits: work never starts on an old one
                    self._discard_waiting(frames, counters)
                if run.live:
                    while True:
                        try:
                            frames.put_nowait(frame)
                            break
                        except queue.Full:  # drop the oldest waiting frame: keep latency low
                            self._discard_waiting(frames, counters, at_most=1)
                elif not put_until_stopped(frames, frame, self.stop):
                    break
                t = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 (handed to the main thread)
            counters.error = f"reading {reader.source.label} failed: {exc}"
        finally:
            counters.lost = reader.lost
            for _ in range(consumers):
                put_until_stopped(frames, END, self.stop)

    @staticmethod
    def _discard_waiting(frames: queue.Queue, counters: RunCounters, at_most: int | None = None) -> None:
        n = 0
        while at_most is None or n < at_most:
            try:
                frames.get_nowait()
            except queue.Empty:
                return
            counters.drop("replaced by a newer frame")
            n += 1

    def _segment(self, run: _Run, frames: queue.Queue, max_age: float | None, index: int = 0) -> None:
        """Worker thread ``index``: build a Segmenter, then segment frames until the end of the stream."""
        try:
            make = self.make_segmenter
            segmenter = make.for_worker(index) if hasattr(make, "for_worker") else make()
        except Exception as exc:  # noqa: BLE001 (handed to the main thread)
            put_until_stopped(run.results, WorkerFailed(exc), self.stop)
            put_until_stopped(run.results, END, self.stop)
            return
        try:
            self._segment_loop(segmenter, run, frames, max_age)
        finally:
            if hasattr(segmenter, "close"):
                segmenter.close()

    def _segment_loop(self, segmenter, run: _Run, frames: queue.Queue, max_age: float | None) -> None:
        while not self.stop.is_set():
            try:
                item = frames.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is END:
                put_until_stopped(run.results, END, self.stop)
                return
            frame = item.frame if isinstance(item, SourcedFrame) else item
            if max_age is not None and time.perf_counter() - frame.t_read > max_age:
                run.counters.drop("older than --max-latency")
                continue
            try:
                if isinstance(item, SourcedFrame):  # from the model stage: its transition, or its error
                    if item.error is not None:
                        raise item.error
                    segmenter.source.hand(item.transition, item.timings)
                seg = segmenter.set_image(frame.rgb).segment(**self.cut_options)
                result = FrameResult(frame, seg)
            except Exception as exc:  # noqa: BLE001 (handed to the main thread, in frame order)
                result = FrameResult(frame, error=exc)
            if not put_until_stopped(run.results, result, self.stop):
                return

    def _emit(self, tracked: TrackedFrame, run: _Run) -> np.ndarray:
        """Draw, encode and store one tracked frame; returns the picture (BGR)."""
        frame, ids = tracked.frame, tracked.ids
        t1 = time.perf_counter()
        # The one conversion back to BGR, for the writer and the window.
        picture = cv2.cvtColor(overlay(frame.rgb, ids, colors=ID_COLORS), cv2.COLOR_RGB2BGR)
        if run.writer is not None:
            run.writer.write_frame(tracked, picture)
        if run.labels_dir is not None:
            atomic_write_bytes(Path(run.labels_dir) / f"{frame.index:06d}.png",
                               encode_png(np.minimum(ids, 65535).astype(np.uint16), rgb=False))
        t2 = time.perf_counter()
        run.stages["encode"].append(t2 - t1)
        run.stages["latency"].append(t2 - frame.t_read)
        run.summary.frames_written += 1
        run.counters.count_written(frame)
        if run.sinks:
            tracked.timings.update(encode=t2 - t1, latency=t2 - frame.t_read)
            for sink in run.sinks:
                sink.write_frame(tracked, picture)
        if run.on_frame is not None:
            run.on_frame(frame.index, ids, picture)
        return picture

    def _encode(self, run: _Run) -> None:
        """Encoder thread: frames in order from ``run.encoded`` until END; errors go to ``run``."""
        try:
            while not self.stop.is_set():
                try:
                    item = run.encoded.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is END:
                    return
                self._emit(item, run)
        except BaseException as exc:  # noqa: BLE001 (re-raised by the main thread, KeyboardInterrupt too)
            run.encoder_error = exc
            self.stop.set()


class _Run:
    """One :meth:`VideoPipeline.run`: its queues, threads, counters, timings and summary.

    Threads: ``walkcut-decode`` (:meth:`VideoPipeline._read`), ``walkcut-engine`` (the model stage,
    with an engine), ``walkcut-segment-N`` (:meth:`VideoPipeline._segment`) and, unless the run
    shows a window, ``walkcut-encode`` (:meth:`VideoPipeline._encode`); the main thread collects.
    """

    def __init__(self, pipeline: VideoPipeline, reader: VideoReader, writer: VideoWriter | None, *, live: bool,
                 labels_dir, show: bool, on_frame, max_frames: int | None, sinks=()) -> None:
        self.pipeline, self.reader, self.writer = pipeline, reader, writer
        self.sinks = tuple(sinks)
        self.live, self.labels_dir, self.on_frame, self.max_frames = live, labels_dir, on_frame, max_frames
        self.stop = pipeline.stop
        self.stages = {k: collections.deque(maxlen=MAX_SAMPLES) for k in STAGES}
        self.counters = RunCounters(DROP_REASONS)
        self.order = ReorderBuffer()
        self.summary = VideoSummary(stages=self.stages, output=str(writer.path) if writer else None,
                                    workers=pipeline.describe_workers)
        size = pipeline.queue_size
        frames: queue.Queue = queue.Queue(maxsize=1 if live and pipeline.max_latency is not None else size)
        self.results: queue.Queue = queue.Queue(maxsize=size)
        self.encoded: queue.Queue = queue.Queue(maxsize=size)
        self.encoder_error: BaseException | None = None
        self._show = show
        self._window_t, self._window_n, self._fps = 0.0, 0, 0.0
        self.threads = self._threads(frames)
        self.encoder = None if show else threading.Thread(target=pipeline._encode, args=(self,),
                                                          name="walkcut-encode", daemon=True)
        if self.encoder is not None:
            self.threads.append(self.encoder)
        self.t_start = 0.0

    def _threads(self, frames: queue.Queue) -> list[threading.Thread]:
        p = self.pipeline
        max_age = p.max_latency if self.live else None
        model = p.engine
        work = frames
        threads = [threading.Thread(target=p._read, args=(self, frames, 1 if model is not None else p.workers),
                                    name="walkcut-decode", daemon=True)]
        if model is not None:
            model.stats = ModelStats()
            self.summary.engine = model.stats
            work = queue.Queue(maxsize=p.queue_size)  # staged: frames with their transitions
            threads.append(threading.Thread(target=model.run, args=(frames, work, self.stop),
                                            kwargs={"consumers": p.workers, "max_age": max_age},
                                            name="walkcut-engine", daemon=True))
            max_age = None  # the model stage already dropped the stale frames
        threads += [threading.Thread(target=p._segment, args=(self, work, max_age, i), name=f"walkcut-segment-{i}",
                                     daemon=True) for i in range(p.workers)]
        return threads

    def start(self) -> None:
        self.t_start = self._window_t = time.perf_counter()
        for t in self.threads:
            t.start()

    def show(self, picture: np.ndarray) -> bool:
        """Show a picture with the frame rate in the window; False when the window asked to stop."""
        self._window_n += 1
        now = time.perf_counter()
        if now - self._window_t >= 1.0:
            self._fps, self._window_t, self._window_n = self._window_n / (now - self._window_t), now, 0
        cv2.putText(picture, f"{self._fps:.1f} FPS", (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2,
                    cv2.LINE_AA)
        cv2.imshow("walkcut", picture)
        if cv2.waitKey(1) & 0xFF in (27, ord("q")):
            self.summary.stop_reason = "stopped from the window"
            self.stop.set()
            return False
        return True

    def finish_encoding(self) -> None:
        """End of stream: let the encoder write every frame handed to it; raise what it raised."""
        if self.encoder is not None and not self.stop.is_set():
            put_until_stopped(self.encoded, END, self.stop)
            while self.encoder.is_alive():
                self.encoder.join(timeout=0.1)
        if self.encoder_error is not None:
            raise self.encoder_error

    def flush_encoder_after_error(self) -> None:
        """The frames already handed to the encoder come before the failure in frame order and are
        complete: write them before stopping, so the file ends at the last good frame."""
        if self.encoder is None or not self.encoder.is_alive() or self.encoder_error is not None:
            return
        try:
            self.encoded.put(END, timeout=10.0)
            self.encoder.join(timeout=30.0)
        except queue.Full:
            logger.warning("the encoder did not drain after the error; later frames are not written")

    def close(self) -> None:
        """Join the threads (``stop`` is set) and complete the summary."""
        for t in self.threads:
            t.join(timeout=5.0)
        summary, counters = self.summary, self.counters
        summary.seconds = time.perf_counter() - self.t_start
        summary.frames_read = counters.read
        counters.drop("overtaken", self.order.overtaken)
        if self.pipeline.engine is not None:
            counters.drop("older than --max-latency", self.pipeline.engine.stats.stale)
        summary.drops = counters.drops()
        summary.dropped = sum(summary.drops.values())
        summary.failed = list(self.reader.failed)
        summary.unwritten = counters.unwritten()
        if counters.error and summary.stop_reason == "end of stream":
            summary.stop_reason = f"error: {counters.error}"
        elif counters.lost and summary.stop_reason == "end of stream":
            summary.stop_reason = f"{self.reader.source.label} disconnected"
        if self._show:
            cv2.destroyAllWindows()
