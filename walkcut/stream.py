"""Segment frames that arrive through your own transport (a ROS 2 node, a socket, a message queue).

:class:`StreamSegmenter` is ``walkcut video`` fed by the caller: the same source spec and video
defaults (at most 16 segments, labels at 640 px), the same pipeline
(:class:`~walkcut.runtime.video.VideoPipeline`: workers, the engine stage, id tracking, live drops),
with a reader whose frames are the ones handed to :meth:`StreamSegmenter.push`. Each frame goes in
as ``(timestamp, image)`` and comes out, in order, as a :class:`StreamResult`
``(timestamp, labels, overlay)``: the timestamp is passed through untouched (a float, a ROS
header, anything), ``labels`` are the tracked ids (a region keeps its id while it stays in view).

Two ways to feed it:

- every frame (default): ``push`` blocks while ``queue_size`` frames wait, so a producer faster
  than the segmentation is slowed down, never loses a frame; :meth:`StreamSegmenter.segment` is
  the one-call form (push one frame, wait for its result);
- newest frame wins (``latest_only=True``, or ``max_latency`` seconds): ``push`` never waits; a
  frame still waiting when a newer one arrives is dropped (counted in the summary), so the
  results stay current when a camera is faster than the segmentation.

Results are returned by ``push`` (those finished so far), by :meth:`StreamSegmenter.results`
and :meth:`StreamSegmenter.close`, or handed to ``on_result(result)`` from the pipeline's thread
as they finish.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from walkcut.runtime import defaults as _d
from walkcut.runtime.segmenter import resolve_cut_settings
from walkcut.runtime.sources.pixels import PixelSource
from walkcut.runtime.sources.spec import source_spec
from walkcut.runtime.video.frames import Frame
from walkcut.runtime.video.io import VideoInput
from walkcut.runtime.video.pipeline import ID_COLORS, VideoPipeline, VideoSummary
from walkcut.runtime.video.workers import SegmenterSpec, plan_workers, worker_factory

__all__ = ["StreamResult", "StreamSegmenter"]

#: Colour orders an image may come in (OpenCV and cv_bridge's ``bgr8`` use BGR).
COLORS = ("rgb", "bgr")
#: Seconds between checks that the pipeline still runs while a call waits on it.
POLL = 0.1

_END = object()


@dataclass(frozen=True, eq=False)
class StreamResult:
    """One segmented frame: unpacks as ``timestamp, labels, overlay``.

    Attributes
    ----------
    timestamp : object
        What was pushed with the frame, untouched.
    labels : (H, W) uint16
        Tracked segment ids (the same region keeps its id across frames), ready for a ``mono16`` image.
    overlay : (H, W, 3) uint8
        The segments drawn over the frame (colour per id, as ``walkcut video``), in the input's
        colour order.
    index : int
        The frame's position in the stream (0 = first pushed).
    timings : dict
        Seconds per stage for this frame (source, cuts, upsample, track, encode, latency).
    """

    timestamp: Any
    labels: np.ndarray
    overlay: np.ndarray
    index: int
    timings: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator:
        return iter((self.timestamp, self.labels, self.overlay))


class _PushReader:
    """The video pipeline's reader (``source``, ``frames()``, ``lost``, ``failed``) over pushed frames."""

    def __init__(self, *, live: bool, stop: threading.Event) -> None:
        self.source = VideoInput("stream", live, "pushed frames")
        self.lost = False
        self.failed: list[tuple[str, str]] = []  # pushed frames are decoded already: none fails here
        self.fps = 0.0  # unknown: frames come when they come
        self.frames_in: queue.Queue = queue.Queue(maxsize=1)  # the pipeline's own queue does the buffering
        self._stop = stop

    def frames(self):
        while not self._stop.is_set():
            try:
                item = self.frames_in.get(timeout=POLL)
            except queue.Empty:
                continue
            if item is _END:
                return
            index, frame_bgr = item
            # The reader's one conversion to RGB (the pipeline's contract: readers yield Frames).
            yield Frame(index, cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB), time.perf_counter())


class StreamSegmenter:
    """Segment pushed ``(timestamp, image)`` frames with ids kept across frames.

    Parameters
    ----------
    spec : source spec, optional
        What makes the walk: :func:`walkcut.source_spec` (``source_spec(engine="model.onnx")``,
        ``source_spec(grid=24)``), a :class:`~walkcut.runtime.sources.pixels.PixelSource` or an
        :class:`~walkcut.runtime.sources.engine.EngineSpec`; default: the pixel source (with
        ``preset``, its source settings).
    preset : str, optional
        A key of ``walkcut.runtime.defaults.PRESETS``: its cut settings (and, without ``spec``, its
        source settings), as ``walkcut video --preset``.
    cut_options : dict, optional
        Cut settings (``mode``, ``power``, ``threshold``, ``min_size``, ``max_segments``,
        ``upsample``); those left out come from the preset, the model, then ``walkcut video``'s
        defaults (at most 16 segments).
    label_side : int, default 640
        Longest side at which labels follow image edges (0: full resolution), as ``--label-side``.
    track : bool, default True
        Keep ids across frames; ``False`` numbers each frame's segments on its own.
    workers : int, optional, default 1
        Segment workers; ``None`` chooses from the cores as ``walkcut video`` does. Worker
        processes (``processes=True``) start with Python's ``spawn``: the calling script needs an
        ``if __name__ == "__main__":`` guard.
    processes : bool, default False
        Run the workers as processes (else threads of this process).
    queue_size : int, default 4
        Frames waiting between stages.
    latest_only : bool, default False
        Newest frame wins: ``push`` never waits and a waiting frame is dropped for a newer one.
    max_latency : float, optional
        Seconds; implies ``latest_only``: also drop a frame older than this when work on it would
        start (``walkcut video --max-latency``).
    color : {"rgb", "bgr"}, default "rgb"
        Channel order of the pushed images and of the overlays returned.
    on_result : callable, optional
        ``on_result(result)`` for each :class:`StreamResult`, in order, from the pipeline's thread
        (results are then not kept for ``push``/``results``); what it raises stops the stream.
    rerun : str, optional
        Also log every frame to Rerun: an ``.rrd`` file (new) or a viewer's address
        (:class:`~walkcut.runtime.rerun_log.RerunLog`; needs ``walkcut[rerun]``). Numeric
        timestamps (seconds) become the recording's time.

    Notes
    -----
    The pipeline runs in a thread started here and stops at :meth:`close` (or the end of a
    ``with`` block). An error in the pipeline (a frame the model rejects, ``on_result`` raising)
    stops the stream; the next call raises RuntimeError with the reason.
    """

    def __init__(self, spec=None, *, preset: str | None = None, cut_options: Mapping | None = None,
                 label_side: int = _d.VIDEO_LABEL_SIDE, track: bool = True, workers: int | None = 1,
                 processes: bool = False, queue_size: int = 4, latest_only: bool = False,
                 max_latency: float | None = None, color: str = "rgb",
                 on_result: Callable[[StreamResult], Any] | None = None, rerun: str | None = None) -> None:
        if color not in COLORS:
            raise ValueError(f"color must be one of {', '.join(COLORS)}, got {color!r}")
        unknown = set(cut_options or {}) - set(_d.CUT_DEFAULT_KEYS)
        if unknown:
            raise ValueError(f"unknown cut option(s) {', '.join(sorted(unknown))}; known: "
                             f"{', '.join(_d.CUT_DEFAULT_KEYS)}")
        if on_result is not None and not callable(on_result):
            raise TypeError(f"on_result must be callable, got {type(on_result).__name__}")
        spec = source_spec(preset=preset) if spec is None else spec
        engine = not isinstance(spec, PixelSource)
        layers = [("argument", dict(cut_options or {}))]
        if preset is not None:
            layers.append((f"preset {preset}", _d.PRESETS[preset]["cuts"]))
        layers += [("model", spec.cut_defaults), ("default", {"max_segments": _d.VIDEO_MAX_SEGMENTS})]
        self.cut_options = {key: s.value for key, s in resolve_cut_settings(*layers).items()}
        self.color = color
        self.on_result = on_result
        self.live = bool(latest_only or max_latency is not None)

        plan = plan_workers(engine=engine, workers=workers, processes=processes)
        source = spec.open()  # a model's problems are raised here, before any thread starts
        make = worker_factory(SegmenterSpec(source=spec, label_side=label_side, handed=engine),
                              processes=plan.processes, source=source, in_process=plan.in_process)
        self.pipeline = VideoPipeline(make, cut_options=self.cut_options, workers=plan.workers,
                                      queue_size=1 if latest_only and max_latency is None else queue_size,
                                      track=track, engine=source if engine else None, max_latency=max_latency)
        self.pipeline.describe_workers = plan.reason if workers is None else ""
        self._reader = _PushReader(live=self.live, stop=self.pipeline.stop)
        self._next = 0
        self._timestamps: dict[int, Any] = {}
        self._done: collections.deque[StreamResult] = collections.deque()
        self._arrived = threading.Condition()
        self._lock = threading.Lock()  # push() from several threads: one index per frame, in order
        self.summary: VideoSummary | None = None
        self._closed = False
        self._rerun = None
        if rerun is not None:
            from walkcut.runtime.rerun_log import RerunLog

            self._rerun = RerunLog(rerun, timeline="frame", wrap=len(ID_COLORS)).__enter__()
        self._thread = threading.Thread(target=self._run, name="walkcut-stream", daemon=True)
        self._thread.start()

    # --- the pipeline's side ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.summary = self.pipeline.run(self._reader, live=self.live, sinks=(self,))
        finally:
            with self._arrived:
                self._arrived.notify_all()

    def write_frame(self, tracked, picture_bgr: np.ndarray) -> None:
        """The pipeline's sink: one frame in order (called from its encoder thread)."""
        index = tracked.frame.index
        with self._lock:
            timestamp = self._timestamps.pop(index, None)
            for old in [k for k in self._timestamps if k < index]:  # frames dropped on the way
                del self._timestamps[old]
        overlay = picture_bgr if self.color == "bgr" else cv2.cvtColor(picture_bgr, cv2.COLOR_BGR2RGB)
        labels = np.minimum(tracked.ids, 65535).astype(np.uint16)
        result = StreamResult(timestamp, labels, overlay, index, dict(tracked.timings))
        if self._rerun is not None:
            numeric = isinstance(timestamp, (int, float, np.integer, np.floating)) and not isinstance(timestamp, bool)
            self._rerun.log(index, tracked.frame.rgb, tracked.ids, tracked.timings,
                            time=float(timestamp) if numeric else None)
        if self.on_result is not None:
            self.on_result(result)
            return
        with self._arrived:
            self._done.append(result)
            self._arrived.notify_all()

    # --- the caller's side -----------------------------------------------------------------------
    def _check_running(self) -> None:
        if self._closed:
            raise RuntimeError("the stream is closed; make a new StreamSegmenter")
        if not self._thread.is_alive():
            reason = self.summary.stop_reason if self.summary is not None else "unknown"
            raise RuntimeError(f"the stream stopped ({reason}); make a new StreamSegmenter")

    def _hand(self, item) -> None:
        while True:
            self._check_running()
            try:
                self._reader.frames_in.put(item, timeout=POLL)
                return
            except queue.Full:
                continue

    def _as_bgr(self, image) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 (8 bits per channel), got {image.dtype}")
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
            return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) colour or (H, W) grey, got shape {image.shape}")
        if min(image.shape[:2]) < 2:
            raise ValueError(f"image of shape {image.shape} is too small to segment")
        return np.ascontiguousarray(image) if self.color == "bgr" else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)

    def push(self, timestamp, image) -> list[StreamResult]:
        """Hand one frame to the pipeline; returns the results finished so far (in frame order).

        Waits while ``queue_size`` frames wait (every-frame mode); never waits with
        ``latest_only``. ``image``: (H, W, 3) uint8 in ``color`` order, or (H, W) uint8 grey.
        """
        self._push(timestamp, image)
        return self.results()

    def _push(self, timestamp, image) -> int:
        frame = self._as_bgr(image)
        with self._lock:
            index = self._next
            self._timestamps[index] = timestamp
            try:
                self._hand((index, frame))
            except BaseException:
                del self._timestamps[index]
                raise
            self._next += 1
        return index

    def results(self) -> list[StreamResult]:
        """The results finished since the last call, in frame order (without waiting)."""
        out = []
        with self._arrived:
            while self._done:
                out.append(self._done.popleft())
        return out

    def segment(self, timestamp, image) -> StreamResult:
        """Push one frame and wait for its result (every-frame mode; results of frames pushed
        earlier stay for :meth:`results`)."""
        if self.live:
            raise RuntimeError("segment() waits for its frame, which latest_only/max_latency may drop; "
                               "use push() and results(), or on_result")
        if self.on_result is not None:
            raise RuntimeError("results go to on_result; use push()")
        index = self._push(timestamp, image)
        with self._arrived:
            while True:
                for result in self._done:
                    if result.index == index:
                        self._done.remove(result)
                        return result
                if not self._thread.is_alive():
                    self._check_running()
                self._arrived.wait(POLL)

    def close(self) -> list[StreamResult]:
        """End the stream: finish the frames in flight and return the results not taken yet.

        Idempotent. The pipeline's summary (frames, drops, timings) is then in :attr:`summary`.
        """
        if self._closed:
            return self.results()
        try:
            if self._thread.is_alive():
                self._hand(_END)
        except RuntimeError:
            pass  # the pipeline stopped by itself: nothing to end
        finally:
            self._closed = True
            self._thread.join()
            if self._rerun is not None:
                self._rerun.close()
        return self.results()

    def __enter__(self) -> StreamSegmenter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def frames_pushed(self) -> int:
        return self._next
