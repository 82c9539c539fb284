"""Video segmentation: a frame reader, a finalising writer, and a pipelined run over them.

Pipeline (threads, bounded queues, so memory stays flat on an endless stream)::

    reader thread --frames--> segment workers (source + cuts + upsample) --results--> main thread
    (decode)       queue(q)   (``workers`` threads, each its own Segmenter) queue(q)  (reorder, ids,
                                                                                      draw, encode)

- File mode: the reader blocks when the frame queue is full; no frame is ever dropped.
- Live mode (camera, stream URL, or ``live=True``): the reader never waits; when the queue is full
  the oldest waiting frame is dropped (so latency stays bounded) and counted.
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
from walkcut.runtime.video.tracking import IdTracker

logger = logging.getLogger(__name__)


logger = logging.getLogger(__name__)

#: Colours for tracked ids (id k gets colour k mod 64): fixed, so an id keeps its colour.
ID_COLORS = palette(64)
#: Timing samples kept per stage (a ring buffer: percentiles over the most recent frames).
MAX_SAMPLES = 10_000
_SENTINEL = object()


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

    @property
    def fps(self) -> float:
        return self.frames_written / self.seconds if self.seconds > 0 else 0.0

    def percentiles(self) -> dict[str, tuple[float, float]]:
        """``{stage: (p50_ms, p90_ms)}``."""
        return {k: (1e3 * float(np.percentile(v, 50)), 1e3 * float(np.percentile(v, 90)))
                for k, v in self.stages.items() if len(v)}

    def lines(self) -> list[str]:
        out = [f"{self.frames_written} frames written of {self.frames_read} read, {self.dropped} dropped, "
               f"{self.seconds:.1f} s, {self.fps:.1f} FPS ({self.stop_reason})"
               + (f" -> {self.output}" if self.output else "")]
        table = self.percentiles()
        if table:
            out.append("latency ms (p50 / p90): " + ", ".join(f"{k} {a:.1f}/{b:.1f}" for k, (a, b) in table.items()))
        return out


_BLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                 "openblas_set_num_threads64_", "openblas_set_num_threads", "MKL_Set_Num_Threads")


def limit_blas_threads(n: int = 1) -> int:
    """Set the thread count of every BLAS already loaded in this process (OpenBLAS, MKL).

    The cuts' matrices are small (at most R*R = 1024 rows at R = 32): a multi-threaded BLAS spends
    more time waking threads than computing (measured: 4x the CPU time per frame on 2 cores), and
    frames are better parallelised across segment workers. Environment variables such as
    ``OPENBLAS_NUM_THREADS`` only act before numpy is imported, so the loaded libraries are found
    in ``/proc/self/maps`` and set directly (Linux; elsewhere a no-op). Returns how many were set.
    """
    import ctypes

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f
                           if line.rstrip().endswith(".so") or ".so." in line
                           if "blas" in line.lower() or "mkl_rt" in line.lower()})
    except OSError:
        return 0
    done = 0
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _BLAS_SETTERS:
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(ctypes.c_int(n))
                done += 1
                break
    logger.debug("BLAS threads set to %d in %d libraries", n, done)
    return done


def _child_loop(conn, factory) -> None:
    """Body of a segment process: build a Segmenter once, then segment frames sent over ``conn``."""
    limit_blas_threads(1)
    try:
        segmenter = factory()
    except Exception as exc:  # noqa: BLE001 (reported to the parent)
        conn.send(("error", exc))
        return
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if msg is None:
            return
        image, options = msg
        try:
            seg = segmenter.set_image(image).segment(**options)
            labels = seg.labels.astype(np.uint16 if seg.labels.max() < 65536 else np.int32)
            conn.send(("ok", (labels, seg.grid_labels, seg.timings)))
        except Exception as exc:  # noqa: BLE001 (reported to the parent)
            conn.send(("error", exc))


@dataclass(frozen=True, eq=False)
class FrameSegmentation:
    """What a segment process returns: labels (H, W), grid labels and timings (no hierarchy)."""

    labels: np.ndarray
    grid_labels: np.ndarray
    timings: dict


class ProcessSegmenter:
    """A Segmenter living in its own process, so segment workers run truly in parallel.

    Threads share one interpreter lock, and much of the cuts' work is Python between small LAPACK
    calls; one process per worker uses every core. ``factory`` (picklable, e.g. a module-level
    function or ``functools.partial``) builds the Segmenter inside the child. Results carry labels
    and timings only (not the cut hierarchy), which is all the video pipeline uses.
    """

    def __init__(self, factory) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # no fork after threads have started
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child_loop, args=(child, factory), daemon=True, name="walkcut-segment")
        self._proc.start()
        child.close()
        status, payload = self._conn.recv()
        if status != "ready":
            self.close()
            raise payload
        self._image = None

    def set_image(self, image_rgb: np.ndarray) -> ProcessSegmenter:
        self._image = image_rgb
        return self

    def segment(self, **options) -> FrameSegmentation:
        if self._image is None:
            raise RuntimeError("call set_image() before segment()")
        self._conn.send((self._image, options))
        status, payload = self._conn.recv()
        if status != "ok":
            raise payload
        labels, grid_labels, timings = payload
        return FrameSegmentation(labels=labels, grid_labels=grid_labels, timings=timings)

    def close(self) -> None:
        try:
            self._conn.send(None)
        except (OSError, ValueError):
            pass
        self._proc.join(timeout=2.0)
        if self._proc.is_alive():
            self._proc.terminate()
        self._conn.close()


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Blocking put that gives up when ``stop`` is set."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class VideoPipeline:
    """Segment a video stream frame by frame with consistent ids.

    Parameters
    ----------
    make_segmenter : callable returning a Segmenter
        Called once per worker (Segmenter keeps per-image state; the source may be shared).
    cut_options : dict
        Passed to ``Segmenter.segment``.
    workers : int, default 1
        Segment worker threads. Threads help while the source runs outside the interpreter lock
        (onnxruntime); for the cuts, make ``make_segmenter`` return a :class:`ProcessSegmenter`.
    queue_size : int, default 4
        Bound of each queue.
    tracker : IdTracker, optional
        ``None`` for default matching; pass ``track=False`` for raw per-frame ids.
    """

    def __init__(self, make_segmenter, *, cut_options: dict | None = None, workers: int = 1, queue_size: int = 4,
                 track: bool = True, tracker: IdTracker | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size!r}")
        self.make_segmenter = make_segmenter
        self.cut_options = dict(cut_options or {})
        self.workers = workers
        self.queue_size = queue_size
        self.tracker = (tracker or IdTracker()) if track else None
        self.stop = threading.Event()

    # --- stage threads -------------------------------------------------------------------------
    def _read(self, reader: VideoReader, frames: queue.Queue, live: bool, counts: dict, stages: dict,
              max_frames: int | None) -> None:
        try:
            t = time.perf_counter()
            for index, frame in reader.frames():
                now = time.perf_counter()
                stages["decode"].append(now - t)
                counts["read"] += 1
                if self.stop.is_set() or (max_frames is not None and counts["read"] > max_frames):
                    counts["read"] -= 0 if self.stop.is_set() else 1
                    break
                if live:
                    while True:
                        try:
                            frames.put_nowait((index, frame, now))
                            break
                        except queue.Full:
                            try:  # drop the oldest waiting frame: keep latency low
                                frames.get_nowait()
                                counts["dropped"] += 1
                            except queue.Empty:
                                pass
                elif not _put(frames, (index, frame, now), self.stop):
                    break
                t = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 (handed to the main thread)
            counts["error"] = f"reading {reader.source.label} failed: {exc}"
        finally:
            counts["lost"] = reader.lost
            for _ in range(self.workers):
                _put(frames, _SENTINEL, self.stop)

    def _segment(self, frames: queue.Queue, results: queue.Queue) -> None:
        try:
            segmenter = self.make_segmenter()
        except Exception as exc:  # noqa: BLE001 (handed to the main thread)
            _put(results, (-1, None, 0.0, None, exc), self.stop)
            _put(results, _SENTINEL, self.stop)
            return
        try:
            self._segment_loop(segmenter, frames, results)
        finally:
            if hasattr(segmenter, "close"):
                segmenter.close()

    def _segment_loop(self, segmenter, frames: queue.Queue, results: queue.Queue) -> None:
        while not self.stop.is_set():
            try:
                item = frames.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _SENTINEL:
                _put(results, _SENTINEL, self.stop)
                return
            index, frame, t_read = item
            try:
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                seg = segmenter.set_image(rgb).segment(**self.cut_options)
                out = (index, frame, t_read, seg, None)
            except Exception as exc:  # noqa: BLE001 (handed to the main thread)
                out = (index, frame, t_read, None, exc)
            if not _put(results, out, self.stop):
                return

    # --- main loop -----------------------------------------------------------------------------
    def run(self, reader: VideoReader, writer: VideoWriter | None = None, *, live: bool | None = None,
            labels_dir=None, show: bool = False, on_frame=None, max_frames: int | None = None) -> VideoSummary:
        """Process ``reader`` to the end (or until stopped) and return the summary.

        ``writer`` must be entered already (``with VideoWriter(...) as w``); its exit finalises the
        file whatever happens here. ``on_frame(index, ids, picture_bgr)`` is called for each frame in
        order (used by benchmarks and tests). KeyboardInterrupt (and the command's SIGTERM) stop the
        run cleanly: the summary's ``stop_reason`` says so and the exception is not re-raised.
        """
        live = reader.source.live if live is None else live
        self.stop.clear()
        stages = {k: collections.deque(maxlen=MAX_SAMPLES)
                  for k in ("decode", "source", "preprocess", "engine", "cuts", "upsample", "track", "encode",
                            "latency")}
        counts = {"read": 0, "dropped": 0, "error": None, "lost": False}
        frames: queue.Queue = queue.Queue(maxsize=self.queue_size)
        results: queue.Queue = queue.Queue(maxsize=self.queue_size)
        summary = VideoSummary(stages=stages, output=str(writer.path) if writer else None)
        if labels_dir is not None:
            Path(labels_dir).mkdir(parents=True, exist_ok=True)
        threads = [threading.Thread(target=self._read, args=(reader, frames, live, counts, stages, max_frames),
                                    name="walkcut-decode", daemon=True)]
        threads += [threading.Thread(target=self._segment, args=(frames, results), name=f"walkcut-segment-{i}",
                                     daemon=True) for i in range(self.workers)]
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
                        counts["dropped"] += 1
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
                    t1 = time.perf_counter()
                    picture = cv2.cvtColor(overlay(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), ids, colors=ID_COLORS),
                                           cv2.COLOR_RGB2BGR)
                    if writer is not None:
                        writer.write(picture)
                    if labels_dir is not None:
                        atomic_write_bytes(Path(labels_dir) / f"{index:06d}.png",
                                           encode_png(np.minimum(ids, 65535).astype(np.uint16), rgb=False))
                    t2 = time.perf_counter()
                    stages["track"].append(t1 - t0)
                    stages["encode"].append(t2 - t1)
                    stages["latency"].append(t2 - t_read)
                    summary.frames_written += 1
                    if on_frame is not None:
                        on_frame(index, ids, picture)
                    if show:
                        window_n += 1
                        if t2 - window_t >= 1.0:
                            shown_fps, window_t, window_n = window_n / (t2 - window_t), t2, 0
                        cv2.putText(picture, f"{shown_fps:.1f} FPS", (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                                    (255, 255, 255), 2, cv2.LINE_AA)
                        cv2.imshow("walkcut", picture)
                        if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                            summary.stop_reason = "stopped from the window"
                            self.stop.set()
                            break
        except KeyboardInterrupt as exc:
            summary.stop_reason = "terminated" if isinstance(exc, Terminated) else "interrupted"
        except Exception as exc:
            summary.stop_reason = f"error: {exc}"
            logger.debug("video run failed", exc_info=True)
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=5.0)
            summary.seconds = time.perf_counter() - t_start
            summary.frames_read = counts["read"]
            summary.dropped = counts["dropped"]
            if counts["error"] and summary.stop_reason == "end of stream":
                summary.stop_reason = f"error: {counts['error']}"
            elif counts["lost"] and summary.stop_reason == "end of stream":
                summary.stop_reason = f"{reader.source.label} disconnected"
            if show:
                cv2.destroyAllWindows()
        return summary
