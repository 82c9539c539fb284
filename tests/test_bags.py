"""ROS bags in and out of `walkcut video` (issue 22): bags written here with rosbags (ROS 2 MCAP and
SQLite, ROS 1), raw and compressed images; the output read back by rosbags and by the mcap reader."""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rosbags", reason="ROS bag support needs the ros extra")
from rosbags.highlevel import AnyReader
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin, Writer as Writer2
from rosbags.typesys import Stores, get_typestore
from walkcut.runtime.video.bags import ENCODINGS, BagError, BagReader, image_to_rgb
from walkcut.runtime.video.frames import FrameInfo

from walkcut.cli import main

TOPIC = "/camera/image_raw"
LABELS, OVERLAY = f"{TOPIC}/walkcut/labels", f"{TOPIC}/walkcut/overlay"
T0 = 1_700_000_000 * 10**9 + 123  # header stamps: not the log times, not whole seconds
#: Same options for the bag run and its reference run on a video file; one worker so that warm starts
#: follow the same frame order in both.
OPTIONS = ["--grid", "8", "--workers", "1", "--threads", "--label-side", "0"]


def scene(t: int, h: int = 72, w: int = 96) -> np.ndarray:
    """RGB frame: two colour regions and a block sliding right (scaled to the frame size)."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (40, 160, 40)
    img[:, : w // 3] = (200, 40, 40)
    x0 = (w * (20 + 2 * t) // 96) % (w - w // 3)
    img[h // 4 : 3 * h // 4, x0 : x0 + w // 3] = (30, 30, 220)
    return img


def stamp(i: int) -> int:
    return T0 + i * 33_333_333


def frame_id(i: int) -> str:
    return f"cam_{'left' if i % 2 else 'right'}"


def image_message(ts, rgb: np.ndarray, encoding: str, i: int):
    """A sensor_msgs Image or CompressedImage of ``rgb`` (``encoding``: an Image encoding, or jpeg/png)."""
    types = ts.types
    sec, nsec = divmod(stamp(i), 10**9)
    header_fields = {"stamp": types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), "frame_id": frame_id(i)}
    if "seq" in {f for f in types["std_msgs/msg/Header"].__dataclass_fields__}:
        header_fields["seq"] = i
    header = types["std_msgs/msg/Header"](**header_fields)
    if encoding in ("jpeg", "png"):
        ok, data = cv2.imencode(f".{'jpg' if encoding == 'jpeg' else 'png'}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert ok
        return "sensor_msgs/msg/CompressedImage", types["sensor_msgs/msg/CompressedImage"](
            header=header, format=encoding, data=data.reshape(-1))
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)}[encoding]
    pixels = np.ascontiguousarray(pixels)
    h, w = pixels.shape[:2]
    return "sensor_msgs/msg/Image", types["sensor_msgs/msg/Image"](
        header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=pixels.strides[0],
        data=pixels.reshape(-1))


def write_bag(path: Path, frames, *, kind: str = "mcap", encoding: str = "rgb8", chatter: bool = True) -> Path:
    """A bag of ``frames`` (RGB) on TOPIC, plus a std_msgs/String topic /chatter.

    ``kind``: ``mcap``/``sqlite`` (ROS 2 bag folders), ``mcap-file``/``db3-file`` (their one storage
    file alone), ``ros1`` (a ROS 1 .bag). Log times are the stamps plus 5 ms.
    """
    ros1 = kind == "ros1"
    ts = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.LATEST)
    msgtype = image_message(ts, frames[0], encoding, 0)[0]
    folder = path if kind in ("mcap", "sqlite", "ros1") else path.parent / f"{path.stem}_bag"
    if ros1:
        writer = Writer1(folder)
    else:
        plugin = StoragePlugin.SQLITE3 if kind in ("sqlite", "db3-file") else StoragePlugin.MCAP
        writer = Writer2(folder, version=9, storage_plugin=plugin)
    serialize = ts.serialize_ros1 if ros1 else ts.serialize_cdr
    with writer:
        images = writer.add_connection(TOPIC, msgtype, typestore=ts)
        talk = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=ts) if chatter else None
        for i, rgb in enumerate(frames):
            _, msg = image_message(ts, rgb, encoding, i)
            writer.write(images, stamp(i) + 5_000_000, serialize(msg, msgtype))
            if talk is not None and i % 3 == 0:
                text = ts.types["std_msgs/msg/String"](data=f"hello {i}")
                writer.write(talk, stamp(i) + 1_000_000, serialize(text, "std_msgs/msg/String"))
    if folder != path:  # keep the storage file only
        (storage,) = [p for p in folder.iterdir() if p.suffix in (".mcap", ".db3")]
        storage.rename(path)
        shutil.rmtree(folder)
    return path


def read_back(out: Path, topic: str):
    """``[(log_time, stamp_ns, frame_id, message)]`` of ``topic`` in ``out``, read by rosbags."""
    with AnyReader([out]) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        rows = []
        for conn, t, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            rows.append((t, msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, msg.header.frame_id, msg))
        return rows


def read_with_mcap(out: Path) -> dict[str, list]:
    """Topic -> decoded messages, read by the mcap package's ROS 2 reader (not rosbags)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    file = out if out.suffix == ".mcap" else next(out.glob("*.mcap"))
    topics: dict[str, list] = {}
    with file.open("rb") as f:
        for _, channel, _, msg in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            topics.setdefault(channel.topic, []).append(msg)
    return topics


def labels_of(msg) -> np.ndarray:
    assert msg.encoding == "mono16" and msg.is_bigendian == 0 and msg.step == 2 * msg.width
    return np.frombuffer(bytes(msg.data), "<u2").reshape(msg.height, msg.width)


#: Reference labels already computed, by the frames' digest (the rgb8 and bgr8 bags share theirs).
_REFERENCES: dict[str, list[np.ndarray]] = {}


def reference_labels(tmp_path: Path, frames, options=OPTIONS) -> list[np.ndarray]:
    """`walkcut video` on the same frames in a lossless (FFV1) video file: the label PNGs."""
    digest = hashlib.sha256(b"".join(f.tobytes() for f in frames) + " ".join(options).encode()).hexdigest()
    if digest not in _REFERENCES:
        _REFERENCES[digest] = _reference_labels(tmp_path, frames, options)
    return _REFERENCES[digest]


def _reference_labels(tmp_path: Path, frames, options) -> list[np.ndarray]:
    clip, labels = tmp_path / "reference.mkv", tmp_path / "reference_labels"
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"FFV1"), 30, (w, h))
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    assert main(["video", str(clip), "--labels-dir", str(labels), *options]) == 0
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(labels.glob("*.png"))]


def decoded(frames, encoding: str) -> list[np.ndarray]:
    """The frames as the bag reader sees them: JPEG's losses included, mono as grey RGB."""
    if encoding == "jpeg":
        return [cv2.cvtColor(cv2.imdecode(cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1],
                                          cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for f in frames]
    if encoding == "mono8":
        return [cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB) for f in frames]
    return list(frames)


def check_round_trip(tmp_path: Path, frames, kind: str, encoding: str, out_name: str = "out") -> Path:
    """The whole target for one bag: every frame once, in order, stamps and frame ids kept, labels as
    `walkcut video` gives on the same frames from a file, readable by rosbags and by mcap."""
    suffix = {"mcap-file": ".mcap", "db3-file": ".db3", "ros1": ".bag"}.get(kind, "")
    bag = write_bag(tmp_path / f"in{suffix}", frames, kind=kind, encoding=encoding)
    out = tmp_path / out_name
    assert main(["video", str(bag), "--topic", TOPIC, "--out", str(out), *OPTIONS]) == 0
    n = len(frames)
    labels, overlays = read_back(out, LABELS), read_back(out, OVERLAY)
    assert [r[1] for r in labels] == [stamp(i) for i in range(n)] == [r[1] for r in overlays]
    assert [r[2] for r in labels] == [frame_id(i) for i in range(n)] == [r[2] for r in overlays]
    assert [r[0] for r in labels] == [stamp(i) + 5_000_000 for i in range(n)]  # logged with the input
    want = reference_labels(tmp_path, decoded(frames, encoding))
    assert len(want) == n
    for (_, _, _, msg), ref in zip(labels, want):
        np.testing.assert_array_equal(labels_of(msg), ref)
    h, w = frames[0].shape[:2]
    first = cv2.imdecode(np.frombuffer(bytes(overlays[0][3].data), np.uint8), cv2.IMREAD_COLOR)
    assert overlays[0][3].format == "jpeg" and first.shape == (h, w, 3)
    by_mcap = read_with_mcap(out)
    assert set(by_mcap) == {LABELS, OVERLAY}
    assert [m.header.frame_id for m in by_mcap[LABELS]] == [frame_id(i) for i in range(n)]
    np.testing.assert_array_equal(labels_of(by_mcap[LABELS][-1]), want[-1])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    return out


# --- the round trip, small bags (fast suite) -----------------------------------------------------

@pytest.mark.parametrize("kind, encoding, out_name", [
    ("mcap", "rgb8", "out"), ("mcap-file", "jpeg", "out.mcap"), ("sqlite", "bgr8", "out"),
    ("db3-file", "mono8", "out.mcap"), ("ros1", "rgb8", "out"), ("ros1", "png", "out.mcap"),
])
def test_small_bag_round_trip(tmp_path, kind, encoding, out_name):
    check_round_trip(tmp_path, [scene(t) for t in range(8)], kind, encoding, out_name)


@pytest.mark.slow  # 300 frames of 480 x 360, twice (bag and reference) per bag kind
@pytest.mark.parametrize("kind, encoding", [("mcap", "rgb8"), ("sqlite", "jpeg"), ("ros1", "bgr8")])
def test_300_frames_480x360(tmp_path, kind, encoding):
    check_round_trip(tmp_path, [scene(t, 360, 480) for t in range(300)], kind, encoding)


def test_a_bag_without_message_definitions(tmp_path):
    """ROS 2 bags recorded before Iron store no message definitions: read with the Humble types."""
    import sqlite3

    frames = [scene(t) for t in range(3)]
    bag = write_bag(tmp_path / "in", frames, kind="sqlite", chatter=False)
    db = sqlite3.connect(next(bag.glob("*.db3")))
    with db:
        db.execute("DELETE FROM message_definitions")
    db.close()
    with BagReader(bag, TOPIC) as reader:
        got = list(reader.frames())
    assert [f.info.stamp_ns for f in got] == [stamp(i) for i in range(3)]
    np.testing.assert_array_equal(got[2].rgb, frames[2])


def test_worker_processes_keep_the_order_and_the_stamps(tmp_path):
    """The command's default worker kind on this machine class: frames cut in parallel come out in
    input order, each once, with their own stamp and frame id."""
    bag = write_bag(tmp_path / "in.bag", [scene(t) for t in range(12)], kind="ros1", encoding="bgr8")
    out = tmp_path / "out"
    assert main(["video", str(bag), "--topic", TOPIC, "--out", str(out), "--grid", "8", "--workers", "2",
                 "--processes"]) == 0
    labels = read_back(out, LABELS)
    assert [(r[1], r[2]) for r in labels] == [(stamp(i), frame_id(i)) for i in range(12)]


def test_copy_topics_from_ros1_and_ros2(tmp_path, capsys):
    frames = [scene(t) for t in range(6)]
    for kind in ("mcap", "ros1"):
        bag = write_bag(tmp_path / f"in_{kind}{'.bag' if kind == 'ros1' else ''}", frames, kind=kind)
        out = tmp_path / f"out_{kind}.mcap"
        assert main(["video", str(bag), "--topic", TOPIC, "--out", str(out), "--copy-topics", *OPTIONS]) == 0
        with AnyReader([out]) as reader:
            texts = [reader.deserialize(raw, c.msgtype).data
                     for c, _, raw in reader.messages([c for c in reader.connections if c.topic == "/chatter"])]
        assert texts == [f"hello {i}" for i in range(0, 6, 3)]
        images = read_back(out, TOPIC)
        assert [r[1] for r in images] == [stamp(i) for i in range(6)]
        np.testing.assert_array_equal(image_to_rgb(images[3][3]), frames[3])  # converted, same pixels
        assert set(read_with_mcap(out)) == {LABELS, OVERLAY, TOPIC, "/chatter"}
    # Only the listed topics; one that is not there is refused before any work.
    out = tmp_path / "listed.mcap"
    assert main(["video", str(bag), "--topic", TOPIC, "--out", str(out), "--copy-topics", "/chatter", *OPTIONS]) == 0
    with AnyReader([out]) as reader:
        assert {c.topic for c in reader.connections} == {LABELS, OVERLAY, "/chatter"}
    capsys.readouterr()
    rc = main(["video", str(bag), "--topic", TOPIC, "--out", str(tmp_path / "x"), "--copy-topics", "/nope",
               *OPTIONS])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "has no topic /nope" in err[-1] and not (tmp_path / "x").exists()


def test_max_latency_drops_are_named_by_stamp(tmp_path, capsys):
    """Live pacing (--max-latency) on a bag: the same drops as a live video, each named by its stamp."""
    n = 30
    bag = write_bag(tmp_path / "in", [scene(t) for t in range(n)], chatter=False)
    out = tmp_path / "out"
    rc = main(["video", str(bag), "--topic", TOPIC, "--out", str(out), "--max-latency", "1000", *OPTIONS])
    err = capsys.readouterr().err
    assert rc == 0, err
    kept = [r[1] for r in read_back(out, LABELS)]
    assert kept == sorted(set(kept)) and 0 < len(kept) < n  # in order, once each, some dropped
    dropped = [FrameInfo(stamp(i)).name for i in range(n) if stamp(i) not in kept]
    assert f"{len(kept)} frames written of {n} read, {n - len(kept)} dropped" in err
    assert "read, not written: " + ", ".join(dropped[:10]) in err


# --- bad input ----------------------------------------------------------------------------------

def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_topic_missing_wrong_or_not_images(tmp_path, capsys):
    bag = write_bag(tmp_path / "in", [scene(t) for t in range(4)])
    out = tmp_path / "out"
    assert main(["video", str(bag), "--out", str(out)]) == 2
    line = one_error(capsys)
    assert "give --topic" in line and f"{TOPIC} (4 Image)" in line and "/chatter" not in line
    assert main(["video", str(bag), "--topic", "/cam", "--out", str(out)]) == 2
    assert "no topic '/cam'" in one_error(capsys)
    assert main(["video", str(bag), "--topic", "/chatter", "--out", str(out)]) == 2
    line = one_error(capsys)
    assert "std_msgs/msg/String" in line and "not sensor_msgs/msg/Image" in line and TOPIC in line
    assert not out.exists() and not list(tmp_path.glob(".*"))


def test_unsupported_encoding_is_refused_before_any_work(tmp_path, capsys):
    bag = tmp_path / "in"
    ts = get_typestore(Stores.LATEST)
    with Writer2(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=ts)
        _, msg = image_message(ts, scene(0), "rgb8", 0)
        msg.encoding = "yuv422"
        writer.write(conn, 1, ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    assert main(["video", str(bag), "--topic", TOPIC, "--out", str(tmp_path / "out")]) == 2
    line = one_error(capsys)
    assert "'yuv422' is not read" in line and "rgb8" in line and not (tmp_path / "out").exists()
    depth, empty = tmp_path / "depth", tmp_path / "empty"
    with Writer2(depth, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(TOPIC, "sensor_msgs/msg/CompressedImage", typestore=ts)
        _, msg = image_message(ts, scene(0), "png", 0)
        msg.format = "16UC1; compressedDepth"
        writer.write(conn, 1, ts.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
    assert main(["video", str(depth), "--topic", TOPIC, "--out", str(tmp_path / "out")]) == 2
    assert "compressed depth images" in one_error(capsys)
    with Writer2(empty, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        writer.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=ts)
    assert main(["video", str(empty), "--topic", TOPIC, "--out", str(tmp_path / "out")]) == 2
    assert "holds no messages" in one_error(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["mcap-file", "ros1", "db3-file", "mcap"])
def test_truncated_or_corrupt_bag(tmp_path, capsys, kind):
    suffix = {"mcap-file": ".mcap", "ros1": ".bag", "db3-file": ".db3"}.get(kind, "")
    bag = write_bag(tmp_path / f"in{suffix}", [scene(t) for t in range(6)], kind=kind)
    storage = bag if bag.is_file() else next(bag.glob("*.mcap"))
    data = storage.read_bytes()
    storage.write_bytes(data[: len(data) // 2])  # a recording cut short
    out = tmp_path / "out"
    rc = main(["video", str(bag), "--topic", TOPIC, "--out", str(out), *OPTIONS])
    line = one_error(capsys)
    # Each format keeps its index at the end: cut short, it is refused on opening, nothing written.
    assert rc == 2 and "is it truncated or corrupt?" in line and str(bag) in line and not out.exists()
    assert not list(tmp_path.glob(".*"))
    (tmp_path / "junk.mcap").write_bytes(b"not a bag at all")
    assert main(["video", str(tmp_path / "junk.mcap"), "--topic", TOPIC, "--out", str(out)]) == 2
    assert "not a bag that can be read" in one_error(capsys)


def test_damage_found_midway_ends_with_a_finalised_bag_and_exit_1(tmp_path, capsys):
    """A corrupt zstd chunk in the middle: the frames before it are in a finalised bag, exit 1."""
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode

    ts = get_typestore(Stores.LATEST)
    rng = np.random.default_rng(0)
    bag = tmp_path / "in"
    writer = Writer2(bag, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:  # noisy frames of 130 kB: 1 MiB chunks of 8 frames
        conn = writer.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=ts)
        for i in range(24):
            noisy = scene(i, 180, 240) ^ rng.integers(0, 4, (180, 240, 3), dtype=np.uint8)
            writer.write(conn, stamp(i), ts.serialize_cdr(image_message(ts, noisy, "rgb8", i)[1],
                                                          "sensor_msgs/msg/Image"))
    storage = next(bag.glob("*.mcap"))
    data = bytearray(storage.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 2000] = bytes(2000)  # inside the second chunk
    storage.write_bytes(bytes(data))
    out = tmp_path / "out"
    rc = main(["video", str(bag), "--topic", TOPIC, "--out", str(out), *OPTIONS])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "failed: Unable to decompress" in err
    n = len(read_back(out, LABELS))
    assert 0 < n < 24 and f"{n} frames written of {n} read" in err
    assert [r[1] for r in read_back(out, OVERLAY)] == [stamp(i) for i in range(n)]


def test_a_damaged_frame_is_skipped_named_and_exit_1(tmp_path, capsys):
    frames = [scene(t) for t in range(6)]
    bag = tmp_path / "in"
    ts = get_typestore(Stores.LATEST)
    with Writer2(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(TOPIC, "sensor_msgs/msg/CompressedImage", typestore=ts)
        for i, rgb in enumerate(frames):
            _, msg = image_message(ts, rgb, "jpeg", i)
            if i == 3:
                msg.data = msg.data[:40]  # a JPEG cut short: OpenCV cannot decode it
            writer.write(conn, stamp(i), ts.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
    out = tmp_path / "out.mcap"
    rc = main(["video", str(bag), "--topic", TOPIC, "--out", str(out), *OPTIONS])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "5 frames written of 5 read, 0 dropped, 1 failed" in err
    assert f"failed (not decoded, skipped): {FrameInfo(stamp(3)).name} (" in err
    assert [r[1] for r in read_back(out, LABELS)] == [stamp(i) for i in (0, 1, 2, 4, 5)]


def test_output_policy(tmp_path, capsys):
    bag = write_bag(tmp_path / "in", [scene(t) for t in range(3)])
    out = tmp_path / "out"
    assert main(["video", str(bag), "--topic", TOPIC, "--out", str(out), *OPTIONS]) == 0
    capsys.readouterr()
    assert main(["video", str(bag), "--topic", TOPIC, "--out", str(out), *OPTIONS]) == 2
    assert "already exists; add --overwrite" in one_error(capsys)
    assert main(["video", str(bag), "--topic", TOPIC, "--out", str(out), "--overwrite", *OPTIONS]) == 0
    assert len(read_back(out, LABELS)) == 3
    capsys.readouterr()
    # Never the input, not even with --overwrite; never a folder that is not a bag.
    assert main(["video", str(bag), "--topic", TOPIC, "--out", str(bag), "--overwrite"]) == 2
    assert "never replaces an input" in one_error(capsys)
    inner = next(bag.glob("*.mcap"))
    assert main(["video", str(inner), "--topic", TOPIC, "--out", str(inner), "--overwrite"]) == 2
    assert "never replaces an input" in one_error(capsys)
    assert main(["video", str(inner), "--topic", TOPIC, "--out", str(bag), "--overwrite"]) == 2
    assert "would replace the input" in one_error(capsys) and inner.exists()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.txt").write_text("keep me")
    assert main(["video", str(bag), "--topic", TOPIC, "--out", str(docs), "--overwrite"]) == 2
    assert "not a ROS 2 bag" in one_error(capsys) and (docs / "thesis.txt").exists()
    # Kinds that do not go together.
    assert main(["video", str(bag), "--topic", TOPIC, "--out", str(tmp_path / "o.bag")]) == 2
    assert "MCAP storage" in one_error(capsys)
    clip = tmp_path / "c.mkv"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"FFV1"), 10, (96, 72))
    w.write(scene(0))
    w.release()
    assert main(["video", str(clip), "--out", str(tmp_path / "bagout")]) == 2
    assert "needs a ROS bag input" in one_error(capsys)
    assert main(["video", str(clip), "--topic", TOPIC, "--out", str(tmp_path / "o.mp4")]) == 2
    assert "is not a ROS bag" in one_error(capsys)
    assert main(["video", str(bag), "--topic", TOPIC, "--out", str(tmp_path / "o.mp4"), "--copy-topics"]) == 2
    assert "--copy-topics needs a bag --out" in one_error(capsys)


def test_bag_to_video_file_and_labels_dir(tmp_path, capsys):
    frames = [scene(t) for t in range(5)]
    bag = write_bag(tmp_path / "in.bag", frames, kind="ros1")
    out, labels = tmp_path / "o.mp4", tmp_path / "labels"
    assert main(["video", str(bag), "--topic", TOPIC, "--out", str(out), "--labels-dir", str(labels),
                 *OPTIONS]) == 0
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5 and abs(cap.get(cv2.CAP_PROP_FPS) - 30) < 2
    cap.release()
    assert len(list(labels.glob("*.png"))) == 5


def test_the_runtime_imports_without_rosbags():
    """rosbags is imported lazily, inside the bag classes: without the extra the runtime still loads."""
    code = ("import sys; sys.modules['rosbags'] = None\n"
            "import walkcut.runtime.video.bags, walkcut.cli.video\n"
            "assert not [m for m in sys.modules if m.startswith('rosbags.')]")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_missing_rosbags_names_the_extra(tmp_path, capsys, monkeypatch):
    bag = write_bag(tmp_path / "in", [scene(0)])
    monkeypatch.setitem(sys.modules, "rosbags", None)  # import rosbags -> ImportError
    assert main(["video", str(bag), "--topic", TOPIC, "--out", str(tmp_path / "out")]) == 2
    assert 'pip install "walkcut[ros]"' in one_error(capsys)


# --- pictures from messages ---------------------------------------------------------------------

def test_encodings_known_answers():
    ts = get_typestore(Stores.LATEST)
    rgb = scene(0)
    h, w = rgb.shape[:2]

    def msg(encoding, data, step, bigendian=0):
        header = ts.types["std_msgs/msg/Header"](stamp=ts.types["builtin_interfaces/msg/Time"](sec=0, nanosec=0),
                                                 frame_id="")
        return ts.types["sensor_msgs/msg/Image"](header=header, height=h, width=w, encoding=encoding,
                                                 is_bigendian=bigendian, step=step, data=data.reshape(-1))

    np.testing.assert_array_equal(image_to_rgb(msg("rgb8", rgb, 3 * w)), rgb)
    np.testing.assert_array_equal(image_to_rgb(msg("bgr8", rgb[..., ::-1].copy(), 3 * w)), rgb)
    rgba = np.dstack([rgb, np.full((h, w), 7, np.uint8)])
    np.testing.assert_array_equal(image_to_rgb(msg("rgba8", rgba, 4 * w)), rgb)
    padded = np.zeros((h, 3 * w + 8), np.uint8)  # rows padded to a longer step
    padded[:, : 3 * w] = rgb.reshape(h, -1)
    np.testing.assert_array_equal(image_to_rgb(msg("rgb8", padded, 3 * w + 8)), rgb)
    grey = rgb[..., 1]
    for order, dtype in ((0, "<u2"), (1, ">u2")):
        wide = (grey.astype(np.uint16) << 8 | 0x55).astype(dtype)
        got = image_to_rgb(msg("mono16", wide.view(np.uint8), 2 * w, order))
        np.testing.assert_array_equal(got, np.dstack([grey] * 3))
    # Bayer: a flat colour mosaicked in each ROS pattern comes back as that colour.
    flat = np.empty((8, 8, 3), np.uint8)
    flat[:] = (200, 100, 30)
    for pattern in ("rggb", "bggr", "gbrg", "grbg"):
        mosaic = np.empty((8, 8), np.uint8)
        for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            mosaic[dy::2, dx::2] = flat[dy::2, dx::2, "rgb".index(pattern[k])]
        m = msg(f"bayer_{pattern}8", mosaic, 8)
        m.height, m.width = 8, 8
        np.testing.assert_allclose(image_to_rgb(m)[3:5, 3:5].reshape(-1, 3), [(200, 100, 30)] * 4, atol=2)
    assert {"rgb8", "bgr8", "mono8", "mono16", "bayer_rggb8"} <= set(ENCODINGS)
    from walkcut.runtime.video.bags import FrameDecodeError

    with pytest.raises(FrameDecodeError, match="needs"):
        image_to_rgb(msg("rgb8", rgb[:10], 3 * w))


def test_reader_names_frames_by_stamp(tmp_path):
    bag = write_bag(tmp_path / "in", [scene(t) for t in range(3)])
    with BagReader(bag, TOPIC) as reader:
        frames = list(reader.frames())
        assert reader.count == 3 and abs(reader.fps - 30) < 2  # estimated from the whole bag's span
    assert [f.index for f in frames] == [0, 1, 2]
    assert [f.info.stamp_ns for f in frames] == [stamp(i) for i in range(3)]
    assert frames[1].name == f"1700000000.{33_333_333 + 123:09d}"
    with pytest.raises(BagError, match="give --topic"):
        BagReader(bag, None)


# --- interrupted runs ---------------------------------------------------------------------------

@pytest.mark.slow  # a child process that must start, write and be stopped: several seconds each
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_midway_leaves_a_readable_bag(tmp_path, signum):
    frames = [scene(t % 20) for t in range(400)]
    bag = write_bag(tmp_path / "in.mcap", frames, kind="mcap-file", chatter=False)
    out, labels = tmp_path / "out.mcap", tmp_path / "labels"
    proc = subprocess.Popen([sys.executable, "-m", "walkcut", "video", str(bag), "--topic", TOPIC, "--out", str(out),
                             "--labels-dir", str(labels), "--grid", "8", "--workers", "1", "--threads"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and (not labels.exists() or len(list(labels.glob("*.png"))) < 5):
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    written = read_back(out, LABELS)
    n = len(written)
    assert 5 <= n < 400, err
    # Every frame processed before the signal, in order, once; the summary counted the same.
    assert [r[1] for r in written] == [stamp(i) for i in range(n)]
    assert [r[1] for r in read_back(out, OVERLAY)] == [stamp(i) for i in range(n)]
    assert f"{n} frames written" in err
    assert len(read_with_mcap(out)[LABELS]) == n
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
