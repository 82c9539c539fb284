"""What the video pipeline's threads pass to each other, and the small objects they share.

Messages are frozen dataclasses, one per hop, so a reader sees what a queue carries::

    reader --Frame--> [model stage --SourcedFrame-->] worker --FrameResult / WorkerFailed--> main
           (ReorderBuffer: back in frame order, ids tracked) --TrackedFrame--> encoder

and :data:`END` (one per consumer) ends a stream. A frame is converted to RGB once, when it is read;
it goes back to BGR once, when its overlay is drawn for the writer.

:class:`RunCounters` holds the counts several threads update (frames read, drops by reason) behind
one lock; :func:`put_until_stopped` is the blocking put every stage uses.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

#: Ends a stream: a producer puts one per consumer.
END = object()


@dataclass(frozen=True)
class FrameInfo:
    """Where a frame came from, carried from the reader to the writer: a bag message's header stamp,
    its frame id and the time it was logged (nanoseconds)."""

    stamp_ns: int
    frame_id: str = ""
    log_time_ns: int = 0

    @property
    def name(self) -> str:
        """The stamp as ROS prints it: ``seconds.nanoseconds``."""
        seconds, nanoseconds = divmod(self.stamp_ns, 1_000_000_000)
        return f"{seconds}.{nanoseconds:09d}"


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame: its position in the stream, its pixels (RGB), when it was read and, from a
    bag, where it came from (``info``)."""

    index: int
    rgb: np.ndarray  # (H, W, 3) uint8 RGB
    t_read: float  # time.perf_counter() when decoded
    info: FrameInfo | None = None

    @property
    def name(self) -> str:
        """How the summary names this frame: its stamp (bags) or its index."""
        return self.info.name if self.info is not None else f"frame {self.index}"


@dataclass(frozen=True, eq=False)
class SourcedFrame:
    """A frame with its transition from the model stage, or the error the model raised on it."""

    frame: Frame
    transition: object | None = None  # walkcut.runtime.sources.Transition
    timings: dict = field(default_factory=dict)  # the source's own seconds (preprocess, engine)
    error: BaseException | None = None


@dataclass(frozen=True, eq=False)
class FrameResult:
    """What a worker made of a frame: its segmentation (labels, timings), or the error it raised."""

    frame: Frame
    segmentation: object | None = None  # Segmentation or FrameSegmentation
    error: BaseException | None = None

    @property
    def index(self) -> int:
        return self.frame.index


@dataclass(frozen=True, eq=False)
class WorkerFailed:
    """A worker could not start (its Segmenter or model failed to build): the run stops with it."""

    error: BaseException


@dataclass(frozen=True, eq=False)
class TrackedFrame:
    """A frame in order with its tracked ids, ready to draw and write, and its seconds per stage
    (the segmentation's, ``track``, then ``encode`` and ``latency`` once written)."""

    frame: Frame
    ids: np.ndarray  # (H, W) ids consistent across frames
    timings: dict = field(default_factory=dict)


class ReorderBuffer:
    """Puts the results of several workers back in frame order.

    :meth:`add` takes results as they come; :meth:`ready` yields those that can go out now, in
    order. A result for a frame older than the last one out (overtaken by a later frame on live
    input, where indices have gaps) is dropped and counted in :attr:`overtaken`.
    """

    def __init__(self) -> None:
        self._pending: dict[int, FrameResult] = {}
        self.next_index = 0
        self.overtaken = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, result: FrameResult) -> None:
        self._pending[result.index] = result

    def ready(self, *, wait_for_gaps: bool) -> Iterator[FrameResult]:
        """Results in frame order. ``wait_for_gaps``: stop at a missing index (a file whose frame is
        still being cut); otherwise go past gaps (live drops, or every worker has finished)."""
        while self._pending:
            index = min(self._pending)
            if index < self.next_index:
                del self._pending[index]
                self.overtaken += 1
                continue
            if index != self.next_index and wait_for_gaps:
                return
            self.next_index = index + 1
            yield self._pending.pop(index)


class RunCounters:
    """Counts of one run that several threads update: frames read, drops by reason, and how the
    reader ended (``error``: its message; ``lost``: a live source stopped delivering).

    Frames that carry :class:`FrameInfo` (bags: finite, named by stamp) are also remembered from
    :meth:`count_read` until :meth:`count_written`, so the summary can name every frame that was
    read but never written (dropped, overtaken, or in flight when the run stopped).
    """

    def __init__(self, reasons: tuple[str, ...]) -> None:
        self._lock = threading.Lock()
        self._read = 0
        self._drops = dict.fromkeys(reasons, 0)
        self._unwritten: dict[int, str] = {}
        self.error: str | None = None
        self.lost = False

    @property
    def read(self) -> int:
        with self._lock:
            return self._read

    def count_read(self, frame: Frame | None = None) -> None:
        with self._lock:
            self._read += 1
            if frame is not None and frame.info is not None:
                self._unwritten[frame.index] = frame.name

    def count_written(self, frame: Frame) -> None:
        with self._lock:
            self._unwritten.pop(frame.index, None)

    def unwritten(self) -> list[str]:
        """Names of the named frames read but not written, in stream order."""
        with self._lock:
            return [self._unwritten[i] for i in sorted(self._unwritten)]

    def drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            if reason not in self._drops:
                raise ValueError(f"unknown drop reason {reason!r}; known: {', '.join(self._drops)}")
            self._drops[reason] += n

    def drops(self) -> dict[str, int]:
        """A copy of the drop counts by reason."""
        with self._lock:
            return dict(self._drops)


def put_until_stopped(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put ``item`` on ``q``, waiting while it is full; give up (False) once ``stop`` is set."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
