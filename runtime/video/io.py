"""Video input and output: what to open, a reader with retries, a writer that always finalises.

The writer writes to a temporary name renamed on exit, whatever the exit (end of stream, error,
Ctrl-C, SIGTERM turned into an exception by the command): the output is either a finalised, playable
file or absent (no frames).

What the pipeline asks of a reader and a writer (:mod:`walkcut.runtime.video.bags` has the ROS bag
pair, chosen by the command from the input and output kinds):

* reader: ``source`` (a :class:`VideoInput`: ``live``, ``label``), ``fps``, ``size``, ``frames()``
  yielding :class:`~walkcut.runtime.video.frames.Frame` (RGB, converted once, here), ``lost`` (a
  live source stopped), ``failed`` (``(name, reason)`` of frames that could not be decoded and were
  skipped) and ``close()``;
* writer: a context manager with ``write_frame(tracked, picture_bgr)`` (a
  :class:`~walkcut.runtime.video.frames.TrackedFrame`: the frame and its ids; the call the pipeline's
  sinks get too), ``path`` and ``frames``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from walkcut.runtime.video.frames import Frame

logger = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an exception (by the command's handler): stops a run like Ctrl-C."""


class VideoInputError(ValueError):
    """The video input cannot be opened or read; the message names it."""


@dataclass(frozen=True)
class VideoInput:
    """What to open: a camera index, a stream URL or a file, and whether it is live."""

    target: int | str
    live: bool
    label: str

    @property
    def is_file(self) -> bool:
        """A file on disk (not a camera index or a stream URL)."""
        return isinstance(self.target, str) and "://" not in self.target

    @classmethod
    def parse(cls, text: str, *, live: bool | None = None) -> VideoInput:
        """``"0"`` -> camera 0; ``"rtsp://..."``/``"http://..."`` -> stream; else a file path."""
        text = str(text)
        if re.fullmatch(r"\d+", text):
            return cls(int(text), True if live is None else live, f"camera {text}")
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
            return cls(text, True if live is None else live, text)
        p = Path(text)
        if not p.exists():
            raise VideoInputError(f"{p}: no such file (or give a camera index / stream URL)")
        if p.is_dir():
            raise VideoInputError(f"{p}: is a directory, expected a video file")
        if p.stat().st_size == 0:
            raise VideoInputError(f"{p}: file is empty (0 bytes)")
        return cls(str(p), bool(live), str(p))


class VideoReader:
    """Frames from an OpenCV ``VideoCapture`` as a generator of :class:`Frame` (RGB).

    A file ends at its last frame. A live source that stops delivering (camera unplugged, stream
    gone) is retried ``retries`` times, then the reader stops with ``lost = True`` and a clear log
    message instead of an exception, so the run finishes cleanly.
    """

    def __init__(self, source: VideoInput, *, retries: int = 5, capture=None) -> None:
        self.source = source
        self.retries = retries
        self.lost = False
        self.failed: list[tuple[str, str]] = []  # OpenCV skips nothing it could not decode: it stops
        # ``capture``: anything with OpenCV's isOpened/read/get/release (tests pass a fake camera).
        self.cap = cv2.VideoCapture(source.target) if capture is None else capture
        if not self.cap.isOpened():
            self.cap.release()
            raise VideoInputError(f"{source.label}: cannot open (not a video OpenCV decodes, or the "
                                  f"camera/stream is unavailable)")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and 0 < fps <= 240 else 25.0
        self.size = (int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        # What a file's container announces (None for live sources, or when it does not say): a file
        # that ends well before it was cut short or damaged.
        count = self.cap.get(cv2.CAP_PROP_FRAME_COUNT) if not source.live else 0
        self.frame_count = int(count) if count and np.isfinite(count) and count > 0 else None

    def frames(self):
        index, failures = 0, 0
        while True:
            ok, frame = self.cap.read()
            if not ok or frame is None:
                if not self.source.live or self.source.is_file:  # a file read as live still ends
                    return
                failures += 1
                if failures > self.retries:
                    self.lost = True
                    logger.error("%s stopped delivering frames (disconnected?); finishing with the %d frames read",
                                 self.source.label, index)
                    return
                time.sleep(0.05 * failures)
                continue
            failures = 0
            yield Frame(index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), time.perf_counter())
            index += 1

    def close(self) -> None:
        self.cap.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoWriter:
    """A video file that is always finalised: written to a temporary name, renamed on exit.

    Parameters
    ----------
    path : str or Path
        Final file name (``.mp4``: mp4v codec).
    fps : float
    size : (width, height), optional
        Frame size; by default the size of the first frame (streams often report none).
    fourcc : str, default "mp4v"
        When OpenCV cannot open this codec, the writer falls back to MJPG in an ``.avi`` file
        (``path`` with the suffix changed) and logs a warning; ``path`` then names the real file.

    Notes
    -----
    The container is opened on the first frame under ``.NAME.PID.partSUFFIX`` in the output folder
    and renamed over ``path`` in ``__exit__`` after ``release()`` wrote its trailer, on every exit
    path; with no frames, nothing is left behind.
    """

    def __init__(self, path, fps: float, size: tuple[int, int] | None = None, *, fourcc: str = "mp4v") -> None:
        if not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        self.path = Path(path)
        self.fps = float(fps)
        self.size = None if size is None or not all(size) else (int(size[0]), int(size[1]))
        self.frames = 0
        self._writer = None
        self._tmp: Path | None = None
        self._fourcc = fourcc
        self._entered = False

    def _try_open(self, path: Path, fourcc: str) -> bool:
        self._tmp = path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*fourcc), self.fps, self.size)
        if self._writer.isOpened():
            self.path = path
            return True
        self._writer.release()
        self._writer = None
        self._tmp.unlink(missing_ok=True)
        return False

    def _open(self) -> None:
        if self._try_open(self.path, self._fourcc):
            return
        fallback = self.path.with_suffix(".avi")
        logger.warning("OpenCV cannot write %s with the %s codec; writing MJPG to %s instead",
                       self.path, self._fourcc, fallback)
        if not self._try_open(fallback, "MJPG"):
            raise RuntimeError(f"OpenCV can open no video writer for {self.path} (tried {self._fourcc}, MJPG)")

    def __enter__(self) -> VideoWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._entered = True
        return self

    def write(self, frame_bgr: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 BGR frame."""
        if not self._entered:
            raise RuntimeError("VideoWriter.write() called outside its `with` block")
        if self.size is None:
            self.size = (int(frame_bgr.shape[1]), int(frame_bgr.shape[0]))
        if frame_bgr.shape[1::-1] != self.size:
            raise ValueError(f"frame size {frame_bgr.shape[1::-1]} differs from the video size {self.size}")
        if self._writer is None:
            self._open()
        self._writer.write(frame_bgr)
        self.frames += 1

    def write_frame(self, tracked, picture_bgr: np.ndarray) -> None:
        """The pipeline's call (a TrackedFrame and its overlay): a video keeps the overlay picture only."""
        self.write(picture_bgr)

    def __exit__(self, *exc) -> None:
        self._entered = False
        if self._writer is not None:
            self._writer.release()  # writes the container trailer: the file is now playable
            self._writer = None
        if self.frames:
            os.replace(self._tmp, self.path)
        else:
            if self._tmp is not None:
                self._tmp.unlink(missing_ok=True)
            # INFO: the command says so in its own one line (and why).
            logger.info("no frames were written; %s not created", self.path)


def display_available() -> bool:
    """True when a window can be shown: a display server and an OpenCV build with a GUI."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow("walkcut", cv2.WINDOW_NORMAL)
    except cv2.error:
        return False
    return True


