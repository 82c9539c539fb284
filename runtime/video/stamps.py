"""Frame times for a video reader: when each frame belongs, for consumers that need it (Rerun).

The pipeline numbers frames; :class:`StampedReader` wraps a reader (the same ``frames()``,
``source``, ``fps``, ``lost``, ...) and records each frame's time as it is decoded: for a file the
decoder's position of that frame (``CAP_PROP_POS_MSEC``; ``index / fps`` when the container gives
none), for a live source the wall-clock time it was read, for a ROS bag's frame its header stamp. A consumer takes a frame's time with
:meth:`StampedReader.pop` when the frame comes out of the pipeline, in frame order; times of frames
dropped on the way are discarded then, so the table stays small on an endless stream.
"""

from __future__ import annotations

import threading
import time

import cv2

__all__ = ["StampedReader"]


class StampedReader:
    """``reader`` (a :class:`~walkcut.runtime.video.io.VideoReader` or anything with its
    ``frames()`` and ``source``) with each frame's time in seconds, from :meth:`pop`.

    Times of a file are durations from its start; times of a live source are seconds since the
    Unix epoch (``time.time()``).
    """

    def __init__(self, reader) -> None:
        self.reader = reader
        self._times: dict[int, float] = {}
        self._lock = threading.Lock()  # frames() runs in the decode thread, pop() in the encoder's

    def __getattr__(self, name):  # source, fps, size, lost, cap, close, ... of the wrapped reader
        return getattr(self.reader, name)

    def __enter__(self) -> StampedReader:
        return self

    def __exit__(self, *exc) -> None:
        self.reader.close()

    def frames(self):
        live = self.reader.source.live
        cap = getattr(self.reader, "cap", None)
        fps = getattr(self.reader, "fps", None) or 25.0
        for frame in self.reader.frames():
            index = frame.index
            if frame.info is not None:  # a bag's frame: its header stamp
                seconds = frame.info.stamp_ns / 1e9
            elif live:
                seconds = time.time()
            else:
                ms = cap.get(cv2.CAP_PROP_POS_MSEC) if cap is not None else -1.0
                seconds = ms / 1e3 if ms is not None and (ms > 0 or index == 0) else index / fps
            with self._lock:
                self._times[index] = seconds
            yield frame

    def pop(self, index: int) -> float | None:
        """The time of frame ``index`` (None if unknown); forgets it and every earlier frame's."""
        with self._lock:
            seconds = self._times.pop(index, None)
            for old in [k for k in self._times if k < index]:
                del self._times[old]
        return seconds
