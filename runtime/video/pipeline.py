"""Video segmentation: a pipelined run from a frame reader to a finalising writer.

Pipeline (threads, bounded queues, so memory stays flat on an endless stream)::

    reader --frames--> [engine stage] --> segment workers --results--> main thread --> encoder thread
    (decode)           (one engine       (source + cuts + upsample;   (reorder,       (draw, encode,
                        call in flight)   threads or processes)        track ids)      label PNGs)

- File mode: the reader blocks when the frame queue is full; no frame is ever dropped.
- Live mode (camera, stream URL, or ``live=True``): the reader never waits; when the queue is full
  the oldest waiting frame is dropped (so latency stays bounded) and counted. With ``max_latency``
  the queue holds only the newest frame, and a frame older than ``max_latency`` when a worker (or
  the engine stage) is free is dropped: work always starts on the newest frame.
- With an engine source the engine runs in its own stage ahead of the workers
  (:mod:`walkcut.runtime.video.overlap`); the workers then load no model.
- Drawing and encoding run in their own thread, off the path that orders and tracks frames (except
  with ``show``: windows belong to the main thread).
- Ids are made temporally consistent by :class:`~walkcut.runtime.tracking.IdTracker` in frame order.
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
from walkcut.runtime.video.overlap import EngineStage, EngineStats, _put
from walkcut.runtime.video.tracking import IdTracker
from walkcut.runtime.video.workers import FrameSegmentation, ProcessSegmenter, limit_blas_threads

__all__ = ["FrameSegmentation", "ProcessSegmenter", "VideoPipeline", "VideoSummary", "limit_blas_threads"]

logger = logging.getLogger(__name__)

#: Colours for tracked ids (id k gets colour k mod 64): fixed, so an id keeps its colour.
ID_COLORS = palette(64)
#: Timing samples kept per stage (a ring buffer: percentiles over the most recent frames).
MAX_SAMPLES = 10_000
_SENTINEL = object()
#: Drop reasons, in the order the summary lists them.
DROP_REASONS = ("replaced by a newer frame", "older than --max-latency", "overtaken")


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
    engine: EngineStats | None = None

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
               + f", {self.seconds:.1f} s, {self.fps:.1f} FPS ({self.stop_reason})"
               + (f" -> {self.output}" if self.output else "")]
        table = self.percentiles()
        if table:
            out.append("latency ms (p50 / p90): " + ", ".join(f"{k} {a:.1f}/{b:.1f}" for k, (a, b) in table.items()))
        if self.engine is not None:
            out.append(self.engine.line())
        if self.workers:
            out.append(f"workers: {self.workers}")
        return out


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
        An engine source run in its own stage ahead of the workers (one call in flight); the
        workers' Segmenters must then take handed-over transitions
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
        self.engine = None if engine is None else (engine if isinstance(engine, EngineStage) else EngineStage(engine))
        self.max_latency = None if max_latency is None else float(max_latency)
        self.stop = threading.Event()
        self.describe_workers = ""  # set by whoever chose the workers; shown in the summary

    # --- stage threads -------------------------------------------------------------------------
    def _read(self, reader: VideoReader, frames: queue.Queue, live: bool, counts: dict, stages: dict,
              max_frames: int | None, consumers: int) -> None:
        newest_only = live and self.max_latency is not None
        try:
            t = time.perf_counter()
            for index, frame in reader.frames():
                now = time.perf_counter()
                stages["decode"].append(now - t)
                counts["read"] += 1
                if self.stop.is_set() or (max_frames is not None and counts["read"] > max_frames):
                    counts["read"] -= 0 if self.stop.is_set() else 1
                    break
                if newest_only:  # only the newest frame waits: work never starts on an old one
                    while True:
                        try:
                            frames.get_nowait()
                            counts["drops"]["replaced by a newer frame"] += 1
                        except queue.Empty:
                            break
                if live:
                    while True:
                        try:
                            frames.put_nowait((index, frame, now))
                            break
                        except queue.Full:
                            try:  # drop the oldest waiting frame: keep latency low
                                frames.get_nowait()
                                counts["drops"]["replaced by a newer frame"] += 1
                            except queue.Empty:
                                pass
                elif not _put(frames, (index, frame, now), self.stop):
                    break
                t = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 (handed to the main thread)
            counts["error"] = f"reading {reader.source.label} failed: {exc}"
        finally:
            counts["lost"] = reader.lost
            for _ in range(consumers):
                _put(frames, _SENTINEL, self.stop)

    def _segment(self, frames: queue.Queue, results: queue.Queue, max_age: float | None, counts: dict) -> None:
        try:
            segmenter = self.make_segmenter()
        except Exception as exc:  # noqa: BLE001 (handed to the main thread)
            _put(results, (-1, None, 0.0, None, exc), self.stop)
            _put(results, _SENTINEL, self.stop)
            return
        try:
            self._segment_loop(segmenter, frames, results, max_age, counts)
        finally:
            if hasattr(segmenter, "close"):
                segmenter.close()

    def _segment_loop(self, segmenter, frames: queue.Queue, results: queue.Queue, max_age: float | None,
                      counts: dict) -> None:
        while not self.stop.is_set():
            try:
                item = frames.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _SENTINEL:
                _put(results, _SENTINEL, self.stop)
                return
            index, frame, t_read = item[:3]
            if max_age is not None and time.perf_counter() - t_read > max_age:
                counts["drops"]["older than --max-latency"] += 1
                continue
            try:
                if len(item) == 4:  # from the engine stage: the transition, or the engine's error
                    if isinstance(item[3], BaseException):
                        raise item[3]
                    segmenter.source.hand(*item[3])
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                seg = segmenter.set_image(rgb).segment(**self.cut_options)
                out = (index, frame, t_read, seg, None)
            except Exception as exc:  # noqa: BLE001 (handed to the main thread)
                out = (index, frame, t_read, None, exc)
            if not _put(results, out, self.stop):
                return

    def _emit(self, item, writer, labels_dir, on_frame, stages, summary) -> np.ndarray:
        """Draw, encode and store one tracked frame; returns the picture (BGR)."""
        index, frame, ids, t_read = item
        t1 = time.perf_counter()
        picture = cv2.cvtColor(overlay(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), ids, colors=ID_COLORS),
                               cv2.COLOR_RGB2BGR)
        if writer is not None:
            writer.write(picture)
        if labels_dir is not None:
            atomic_write_bytes(Path(labels_dir) / f"{index:06d}.png",
                               encode_png(np.minimum(ids, 65535).astype(np.uint16), rgb=False))
        t2 = time.perf_counter()
        stages["encode"].append(t2 - t1)
        stages["latency"].append(t2 - t_read)
        summary.frames_written += 1
        if on_frame is not None:
            on_frame(index, ids, picture)
        return picture

    def _encode(self, encoded: queue.Queue, writer, labels_dir, on_frame, stages, summary, box: dict) -> None:
        """Encoder thread: frames in order from ``encoded`` until the sentinel; errors go to ``box``."""
        try:
            while not self.stop.is_set():
                try:
                    item = encoded.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _SENTINEL:
                    return
                self._emit(item, writer, labels_dir, on_frame, stages, summary)
        except BaseException as exc:  # noqa: BLE001 (re-raised by the main thread, KeyboardInterrupt too)
            box["error"] = exc
            self.stop.set()

    # --- main loop -----------------------------------------------------------------------------
    def run(self, reader: VideoReader, writer: VideoWriter | None = None, *, live: bool | None = None,
            labels_dir=None, show: bool = False, on_frame=None, max_frames: int | None = None) -> VideoSummary:
        """Process ``reader`` to the end (or until stopped) and return the summary.

        ``writer`` must be entered already (``with VideoWriter(...) as w``); its exit finalises the
        file whatever happens here. ``on_frame(index, ids, picture_bgr)`` is called for each frame in
        order (from the encoder thread; used by benchmarks and tests; what it raises stops the run as
        if raised here). KeyboardInterrupt (and the command's SIGTERM) stop the run cleanly: the
        summary's ``stop_reason`` says so and the exception is not re-raised.
        """
        live = reader.source.live if live is None else live
        self.stop.clear()
        stages = {k: collections.deque(maxlen=MAX_SAMPLES)
                  for k in ("decode", "source", "preprocess", "engine", "cuts", "upsample", "track", "encode",
                            "latency")}
        counts = {"read": 0, "drops": dict.fromkeys(DROP_REASONS, 0), "error": None, "lost": False}
        frames: queue.Queue = queue.Queue(maxsize=1 if live and self.max_latency is not None else self.queue_size)
        results: queue.Queue = queue.Queue(maxsize=self.queue_size)
        encoded: queue.Queue = queue.Queue(maxsize=self.queue_size)
        summary = VideoSummary(stages=stages, output=str(writer.path) if writer else None, drops=counts["drops"],
                               workers=self.describe_workers)
        if labels_dir is not None:
            Path(labels_dir).mkdir(parents=True, exist_ok=True)
        max_age = self.max_latency if live else None
        engine = self.engine
        if engine is not None:
            engine.stats = EngineStats()
            summary.engine = engine.stats
            staged: queue.Queue = queue.Queue(maxsize=self.queue_size)
        threads = [threading.Thread(target=self._read, name="walkcut-decode", daemon=True,
                                    args=(reader, frames, live, counts, stages, max_frames,
                                          1 if engine is not None else self.workers))]
        if engine is not None:
            threads.append(threading.Thread(target=engine.run, args=(frames, staged, self.stop),
                                            kwargs={"sentinel": _SENTINEL, "consumers": self.workers,
                                                    "max_age": max_age},
                                            name="walkcut-engine", daemon=True))
        work_in = staged if engine is not None else frames
        threads += [threading.Thread(target=self._segment, name=f"walkcut-segment-{i}", daemon=True,
                                     args=(work_in, results, None if engine is not None else max_age, counts))
                    for i in range(self.workers)]
        box: dict = {}
        encoder = None
        if not show:
            encoder = threading.Thread(target=self._encode, name="walkcut-encode", daemon=True,
                                       args=(encoded, writer, labels_dir, on_frame, stages, summary, box))
            threads.append(encoder)
        t_start = time.perf_counter()
        for t in threads:
            t.start()
        pending: dict[int, tuple] = {}
        next_index, finished, window_t, window_n, shown_fps = 0, 0, t_start, 0, 0.0
        try:
            while finished < self.workers and not self.stop.is_set():
                try:
                    item = results.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _SENTINEL:
                    finished += 1
                else:
                    pending[item[0]] = item
                # Emit in frame order. Live indices have gaps (drops): emit what is there; a frame
                # overtaken by a later one (several workers) is dropped rather than shown late.
                while pending:
                    index = min(pending)
                    if pending[index][4] is not None and index < next_index:
                        raise pending[index][4]  # a worker failed to start
                    if index < next_index:
                        pending.pop(index)
                        counts["drops"]["overtaken"] += 1
                        continue
                    if index != next_index and not live and finished < self.workers:
                        break
                    _, frame, t_read, seg, exc = pending.pop(index)
                    next_index = index + 1
                    if exc is not None:
                        raise exc
                    for k, v in seg.timings.items():
                        if k in stages:
                            stages[k].append(v)
                    t0 = time.perf_counter()
                    ids = self.tracker.update(seg.labels) if self.tracker is not None else seg.labels
                    stages["track"].append(time.perf_counter() - t0)
                    if encoder is not None:
                        if not _put(encoded, (index, frame, ids, t_read), self.stop):
                            break
                        continue
                    picture = self._emit((index, frame, ids, t_read), writer, labels_dir, on_frame, stages, summary)
                    window_n += 1
                    now = time.perf_counter()
                    if now - window_t >= 1.0:
                        shown_fps, window_t, window_n = window_n / (now - window_t), now, 0
                    cv2.putText(picture, f"{shown_fps:.1f} FPS", (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                                (255, 255, 255), 2, cv2.LINE_AA)
                    cv2.imshow("walkcut", picture)
                    if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                        summary.stop_reason = "stopped from the window"
                        self.stop.set()
                        break
            if encoder is not None and not self.stop.is_set():
                # End of stream: let the encoder finish every frame handed to it.
                _put(encoded, _SENTINEL, self.stop)
                while encoder.is_alive():
                    encoder.join(timeout=0.1)
            if "error" in box:
                raise box["error"]
        except KeyboardInterrupt as exc:
            summary.stop_reason = "terminated" if isinstance(exc, Terminated) else "interrupted"
        except Exception as exc:
            summary.stop_reason = f"error: {exc}"
            logger.debug("video run failed", exc_info=True)
            if encoder is not None and encoder.is_alive() and "error" not in box:
                # The frames already handed to the encoder come before the failure in frame order
                # and are complete: write them before stopping, so the file ends at the last good frame.
                try:
                    encoded.put(_SENTINEL, timeout=10.0)
                    encoder.join(timeout=30.0)
                except queue.Full:
                    logger.warning("the encoder did not drain after the error; later frames are not written")
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=5.0)
            summary.seconds = time.perf_counter() - t_start
            summary.frames_read = counts["read"]
            if engine is not None:
                counts["drops"]["older than --max-latency"] += engine.stats.stale
            summary.dropped = sum(counts["drops"].values())
            if counts["error"] and summary.stop_reason == "end of stream":
                summary.stop_reason = f"error: {counts['error']}"
            elif counts["lost"] and summary.stop_reason == "end of stream":
                summary.stop_reason = f"{reader.source.label} disconnected"
            if show:
                cv2.destroyAllWindows()
        return summary
