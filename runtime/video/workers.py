"""Segment workers for the video pipeline: how many, threads or processes, and one way to build them.

:func:`plan_workers` chooses the number of workers and threads-versus-processes from the cores this
process may run on; :func:`build_video_segmenter` builds every worker's
:class:`~walkcut.runtime.segmenter.Segmenter` from one picklable :class:`SegmenterSpec`, so thread
and process workers get the same options by construction (an earlier version built the two in two
places and the thread workers lost their warm starts). The spec holds the source's own spec
(:mod:`walkcut.runtime.sources.spec`), which a worker opens; with the model stage ahead of the
workers it opens a :class:`~walkcut.runtime.sources.given.GivenSource` instead and loads no model.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import ThreadpoolController

from walkcut.runtime.sources.given import GivenSource
from walkcut.runtime.sources.pixels import PixelSource
from walkcut.runtime.sources.spec import SourceSpec

logger = logging.getLogger(__name__)

#: Most workers chosen automatically: each process holds a Segmenter (and with an engine source in
#: the workers, a model); beyond 8 the decode/track/encode thread of the parent is the bottleneck.
MAX_AUTO_WORKERS = 8

def limit_blas_threads(n: int = 1) -> int:
    """Limit every BLAS loaded in this process to ``n`` threads (threadpoolctl); returns how many.

    The cuts' matrices are small (at most R*R = 1024 rows at R = 32): a multi-threaded BLAS spends
    more time waking threads than computing (measured: 4x the CPU time per frame on 2 cores), and
    frames are better parallelised across segment workers. The limit stays for the life of the
    process (video workers are long-lived); :mod:`walkcut.runtime.cuts.hierarchy` limits per call.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    # A fresh controller each call: threadpoolctl only sees the libraries loaded when it is made
    # (scipy brings its own OpenBLAS when scipy.linalg is first imported).
    blas = ThreadpoolController().select(user_api="blas")
    blas.limit(limits=int(n))  # not used as a context: the limit is meant to outlive this call
    logger.debug("BLAS threads set to %d in %d libraries", n, len(blas.lib_controllers))
    return len(blas.lib_controllers)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class WorkerPlan:
    """How many segment workers and whether each is a process; ``reason`` says how it was chosen."""

    workers: int
    processes: bool
    reason: str
    #: The ``workers`` asked for when it was more than the cores (then ``workers`` is the cores).
    capped_from: int | None = None
    #: With ``processes``: how many workers (the first ones) run as threads of this process anyway.
    in_process: int = 0


def plan_workers(*, cores: int | None = None, engine: bool = False, workers: int | None = None,
                 processes: bool | None = None) -> WorkerPlan:
    """Workers and threads-versus-processes for this machine; ``workers``/``processes`` override.

    Pixel source: one worker per core, each a process once there are two or more (the cuts are
    mostly Python between small LAPACK calls, so threads would share one interpreter lock; measured
    on 2 cores: 13.3 FPS with two processes against 8.2 with one thread, bench/RESULTS_runtime.md).
    Engine source: the engine runs in the parent's engine stage (one call in flight, see
    :mod:`walkcut.runtime.video.overlap`), so the cuts get the other cores (at least one worker).
    """
    cores = available_cores() if cores is None else int(cores)
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got {cores!r}")
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    auto = min(MAX_AUTO_WORKERS, max(1, cores - 1 if engine else cores))
    n = auto if workers is None else int(workers)
    capped_from = None
    if n > cores:
        # More cut workers than cores only adds switching and memory (a worker process holds its own
        # source and solver); the extra ones would wait for a core anyway.
        capped_from, n = n, cores
    # One worker process still pays off on several cores: the parent decodes, tracks and encodes
    # while the child cuts, with no interpreter lock between them.
    use_processes = (cores >= 2) if processes is None else bool(processes)
    # Chosen automatically, with the pixel source, the first of several workers runs in this process:
    # one interpreter fewer to start (~0.9 CPU s of imports) and half the frames with no copy between
    # processes; this process's own decode/track/encode work is a few ms a frame, so its interpreter
    # lock is not the bottleneck it is with every worker a thread (bench/RESULTS.md, "Speed v3: the
    # last quarter").
    in_process = 1 if processes is None and use_processes and n >= 2 and not engine else 0
    kind = ("process" if use_processes else "thread") + ("es" if use_processes and n - in_process != 1 else "")
    kind = kind if use_processes or n == 1 else kind + "s"
    overrides = [flag for flag, given in (("--workers", workers is not None),
                                          ("--processes/--threads", processes is not None)) if given]
    what = f"1 worker in this process, {n - 1} worker {kind}" if in_process else f"{n} worker {kind}"
    reason = (f"{cores} core{'s' if cores != 1 else ''}{', engine stage in the parent' if engine else ''}: "
              f"{what}" + (f" (set by {', '.join(overrides)})" if overrides else ""))
    return WorkerPlan(workers=n, processes=use_processes, reason=reason, capped_from=capped_from,
                      in_process=in_process)


@dataclass(frozen=True)
class SegmenterSpec:
    """Everything a video worker's Segmenter is built from (picklable, for worker processes).

    Parameters
    ----------
    source : PixelSource or EngineSpec
        The spec of the source (:func:`walkcut.runtime.sources.source_spec`), opened by each worker
        process (thread workers may share one opened in the parent).
    label_side : int
        Longest side at which labels follow image edges (0: full resolution).
    upsample : str, optional
        Upsampling method (see :mod:`walkcut.runtime.upsample`); default: the source's, else
        joint-bilateral.
    warm_start : bool, optional
        Start each frame's cut from the previous frame's (consecutive frames are alike). Default
        (None): on for model sources, whose dense walks it makes cheaper (bench/RESULTS.md, "Cut
        engine v2"); off for the pixel source, where it saved no time on CamVid frames and changed
        the partition of 10 of 40 (ARI down to 0.42 against the same frame cut alone): with it off
        a video frame gets exactly the partition ``walkcut segment`` gives (bench/RESULTS.md,
        "Speed v3: the frame").
    handed : bool
        The transition comes from the pipeline's model stage: the worker opens a
        :class:`~walkcut.runtime.sources.given.GivenSource` carrying the model's cut settings, and
        loads no model.
    """

    source: SourceSpec = field(default_factory=PixelSource)
    label_side: int = 0
    upsample: str | None = None
    warm_start: bool | None = None
    handed: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.source, SourceSpec):
            raise TypeError(f"source must be a source spec (PixelSource or EngineSpec, see "
                            f"walkcut.runtime.sources.source_spec), got {type(self.source).__name__}")
        if self.warm_start is not None and not isinstance(self.warm_start, bool):
            raise TypeError(f"warm_start must be True, False or None (automatic), got {self.warm_start!r}")
        if isinstance(self.label_side, bool) or not isinstance(self.label_side, (int, np.integer)) \
                or self.label_side < 0:
            raise ValueError(f"label_side must be an integer >= 0 (0: full resolution), got {self.label_side!r}")

    @property
    def warm(self) -> bool:
        """Whether the workers warm-start each frame's cut (``warm_start``, or its automatic choice)."""
        if self.warm_start is not None:
            return self.warm_start
        # Handed transitions come from a model stage: a model source, whatever ``source`` says.
        return self.handed or not isinstance(self.source, PixelSource)

    def open_source(self):
        """The source of one worker (a model is loaded here: once per process)."""
        if self.handed:
            return GivenSource(cut_defaults=self.source.cut_defaults)
        return self.source.open()


def build_video_segmenter(spec: SegmenterSpec, source=None):
    """The one place a video worker's Segmenter is built; ``source`` shares an opened one (threads)."""
    from walkcut.runtime.segmenter import Segmenter

    limits = {"max_label_side": max(64, spec.label_side)} if spec.label_side else {}
    return Segmenter(spec.open_source() if source is None else source, upsample=spec.upsample,
                     warm_start=spec.warm, **limits)


def worker_factory(spec: SegmenterSpec, *, processes: bool, source=None, in_process: int = 0):
    """A callable building one worker: a :class:`ProcessSegmenter` or an in-thread Segmenter.

    Thread workers share ``source`` when given (an opened engine: one model in memory) and each get
    their own Segmenter (per-frame state, warm starts); a :class:`GivenSource` is per worker. With
    ``processes``, the first ``in_process`` workers are threads anyway (:attr:`WorkerPlan.in_process`):
    the pipeline calls ``factory.for_worker(i)`` for worker ``i`` when the factory has it.
    """
    threads = functools.partial(build_video_segmenter, spec, None if spec.handed else source)
    if not processes:
        return threads
    return _MixedFactory(functools.partial(ProcessSegmenter, functools.partial(build_video_segmenter, spec)),
                         threads, int(in_process))


@dataclass(frozen=True)
class _MixedFactory:
    """Process workers, except the first ``in_process`` (threads of this process)."""

    process: functools.partial
    thread: functools.partial
    in_process: int = 0

    def __call__(self):
        return self.process()

    def for_worker(self, index: int):
        return self.thread() if index < self.in_process else self.process()


def _child_loop(conn, factory) -> None:
    """Body of a segment process: build a Segmenter once, then segment frames sent over ``conn``."""
    try:
        segmenter = factory()
    except Exception as exc:  # noqa: BLE001 (reported to the parent)
        conn.send(("error", exc))
        return
    limit_blas_threads(1)  # after the factory imported scipy and the source's libraries
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if msg is None:
            return
        image, handed, options = msg
        try:
            if handed is not None:
                segmenter.source.hand(*handed)
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
    calls; one process per worker uses every core. ``factory`` (picklable, e.g.
    ``functools.partial(build_video_segmenter, spec)``) builds the Segmenter inside the child.
    Results carry labels and timings only (not the cut hierarchy), which is all the video pipeline
    uses. A transition handed to ``source.hand`` (a :class:`GivenSource` on this side) travels to the
    child with the next frame.
    """

    def __init__(self, factory) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # no fork after threads have started
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child_loop, args=(child, factory), daemon=True, name="walkcut-segment")
        self._proc.start()
        child.close()
        self.source = GivenSource()
        self._image = None
        status, payload = self._conn.recv()
        if status != "ready":
            self.close()
            raise payload

    def set_image(self, image_rgb: np.ndarray) -> ProcessSegmenter:
        self._image = image_rgb
        return self

    def segment(self, **options) -> FrameSegmentation:
        if self._image is None:
            raise RuntimeError("call set_image() before segment()")
        self._conn.send((self._image, self.source.take(), options))
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
