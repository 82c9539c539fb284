"""The model stage: the exported model (the engine) runs ahead of the cuts, one call in flight.

With an engine source the video pipeline is::

    reader --Frame--> model stage (one thread, one engine call at a time) --SourcedFrame--> cut workers

While the workers cut frame t on the CPU cores, the model stage already runs frame t + 1 (on a GPU,
or on the CPU's inference threads); the bounded ``staged`` queue keeps it at most ``queue_size``
frames ahead, so memory stays flat. The workers receive the transition matrix with the frame
(:class:`~walkcut.runtime.sources.given.GivenSource`) and load no model. One call in flight is
what a single GPU context serves best, and it keeps the engine's memory at one batch.

:class:`ModelStats` says how well the overlap worked: the engine's busy time, and its idle time
split into waiting for frames (the reader or a live source is the bottleneck) and waiting for the
cuts (the staged queue is full: the CPU side is the bottleneck).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

from walkcut.runtime.video.frames import END, Frame, SourcedFrame, put_until_stopped


@dataclass
class ModelStats:
    """Seconds the model stage spent running the engine and waiting, and how many frames it ran."""

    calls: int = 0
    busy_s: float = 0.0
    wait_frames_s: float = 0.0
    wait_cuts_s: float = 0.0
    stale: int = 0

    @property
    def idle_s(self) -> float:
        return self.wait_frames_s + self.wait_cuts_s

    def line(self) -> str:
        total = self.busy_s + self.idle_s
        share = 100.0 * self.idle_s / total if total > 0 else 0.0
        return (f"engine: {self.calls} calls, busy {self.busy_s:.1f} s, idle {self.idle_s:.1f} s ({share:.0f}%: "
                f"{self.wait_cuts_s:.1f} s waiting for the cuts, {self.wait_frames_s:.1f} s for frames)")


class ModelStage:
    """Runs ``source.transition`` on each frame in order, ahead of the cut workers.

    Parameters
    ----------
    source : object with ``transition(image_rgb)`` and optionally ``last_timings``
        The engine source (e.g. :class:`~walkcut.runtime.sources.engine.EngineSource`).
    """

    def __init__(self, source) -> None:
        if not callable(getattr(source, "transition", None)):
            raise TypeError(f"source must have a transition(image_rgb) method, got {type(source).__name__}")
        self.source = source
        self.stats = ModelStats()

    def run(self, frames: queue.Queue, staged: queue.Queue, stop: threading.Event, *, consumers: int,
            max_age: float | None = None) -> None:
        """Thread body: each :class:`Frame` from ``frames`` goes on ``staged`` as a :class:`SourcedFrame`.

        A frame older than ``max_age`` seconds when the engine is free is skipped (live sources:
        work on the newest frame); skips are counted in ``stats.stale``. On :data:`END` (end of
        stream) one ``END`` is passed on per consumer. An engine error is handed on with its frame,
        so the pipeline reports it in frame order, and the stage stops.
        """
        stats = self.stats
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    frame: Frame = frames.get(timeout=0.1)
                except queue.Empty:
                    stats.wait_frames_s += time.perf_counter() - t0
                    continue
                t1 = time.perf_counter()
                stats.wait_frames_s += t1 - t0
                if frame is END:
                    return
                if max_age is not None and t1 - frame.t_read > max_age:
                    stats.stale += 1
                    continue
                try:
                    transition = self.source.transition(frame.rgb)
                    out = SourcedFrame(frame, transition, dict(getattr(self.source, "last_timings", None) or {}))
                except Exception as exc:  # noqa: BLE001 (reported by the pipeline in frame order)
                    out = SourcedFrame(frame, error=exc)
                t2 = time.perf_counter()
                stats.busy_s += t2 - t1
                stats.calls += 1
                if not put_until_stopped(staged, out, stop):
                    return
                stats.wait_cuts_s += time.perf_counter() - t2
                if out.error is not None:
                    return
        finally:
            for _ in range(consumers):
                put_until_stopped(staged, END, stop)
