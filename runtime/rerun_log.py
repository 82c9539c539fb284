"""Rerun recordings of segmentations: image, segment ids and stage timings, to a file or a viewer.

Each segmented frame (or image) becomes, on the timeline ``frame`` (``image`` for still images):

- ``image``: the picture (JPEG-compressed for video, to keep a recording of a long clip small);
- ``image/segmentation``: the ids as a Rerun ``SegmentationImage``, coloured through one static
  ``AnnotationContext`` (id k -> the colour the overlay gives id k, labelled ``id k``), so a tracked
  id keeps its colour for the whole recording and the viewer's opacity slider blends it over the
  picture;
- ``timings/STAGE``: milliseconds per stage (``source``, ``cuts``, ``upsample``, ``track``,
  ``encode``) as scalars; ``latency``: milliseconds from decoding to written (video); ``segments``:
  how many segments the frame has; ``source``: the image's file name (still images).

Video frames also get a time: ``video_time`` (seconds into a file, a duration) or ``capture_time``
(wall clock of a live frame, a timestamp).

A target is an ``.rrd`` file or the address of a running viewer (``rerun+http://HOST:PORT/proxy``,
``rerun://...``, or ``HOST:PORT``). A file is written under a temporary name in the same folder
and renamed when the recording closes, whatever the exit (like the video writer): the ``.rrd`` is
either complete for the frames logged, or absent (no frame). rerun-sdk is optional
(``pip install "walkcut[rerun]"``) and imported only when a recording opens.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import socket
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from walkcut.runtime.draw import palette

__all__ = ["DEFAULT_ADDRESS", "INSTALL_HINT", "RerunLog", "RerunTarget", "RerunUnavailable", "import_rerun"]

logger = logging.getLogger(__name__)

#: Where a viewer started with ``rerun`` listens by default.
DEFAULT_ADDRESS = "rerun+http://127.0.0.1:9876/proxy"
#: The one-line fix when rerun-sdk is missing.
INSTALL_HINT = 'pip install "walkcut[rerun]"'
#: Seconds to wait for a viewer's port to accept a connection before refusing the address.
CONNECT_TIMEOUT = 2.0
#: Seconds ``close`` waits for a viewer to take the data still buffered (a file is always written
#: to the end): a peer that accepts connections but does not answer gRPC would otherwise hold the
#: command forever.
FLUSH_TIMEOUT = 10.0
#: JPEG quality of video frames in a recording: 480 x 360 frames take ~30 kB instead of 518 kB raw.
JPEG_QUALITY = 90
#: Numbers at least this large are seconds since the Unix epoch (2001-09-09 on), smaller ones durations.
EPOCH_SECONDS = 1e9

_URL = re.compile(r"(rerun(?:\+https?)?)://(\[[0-9a-fA-F:]+\]|[^/:\s]+):(\d+)/proxy")
_HOST_PORT = re.compile(r"(\[[0-9a-fA-F:]+\]|[^/:\s]+):(\d+)")


class RerunUnavailable(ImportError):
    """rerun-sdk is not installed; the message names the install command."""


def import_rerun():
    """The ``rerun`` module, or :class:`RerunUnavailable` naming ``pip install "walkcut[rerun]"``."""
    try:
        import rerun
    except ImportError as exc:
        raise RerunUnavailable(f"--rerun needs rerun-sdk, which is not installed: {INSTALL_HINT}") from exc
    return rerun


@dataclass(frozen=True)
class RerunTarget:
    """Where a recording goes: an ``.rrd`` file (``path``) or a viewer's gRPC proxy (``url``)."""

    path: Path | None = None
    url: str | None = None

    @classmethod
    def parse(cls, text: str | os.PathLike | None) -> RerunTarget:
        """``None`` or ``""``: the local viewer (:data:`DEFAULT_ADDRESS`); ``NAME.rrd``: a file;
        ``HOST:PORT``, ``rerun+http://HOST:PORT/proxy`` (also ``rerun://``, ``rerun+https://``): a viewer.

        Raises ValueError for anything else, naming the forms accepted.
        """
        if text is None or str(text) == "":
            return cls(url=DEFAULT_ADDRESS)
        if isinstance(text, os.PathLike) or str(text).lower().endswith(".rrd"):
            return cls(path=Path(text))
        text = str(text)
        if m := _URL.fullmatch(text):
            port = m.group(3)
        elif m := _HOST_PORT.fullmatch(text):
            port = m.group(2)
            text = f"rerun+http://{text}/proxy"
        else:
            raise ValueError(f"{text!r} is neither a recording file nor a viewer address: give NAME.rrd, "
                             f"HOST:PORT or rerun+http://HOST:PORT/proxy")
        if not 0 < int(port) < 65536:
            raise ValueError(f"{text!r}: port {port} is out of range (1 to 65535)")
        return cls(url=text)

    @property
    def host_port(self) -> tuple[str, int]:
        """``(host, port)`` of a viewer address."""
        if self.url is None:
            raise ValueError("a recording file has no host and port")
        m = _URL.fullmatch(self.url)
        return m.group(2).strip("[]"), int(m.group(3))

    def check(self, *, overwrite: bool = False, timeout: float = CONNECT_TIMEOUT) -> None:
        """Refuse what cannot work before any frame is made: an existing file without ``overwrite``,
        a missing folder (FileExistsError / FileNotFoundError), or an address where no viewer
        accepts connections (ConnectionError)."""
        if self.path is not None:
            if self.path.exists() and not overwrite:
                raise FileExistsError(f"{self.path} already exists; add --overwrite to replace it or choose "
                                      f"another .rrd name")
            if self.path.is_dir():
                raise IsADirectoryError(f"{self.path} is a folder; give a file name ending in .rrd")
            if not self.path.parent.is_dir():
                raise FileNotFoundError(f"{self.path}: the folder {self.path.parent} does not exist")
            return
        host, port = self.host_port
        try:
            conn = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConnectionError(f"no Rerun viewer answers at {self.url} ({reason}): start one with `rerun` "
                                  f"(it listens on port 9876) or record to a file: --rerun NAME.rrd") from None
        with conn:
            try:
                speaks = self.url.startswith("rerun+https") or _answers_http2(conn)
            except OSError:  # silence (timeout) or a reset: not a gRPC server
                speaks = False
        if not speaks:
            raise ConnectionError(f"{host}:{port} accepts connections but is not a Rerun viewer's gRPC port "
                                  f"(a web viewer's page? `rerun` takes data on 9876 by default)")

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else self.url


#: An HTTP/2 client's first bytes: the connection preface and an empty SETTINGS frame (RFC 9113,
#: sections 3.4 and 6.5). A gRPC server answers with its own SETTINGS frame (type 4).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _answers_http2(conn: socket.socket) -> bool:
    """Whether the peer on ``conn`` speaks HTTP/2 (gRPC's transport): rerun-sdk itself waits for ever
    on a peer that accepts a connection but never answers, so this is asked before connecting it."""
    conn.sendall(_H2_PREFACE)
    header = b""
    while len(header) < 9:  # a frame header: length (3 bytes), type (1), flags (1), stream id (4)
        chunk = conn.recv(9 - len(header))
        if not chunk:
            return False
        header += chunk
    return header[3] == 4


def _time_arguments(seconds) -> dict:
    """``rr.set_time`` keywords for a time: ``timestamp`` for wall-clock times (datetimes, numbers
    from :data:`EPOCH_SECONDS` on), else ``duration`` (seconds from the start of a clip)."""
    if isinstance(seconds, (_dt.datetime, np.datetime64)):
        return {"timestamp": seconds}
    value = float(seconds)
    return {"timestamp": value} if value >= EPOCH_SECONDS else {"duration": value}


class RerunLog:
    """A Rerun recording of segmented frames; a context manager that finalises it on every exit.

    Parameters
    ----------
    target : RerunTarget or str
        An ``.rrd`` file or a viewer address (see :meth:`RerunTarget.parse`).
    timeline : str, default "frame"
        The sequence timeline frames are logged on (``"image"`` for a set of still images).
    wrap : int, optional
        Colours repeat every ``wrap`` ids, as in the overlay that uses them (the video pipeline's 64
        colours); ``None``: id k gets ``palette(n)[k]`` with no repeat (``walkcut segment``'s overlays).
    overwrite : bool, default False
        Replace an existing ``.rrd``.
    jpeg_quality : int, optional
        Compress the picture as JPEG at this quality; ``None`` logs raw pixels.
    application_id : str, default "walkcut"
    clock : callable, optional
        ``clock(index)`` -> the frame's time in seconds (or None), for :meth:`write_frame`: e.g.
        :meth:`walkcut.runtime.video.stamps.StampedReader.pop`.

    Notes
    -----
    A file is saved as ``.NAME.PID.part`` in the target's folder and renamed over ``NAME.rrd`` when
    the recording closes after at least one frame (flushed, with its footer), whatever the exit;
    with no frame it is removed. :meth:`write_frame` lets the recording serve as a sink of
    :meth:`walkcut.runtime.video.VideoPipeline.run`.
    """

    def __init__(self, target, *, timeline: str = "frame", wrap: int | None = 64, overwrite: bool = False,
                 jpeg_quality: int | None = JPEG_QUALITY, application_id: str = "walkcut", clock=None) -> None:
        self.target = target if isinstance(target, RerunTarget) else RerunTarget.parse(target)
        if wrap is not None and (isinstance(wrap, bool) or int(wrap) < 1):
            raise ValueError(f"wrap must be a positive number of colours or None, got {wrap!r}")
        if jpeg_quality is not None and not 1 <= int(jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must lie in 1..100 or be None, got {jpeg_quality!r}")
        self.timeline = timeline
        self.wrap = None if wrap is None else int(wrap)
        self.overwrite = overwrite
        self.jpeg_quality = jpeg_quality
        self.application_id = application_id
        self.frames = 0
        self.clock = clock
        self._rr = None
        self._rec = None
        self._tmp: Path | None = None
        self._classes = 0  # ids the logged annotation context covers

    # --- opening and closing --------------------------------------------------------------------
    def __enter__(self) -> RerunLog:
        rr = import_rerun()
        self.target.check(overwrite=self.overwrite)
        rec = rr.RecordingStream(self.application_id, recording_id=str(uuid.uuid4()))
        blueprint = self._blueprint(rr)
        if self.target.path is not None:
            path = self.target.path
            self._tmp = path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")
            rec.save(self._tmp, default_blueprint=blueprint)
        else:
            rec.connect_grpc(self.target.url, default_blueprint=blueprint)
        self._rr, self._rec = rr, rec
        return self

    def _blueprint(self, rr):
        """The picture with its segmentation beside the timings plot: what a viewer shows first."""
        import rerun.blueprint as rrb

        return rrb.Blueprint(rrb.Horizontal(
            rrb.Spatial2DView(origin="image", name="segmentation"),
            rrb.TimeSeriesView(origin="timings", name="milliseconds per stage"),
            column_shares=[3, 2]), collapse_panels=True)

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close; a file is renamed to its name (or removed when no frame was logged)."""
        rec, self._rec = self._rec, None
        if rec is None:
            return
        try:
            if self.target.url is None:
                rec.flush()
                rec.disconnect()  # the file sink writes its footer here
            else:
                self._close_connection(rec)
        finally:
            if self._tmp is not None:
                if self.frames:
                    os.replace(self._tmp, self.target.path)
                else:
                    self._tmp.unlink(missing_ok=True)
                    logger.debug("no frames were logged; %s not created", self.target.path)
                self._tmp = None

    def _close_connection(self, rec) -> None:
        """Send what is buffered to the viewer, waiting at most FLUSH_TIMEOUT seconds: rerun-sdk's own
        flush waits for ever when the viewer stopped reading (its timeout does not always apply)."""
        def finish():
            try:
                rec.flush(timeout_sec=FLUSH_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 (reported below)
                logger.debug("flush to %s: %s", self.target.url, exc)
            rec.disconnect()

        done = threading.Thread(target=finish, name="walkcut-rerun-close", daemon=True)
        done.start()
        done.join(FLUSH_TIMEOUT + 1.0)
        if done.is_alive():
            logger.warning("the Rerun viewer at %s did not take all the data within %.0f s; it may miss the "
                           "last frames", self.target.url, FLUSH_TIMEOUT)
            self._rr.unregister_shutdown()  # its exit handler would wait for ever on the same data

    # --- logging --------------------------------------------------------------------------------
    def _colors(self, n: int) -> np.ndarray:
        if self.wrap is None:
            return palette(n)
        return palette(self.wrap)[np.arange(n) % self.wrap]

    def _annotate(self, top: int) -> None:
        """Log (again, static) an annotation context covering ids 0..top when it does not yet."""
        if top < self._classes:
            return
        n = max(64, 1 << int(top).bit_length())  # doubling: re-logged O(log ids) times
        colors = self._colors(n)
        rr = self._rr
        self._rec.log("image", rr.AnnotationContext(
            [rr.AnnotationInfo(id=k, label=f"id {k}", color=tuple(int(c) for c in colors[k])) for k in range(n)]),
            static=True)
        self._classes = n

    def log(self, index: int, image_rgb: np.ndarray, ids: np.ndarray, timings: dict | None = None, *,
            time=None, name: str | None = None) -> None:
        """Log one frame: ``image_rgb`` ((H, W, 3) uint8), ``ids`` ((H, W) non-negative ints),
        ``timings`` (seconds per stage) at sequence ``index`` and, when given, ``time`` (seconds:
        a duration, or a timestamp from :data:`EPOCH_SECONDS` on; or a datetime) and ``name``
        (where the image came from, as a text entry on ``source``)."""
        if self._rec is None:
            raise RuntimeError("RerunLog.log() called outside its `with` block")
        if ids.shape != image_rgb.shape[:2]:
            raise ValueError(f"ids {ids.shape} and image {image_rgb.shape[:2]} differ in size")
        rr, rec = self._rr, self._rec
        top = int(ids.max()) if ids.size else 0
        self._annotate(top)
        rec.set_time(self.timeline, sequence=int(index))
        if time is not None:
            kwargs = _time_arguments(time)
            rec.set_time("capture_time" if "timestamp" in kwargs else "video_time", **kwargs)
        if self.jpeg_quality is None:
            rec.log("image", rr.Image(image_rgb))
        else:
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, int(self.jpeg_quality)])
            if not ok:
                raise RuntimeError(f"JPEG encoding failed for a frame of shape {image_rgb.shape}")
            rec.log("image", rr.EncodedImage(contents=jpeg.tobytes(), media_type="image/jpeg"))
        ids16 = ids.astype(np.uint16) if top < 65536 else np.minimum(ids, 65535).astype(np.uint16)
        rec.log("image/segmentation", rr.SegmentationImage(ids16, opacity=0.5))
        rec.log("segments", rr.Scalars(float(np.count_nonzero(np.bincount(ids16.ravel())))))
        if name is not None:
            rec.log("source", rr.TextLog(name))
        for stage, seconds in (timings or {}).items():
            # End-to-end latency (queueing included) is seconds where stages are milliseconds: its own plot.
            rec.log("latency" if stage == "latency" else f"timings/{stage}", rr.Scalars(1e3 * float(seconds)))
        self.frames += 1

    def write_frame(self, tracked, picture_bgr=None) -> None:
        """A :class:`~walkcut.runtime.video.frames.TrackedFrame` from the video pipeline (its sink
        protocol); its time comes from :attr:`clock`."""
        frame = tracked.frame
        stamp = self.clock(frame.index) if self.clock is not None else None
        self.log(frame.index, frame.rgb, tracked.ids, tracked.timings, time=stamp)
