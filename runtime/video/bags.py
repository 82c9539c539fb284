"""ROS bags in and out of the video pipeline: a frame reader and a finalising writer.

Beside the video-file pair of :mod:`walkcut.runtime.video.io`, chosen by the command from the input
and output kinds; the pipeline between them is the same (workers, engine stage, tracking,
``--max-latency``).

* :class:`BagReader`: one image topic of a ROS 2 bag (a folder with ``metadata.yaml``, or one
  ``.mcap`` / ``.db3`` storage file) or of a ROS 1 ``.bag`` file, as frames in log-time order, each
  carrying its header stamp, frame id and log time (:class:`FrameInfo`). ``sensor_msgs/msg/Image``
  (:data:`ENCODINGS`) and ``sensor_msgs/msg/CompressedImage`` (what OpenCV decodes: JPEG, PNG, ...).
  A message that cannot be decoded is skipped and named in ``failed``; the next one goes on.
* :class:`BagWriter`: a new ROS 2 bag in MCAP storage (a folder, or a single ``.mcap`` file) holding
  per frame ``<topic>/walkcut/labels`` (``sensor_msgs/msg/Image``, mono16: the tracked ids) and
  ``<topic>/walkcut/overlay`` (``sensor_msgs/msg/CompressedImage``, JPEG), with the input frame's
  stamp and frame id, logged at the input message's log time; optionally the input topics, copied
  as they are read (converted from ROS 1 when the input is a ROS 1 bag). Like the video writer it
  writes under a temporary name beside the output and renames it when finalised, on every exit path:
  the output is a finalised bag holding every frame written, or absent (no frames).

The ``rosbags`` package (the ``ros`` extra: ``pip install "walkcut[ros]"``) is imported here only,
lazily, inside these classes: the runtime without it still imports, and asking for a bag without it
raises :class:`BagError` with the fix.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from walkcut.runtime.video.frames import Frame, FrameInfo
from walkcut.runtime.video.io import VideoInput

logger = logging.getLogger(__name__)

#: How to install what bags need.
ROS_EXTRA = 'pip install "walkcut[ros]"'
#: Inputs that are bags by name (a folder is a bag when it holds metadata.yaml).
BAG_SUFFIXES = (".mcap", ".db3", ".bag")
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED)
#: ``sensor_msgs/msg/Image`` encodings read: channels, bytes per channel, and the OpenCV conversion
#: to RGB (None: already RGB). 16-bit data keeps its 8 most significant bits (a fixed scale, so the
#: same scene gives the same picture in every frame). Bayer names follow ROS (the first row's first
#: two pixels); OpenCV names the same mosaics by the second row's second and third pixels.
ENCODINGS = {
    "rgb8": (3, 1, None),
    "bgr8": (3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": (4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": (1, 1, cv2.COLOR_GRAY2RGB),
    "mono16": (1, 2, cv2.COLOR_GRAY2RGB),
    "bayer_rggb8": (1, 1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, 1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, 1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, 1, cv2.COLOR_BayerGB2RGB),
    "bayer_rggb16": (1, 2, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr16": (1, 2, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg16": (1, 2, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg16": (1, 2, cv2.COLOR_BayerGB2RGB),
}
#: Quality of the overlay JPEGs written (OpenCV's default, 95, makes files a third larger for no
#: visible gain on a flat-coloured overlay).
OVERLAY_JPEG_QUALITY = 90


class BagError(ValueError):
    """A bag cannot be read, written or used as asked; the message names the problem and the fix."""


class FrameDecodeError(ValueError):
    """One image message cannot be turned into a picture (its frame is skipped and named)."""


def _require_rosbags() -> None:
    try:
        import rosbags  # noqa: F401
    except ImportError:
        raise BagError(f"ROS bags need the rosbags package, which is not installed: {ROS_EXTRA}") from None


def is_bag(text) -> bool:
    """Whether ``text`` names a bag: a ``.mcap``/``.db3``/``.bag`` file or a folder with ``metadata.yaml``."""
    path = Path(str(text))
    return path.suffix.lower() in BAG_SUFFIXES or (path.is_dir() and (path / "metadata.yaml").is_file())


def stamp_ns(stamp) -> int:
    """A ``builtin_interfaces/msg/Time`` in nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


# --- messages -> pictures ------------------------------------------------------------------------

def image_to_rgb(msg) -> np.ndarray:
    """A ``sensor_msgs/msg/Image`` as an (H, W, 3) uint8 RGB array (raises FrameDecodeError)."""
    encoding = str(msg.encoding).lower()
    if encoding not in ENCODINGS:
        raise FrameDecodeError(f"encoding {msg.encoding!r} is not read (read: {', '.join(ENCODINGS)})")
    channels, width_bytes, code = ENCODINGS[encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * channels * width_bytes
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if h <= 0 or w <= 0 or step < row or data.size < step * h:
        raise FrameDecodeError(f"{encoding} image of {w} x {h} with step {step} needs {step * h} bytes, "
                               f"holds {data.size}")
    pixels = data[: step * h].reshape(h, step)[:, :row]
    if width_bytes == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        pixels = (np.ascontiguousarray(pixels).view(dtype) >> 8).astype(np.uint8)
    pixels = pixels.reshape(h, w, channels) if channels > 1 else pixels.reshape(h, w)
    if code is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(np.ascontiguousarray(pixels), code)


def compressed_to_rgb(msg) -> np.ndarray:
    """A ``sensor_msgs/msg/CompressedImage`` (what OpenCV decodes) as (H, W, 3) uint8 RGB."""
    if "compresseddepth" in str(msg.format).lower():
        raise FrameDecodeError(f"format {msg.format!r} (a depth map) is not read; give a colour or mono "
                               f"image topic")
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise FrameDecodeError(f"{data.size} bytes of {msg.format or 'compressed'} data that OpenCV cannot "
                               f"decode (corrupt?)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def message_to_rgb(msg, msgtype: str) -> np.ndarray:
    return image_to_rgb(msg) if msgtype == IMAGE else compressed_to_rgb(msg)


# --- reading -------------------------------------------------------------------------------------

class BagReader:
    """One image topic of a bag as frames (:class:`Frame`, RGB, with :class:`FrameInfo`).

    Parameters
    ----------
    path : str or Path
        A ROS 2 bag folder (with ``metadata.yaml``), an ``.mcap`` or ``.db3`` file, or a ROS 1 ``.bag``.
    topic : str or None
        The image topic. ``None`` (or a topic that is not there, or not images) raises
        :class:`BagError` listing the bag's image topics and their message counts.
    live : bool, default False
        Pace as a live source (drop frames when the pipeline falls behind); a bag is a file.

    Notes
    -----
    Opening reads the bag's index and deserialises the topic's first message, so a bag that does not
    open, a wrong topic and an encoding that is not read are refused before any work. Later messages
    that cannot be decoded are skipped and listed in :attr:`failed` as ``(stamp, reason)``; frame
    indices stay consecutive over the decoded frames. Messages of the topics given to
    :meth:`copy_topics` are handed to a callback as they are read.
    """

    def __init__(self, path, topic: str | None, *, live: bool = False) -> None:
        _require_rosbags()
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"{self.path}: no such file or folder")
        self.topic = topic
        self.lost = False
        self.failed: list[tuple[str, str]] = []
        self._copy: tuple[list, object] | None = None
        try:
            # ROS 2 bags recorded before Iron carry no message definitions: read them with Humble's
            # (ROS 1 bags and later ROS 2 bags bring their own, which take precedence).
            self._reader = AnyReader([self.path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
            self._reader.open()
        except Exception as exc:  # noqa: BLE001 (whatever a damaged file raises: one line with the fix)
            raise BagError(f"{self.path}: not a bag that can be read ({_first_line(exc)}); is it truncated or "
                           f"corrupt? {_repair_hint(self.path)}") from None
        try:
            self.connections = self._image_connections(topic)
            self.msgtype = self.connections[0].msgtype
            self.count = sum(c.msgcount for c in self.connections)
            self.frame_count = self.count  # as the video reader's: what the bag announces
            self._check_first_message()
        except BaseException:
            self.close()
            raise
        self.source = VideoInput(str(self.path), bool(live), f"{self.path} {topic}")
        span = self._reader.duration / 1e9
        fps = (self.count - 1) / span if self.count > 1 and span > 0 else 0.0
        self.fps = fps if 0 < fps <= 240 else 25.0
        self.size = None  # each frame says its own (a video writer takes the first one's)

    def image_topics(self) -> dict[str, tuple[str, int]]:
        """``{topic: (short type name, message count)}`` of the bag's image topics."""
        return {name: (info.msgtype.rsplit("/", 1)[-1], info.msgcount)
                for name, info in self._reader.topics.items() if info.msgtype in IMAGE_TYPES}

    def _image_connections(self, topic: str | None) -> list:
        images = self.image_topics()
        listing = (", ".join(f"{name} ({n} {kind})" for name, (kind, n) in images.items()) if images
                   else "none")
        if topic is None:
            raise BagError(f"{self.path}: give --topic; its image topics: {listing}")
        connections = [c for c in self._reader.connections if c.topic == topic]
        if not connections:
            raise BagError(f"{self.path} has no topic {topic!r}; its image topics: {listing}")
        kinds = {c.msgtype for c in connections}
        if not kinds <= set(IMAGE_TYPES):
            raise BagError(f"{topic} holds {', '.join(sorted(kinds))} messages, not {IMAGE} or {COMPRESSED}; "
                           f"image topics of {self.path}: {listing}")
        if len(kinds) > 1:
            raise BagError(f"{topic} mixes {' and '.join(sorted(kinds))} messages; give a topic of one type")
        return connections

    def _check_first_message(self) -> None:
        """Refuse an encoding that is not read now (exit 2), not as 300 failed frames."""
        messages = self._reader.messages(connections=self.connections)
        try:
            first = next(messages, None)
        except Exception as exc:  # noqa: BLE001 (a damaged file)
            raise BagError(f"{self.path}: reading {self.topic} failed ({_first_line(exc)}); is the bag "
                           f"corrupt? {_repair_hint(self.path)}") from None
        finally:
            messages.close()
        if first is None:
            raise BagError(f"{self.topic} in {self.path} holds no messages")
        connection, _, raw = first
        try:
            msg = self._reader.deserialize(raw, connection.msgtype)
        except Exception as exc:  # noqa: BLE001
            raise BagError(f"{self.topic}: its first message cannot be read ({_first_line(exc)}); "
                           f"is the bag corrupt?") from None
        if connection.msgtype == IMAGE and str(msg.encoding).lower() not in ENCODINGS:
            raise BagError(f"{self.topic}: image encoding {msg.encoding!r} is not read; read: "
                           f"{', '.join(ENCODINGS)} (or a CompressedImage topic)")
        if connection.msgtype == COMPRESSED and "compresseddepth" in str(msg.format).lower():
            raise BagError(f"{self.topic}: compressed depth images ({msg.format!r}) are not read; give "
                           f"a colour or mono image topic")

    def copy_topics(self, topics, callback) -> list:
        """Hand every message of ``topics`` (names; empty: every topic) to ``callback(connection,
        log_time_ns, raw)`` while reading frames. Returns the connections that will be copied."""
        wanted = set(topics)
        have = {c.topic for c in self._reader.connections}
        if missing := sorted(wanted - have):
            raise BagError(f"--copy-topics: {self.path} has no topic {', '.join(missing)}; its topics: "
                           f"{', '.join(sorted(have))}")
        connections = [c for c in self._reader.connections if not wanted or c.topic in wanted]
        self._copy = (connections, callback)
        return connections

    @property
    def anyreader(self):
        """The open ``rosbags.highlevel.AnyReader`` (its typestore converts copied messages)."""
        return self._reader

    def frames(self):
        copied, callback = self._copy or ([], None)
        copy_ids = {(c.id, id(c.owner)) for c in copied}
        image_ids = {(c.id, id(c.owner)) for c in self.connections}
        wanted = list(self.connections) + [c for c in copied if (c.id, id(c.owner)) not in image_ids]
        index = 0
        for connection, log_time, raw in self._reader.messages(connections=wanted):
            key = (connection.id, id(connection.owner))
            if key in copy_ids:
                callback(connection, log_time, raw)
            if key not in image_ids:
                continue
            try:
                msg = self._reader.deserialize(raw, connection.msgtype)
            except Exception as exc:  # noqa: BLE001 (a damaged message: skipped and named)
                self.failed.append((f"logged at {FrameInfo(log_time).name}", _first_line(exc)))
                continue
            info = FrameInfo(stamp_ns(msg.header.stamp), str(msg.header.frame_id), int(log_time))
            try:
                rgb = message_to_rgb(msg, connection.msgtype)
            except FrameDecodeError as exc:
                self.failed.append((info.name, str(exc)))
                continue
            yield Frame(index, rgb, time.perf_counter(), info)
            index += 1

    def close(self) -> None:
        if self._reader.stack is not None:
            self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- writing -------------------------------------------------------------------------------------

class BagWriter:
    """A new ROS 2 bag (MCAP storage) of labels and overlays, finalised on every exit path.

    Parameters
    ----------
    path : str or Path
        ``NAME.mcap``: one MCAP file; anything else: a bag folder ``NAME/`` (``metadata.yaml`` and
        ``NAME.mcap``). Must not exist (the command removes an old one for ``--overwrite``).
    topic : str
        The input image topic; the outputs are ``<topic>/walkcut/labels`` and ``.../overlay``.

    Notes
    -----
    The bag is written by ``rosbags`` inside ``.NAME.PID.part/`` beside ``path`` (zstd-compressed
    chunks); ``__exit__`` writes its index, summary and ``metadata.yaml`` and renames it onto
    ``path``, whatever the exit. With no frame written, nothing is left. SIGINT and SIGTERM that
    arrive while it finalises are held until it is done. :meth:`write_frame` (the encoder thread)
    and the copies (the reader thread) are serialised by one lock.
    """

    def __init__(self, path, topic: str) -> None:
        _require_rosbags()
        self.path = Path(path)
        self.topic = topic
        self.labels_topic = f"{topic.rstrip('/')}/walkcut/labels"
        self.overlay_topic = f"{topic.rstrip('/')}/walkcut/overlay"
        self.frames = 0
        self.copied = 0
        self._lock = threading.Lock()
        self._writer = None
        self._tmp: Path | None = None
        self._copy_connections: dict = {}
        self._converters: dict = {}

    @property
    def single_file(self) -> bool:
        return self.path.suffix.lower() == ".mcap"

    def __enter__(self) -> BagWriter:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
        from rosbags.typesys import Stores, get_typestore

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.parent / f".{self.path.name}.{os.getpid()}.part"
        shutil.rmtree(self._tmp, ignore_errors=True)  # a leftover of this pid: never a user's file
        self._tmp.mkdir()
        name = self.path.stem if self.single_file else self.path.name
        try:
            self.typestore = get_typestore(Stores.LATEST)
            self._writer = Writer(self._tmp / name, version=9, storage_plugin=StoragePlugin.MCAP)
            # zstd chunks: 101 CamVid frames at 480 x 360 take 4.5 MB (ids and JPEG overlays); their raw
            # mono16 id maps alone are 35 MB (bench/bench_bags.py, writer CPU in bench/RESULTS_runtime.md).
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
            self._writer.open()
            self._labels = self._writer.add_connection(self.labels_topic, IMAGE, typestore=self.typestore)
            self._overlay = self._writer.add_connection(self.overlay_topic, COMPRESSED, typestore=self.typestore)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        return self

    def copy_from(self, reader: BagReader, topics=()) -> None:
        """Copy ``topics`` (empty: all) of ``reader`` into this bag as they are read; ROS 1 messages
        are converted to ROS 2 (rosbags' converter). The walkcut output topics are never copied over
        the ones this run writes."""
        from rosbags.convert.converter import create_connections_converters

        own = {self.labels_topic, self.overlay_topic}
        skipped = sorted({t for t in topics if t in own})
        if skipped:
            raise BagError(f"--copy-topics: {', '.join(skipped)} is what this run writes; leave it out")

        def copy(connection, log_time, raw) -> None:
            key = (connection.id, id(connection.owner))
            if key not in self._copy_connections:
                return  # an earlier run's walkcut output in the input (all topics copied)
            with self._lock:
                if self._writer is not None:
                    self._writer.write(self._copy_connections[key], log_time,
                                       self._converters[connection.msgtype](raw))
                    self.copied += 1

        connections = reader.copy_topics(topics, copy)
        keep = [c for c in connections if c.topic not in own]
        if len(keep) < len(connections):
            logger.warning("--copy-topics: the input already holds %s; not copied (this run writes them anew)",
                           " and ".join(sorted(own)))
        # The converter prints the types it migrates; that goes to the log, not to stdout.
        printed = io.StringIO()
        with self._lock, contextlib.redirect_stdout(printed):
            connmap, self._converters = create_connections_converters(keep, self.typestore, reader.anyreader,
                                                                      self._writer)
        for line in printed.getvalue().splitlines():
            logger.info("--copy-topics: %s", line)
        self._copy_connections = {(cid, id(owner)): conn for (cid, owner), conn in connmap.items()}

    def write_frame(self, tracked, picture_bgr: np.ndarray) -> None:
        """Write one frame's tracked ids (mono16) and overlay (JPEG), with its stamp and frame id
        (``tracked``: a :class:`~walkcut.runtime.video.frames.TrackedFrame`)."""
        info, ids = tracked.frame.info, tracked.ids
        if info is None:
            raise ValueError("a bag output needs frames read from a bag (their stamps and frame ids)")
        types = self.typestore.types
        seconds, nanoseconds = divmod(info.stamp_ns, 1_000_000_000)
        header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=seconds,
                                                                                          nanosec=nanoseconds),
                                              frame_id=info.frame_id)
        h, w = ids.shape
        labels = np.ascontiguousarray(np.minimum(ids, 65535), dtype="<u2")
        labels_msg = types[IMAGE](header=header, height=h, width=w, encoding="mono16", is_bigendian=0, step=2 * w,
                                  data=labels.reshape(-1).view(np.uint8))
        ok, jpeg = cv2.imencode(".jpg", picture_bgr, [cv2.IMWRITE_JPEG_QUALITY, OVERLAY_JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode the overlay of {info.name} as JPEG")
        overlay_msg = types[COMPRESSED](header=header, format="jpeg", data=jpeg.reshape(-1))
        labels_raw = self.typestore.serialize_cdr(labels_msg, IMAGE)
        overlay_raw = self.typestore.serialize_cdr(overlay_msg, COMPRESSED)
        with self._lock:
            if self._writer is None:
                raise RuntimeError("BagWriter.write_frame() called outside its `with` block")
            self._writer.write(self._labels, info.log_time_ns, labels_raw)
            self._writer.write(self._overlay, info.log_time_ns, overlay_raw)
            self.frames += 1

    def __exit__(self, *exc) -> None:
        with _signals_held(), self._lock:
            writer, self._writer = self._writer, None
            try:
                if self.frames:
                    writer.close()  # index, summary, footer, metadata.yaml: now a readable bag
                    self._publish()
                else:
                    writer.abort()
                    logger.warning("no frames were written; %s not created", self.path)
            finally:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def _publish(self) -> None:
        """Rename the finalised bag onto ``path`` (an old one, allowed by --overwrite, goes last)."""
        name = self.path.stem if self.single_file else self.path.name
        made = self._tmp / name / f"{name}.mcap" if self.single_file else self._tmp / name
        if self.path.exists() or self.path.is_symlink():
            os.replace(self.path, self._tmp / "replaced")  # removed with the temporary folder
        os.replace(made, self.path)


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT and SIGTERM while a bag is finalised; deliver the first one afterwards (main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if received:
            signal.raise_signal(received[0])


def _repair_hint(path: Path) -> str:
    """How a recording cut short is usually repaired, by the tools of its format."""
    suffix = path.suffix.lower()
    if suffix == ".bag":
        return "A ROS 1 bag cut short can be repaired with `rosbag reindex`"
    if suffix == ".db3":
        return "An SQLite storage file can be salvaged with `sqlite3 FILE .recover`"
    return "An MCAP file cut short can be repaired with `mcap recover` (the MCAP command line tool)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
