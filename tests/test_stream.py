"""walkcut.stream: frames pushed by the caller through the video pipeline, ids kept across frames,
timestamps passed through, the same labels as `walkcut video`; the README's rclpy node run on stub
rclpy / cv_bridge modules (ROS 2 is not installable here)."""

from __future__ import annotations

import re
import sys
import types

import cv2
import numpy as np
import pytest

from walkcut.cli import main
from walkcut.stream import StreamResult, StreamSegmenter
from conftest import REPO

#: Blocks of the moving scene: (BGR colour, top-left at t = 0, velocity in px per frame).
BLOCKS = [((220, 40, 40), (10, 10), (1, 3)), ((40, 200, 60), (70, 60), (-1, 2)), ((30, 30, 230), (20, 140), (2, -2))]
SIDE = 40


def moving_scene(t: int, h: int = 120, w: int = 200) -> np.ndarray:
    """BGR frame: a grey ramp and three 40 x 40 blocks, each moving its own way, with a little noise
    (a camera's; perfectly flat regions give the walk nothing to prefer)."""
    img = np.empty((h, w, 3), np.float32)
    img[:] = np.linspace(90, 150, w)[None, :, None]
    for colour, (y, x), (vy, vx) in BLOCKS:
        y, x = y + vy * t, x + vx * t
        img[y:y + SIDE, x:x + SIDE] = colour
    img += np.random.default_rng(t).normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def centres(t: int) -> list[tuple[int, int]]:
    return [(y + vy * t + SIDE // 2, x + vx * t + SIDE // 2) for _, (y, x), (vy, vx) in BLOCKS]


def segment_all(stream: StreamSegmenter, frames, stamps) -> list[StreamResult]:
    out = []
    for stamp, frame in zip(stamps, frames):
        out += stream.push(stamp, frame)
    return out + stream.close()


def test_ids_stay_with_moving_objects_and_timestamps_pass_through():
    frames = [moving_scene(t) for t in range(8)]
    stamps = [(1700000000 + t, 5000 * t) for t in range(8)]  # e.g. (sec, nanosec) of a ROS header
    with StreamSegmenter(color="bgr") as stream:
        results = segment_all(stream, frames, stamps)
    assert [r.index for r in results] == list(range(8))
    assert [r.timestamp for r in results] == stamps
    assert all(r.timestamp is s for r, s in zip(results, stamps))  # untouched, not copied
    ids = np.array([[r.labels[c] for c in centres(t)] for t, r in enumerate(results)])  # (frames, blocks)
    background = {int(r.labels[2, 100]) for r in results}
    assert len(background) == 1, "the background changed id"
    assert (ids == ids[0]).all(), f"block ids changed over frames: {ids.tolist()}"
    assert len(set(ids[0].tolist()) | background) == 4, "blocks and background need distinct ids"
    first = results[0]
    assert first.labels.dtype == np.uint16 and first.labels.shape == frames[0].shape[:2]
    assert first.overlay.shape == frames[0].shape and first.overlay.dtype == np.uint8
    t, labels, overlay = first  # unpacks as (timestamp, labels, overlay)
    assert t == stamps[0] and labels is first.labels and overlay is first.overlay
    assert {"source", "cuts", "upsample", "track", "encode"} <= set(first.timings)
    assert stream.summary.frames_written == 8 and stream.summary.dropped == 0


def test_labels_equal_walkcut_video_on_the_same_frames(tmp_path):
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (200, 120))
    for t in range(10):
        writer.write(moving_scene(t))
    writer.release()
    assert main(["video", str(clip), "--labels-dir", str(tmp_path / "ids"), "--workers", "1", "--threads"]) == 0
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])  # the frames as `walkcut video` decoded them (MJPG is lossy)
    cap.release()
    assert len(frames) == 10
    # RGB in, as a caller with RGB images would push them: the colour order is the stream's job.
    rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]
    with StreamSegmenter() as stream:
        results = segment_all(stream, rgb, [0.1 * t for t in range(10)])
    assert len(results) == 10
    for r in results:
        expected = cv2.imread(str(tmp_path / "ids" / f"{r.index:06d}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(r.labels, expected)
    # The overlay comes back in the order pushed (RGB here): the background is the same grey tinted.
    assert results[0].overlay.shape == rgb[0].shape


def test_an_engine_spec_runs_in_the_model_stage_like_walkcut_video(tmp_path):
    from test_backends import build_fake_model

    from walkcut import source_spec

    model = tmp_path / "fake.onnx"
    build_fake_model(model)
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (200, 120))
    for t in range(4):
        writer.write(moving_scene(t))
    writer.release()
    assert main(["video", str(clip), "--engine", str(model), "--labels-dir", str(tmp_path / "ids"),
                 "--workers", "1", "--threads"]) == 0
    cap = cv2.VideoCapture(str(clip))
    frames = [cap.read()[1] for _ in range(4)]
    cap.release()
    with StreamSegmenter(source_spec(engine=model), color="bgr") as stream:
        results = segment_all(stream, frames, range(4))
    assert stream.pipeline.engine is not None and stream.summary.engine is not None  # the model stage ran
    for r in results:
        np.testing.assert_array_equal(r.labels, cv2.imread(str(tmp_path / "ids" / f"{r.index:06d}.png"),
                                                           cv2.IMREAD_UNCHANGED))


def test_segment_waits_for_its_frame_and_keeps_earlier_results():
    with StreamSegmenter(color="bgr") as stream:
        stream.push("a", moving_scene(0))
        b = stream.segment("b", moving_scene(1))
        assert (b.timestamp, b.index) == ("b", 1)
        rest = stream.close()
    assert [r.timestamp for r in rest] == ["a"]


def test_latest_only_drops_waiting_frames_and_keeps_order():
    frames = [cv2.resize(moving_scene(t), (480, 288)) for t in range(15)]  # slower to cut than to push
    with StreamSegmenter(color="bgr", latest_only=True) as stream:
        results = segment_all(stream, frames, list(range(15)))
    indices = [r.index for r in results]
    assert indices == sorted(set(indices)) and [r.timestamp for r in results] == indices
    assert stream.summary.dropped >= 1 and stream.summary.dropped + len(results) == 15
    assert results[-1].index == 14  # the newest frame is never the one dropped


def test_on_result_gets_every_frame_in_order():
    got = []
    with StreamSegmenter(color="bgr", on_result=got.append) as stream:
        for t in range(4):
            assert stream.push(t, moving_scene(t)) == []
    assert [r.timestamp for r in got] == [0, 1, 2, 3]


def test_bad_input_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="color must be one of rgb, bgr"):
        StreamSegmenter(color="bgra")
    with pytest.raises(ValueError, match="unknown cut option.*max_segment"):
        StreamSegmenter(cut_options={"max_segment": 4})
    with pytest.raises(ValueError, match="unknown preset"):
        StreamSegmenter(preset="nope")
    stream = StreamSegmenter(latest_only=True)
    try:
        with pytest.raises(ValueError, match="uint8"):
            stream.push(0, np.zeros((10, 10, 3), np.float32))
        with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
            stream.push(0, np.zeros((10, 10, 4), np.uint8))
        with pytest.raises(RuntimeError, match="latest_only"):
            stream.segment(0, np.zeros((10, 10, 3), np.uint8))
    finally:
        stream.close()
    with pytest.raises(RuntimeError, match="closed"):
        stream.push(0, moving_scene(0))
    assert stream.frames_pushed == 0  # refused frames were not counted


def test_cut_options_and_grey_input():
    with StreamSegmenter(cut_options={"max_segments": 2}, color="bgr") as stream:
        r = stream.segment(0, cv2.cvtColor(moving_scene(0), cv2.COLOR_BGR2GRAY))
    assert stream.cut_options["max_segments"] == 2 and len(np.unique(r.labels)) <= 2
    assert r.overlay.shape == (120, 200, 3)


# --- the README's rclpy node, run on stubs ----------------------------------------------------------

def readme_ros_example() -> str:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    found = [b for b in blocks if "import rclpy" in b]
    assert len(found) == 1, "the README should hold one rclpy example"
    return found[0]


def ros_stubs(messages, published):
    """Minimal rclpy, rclpy.node, sensor_msgs.msg and cv_bridge: ``spin`` delivers ``messages`` to
    the subscription on ``image``; publishers append to ``published[topic]``."""
    rclpy, node_mod = types.ModuleType("rclpy"), types.ModuleType("rclpy.node")
    sensor_msgs, msg_mod = types.ModuleType("sensor_msgs"), types.ModuleType("sensor_msgs.msg")
    cv_bridge = types.ModuleType("cv_bridge")

    class Image:
        def __init__(self, header=None, data=None, encoding=""):
            self.header, self.data, self.encoding = header, data, encoding

    class Publisher:
        def __init__(self, topic):
            self.topic = topic

        def publish(self, msg):
            published.setdefault(self.topic, []).append(msg)

    class Node:
        def __init__(self, name):
            self.name, self.callbacks = name, {}

        def create_publisher(self, msg_type, topic, qos):
            assert msg_type is Image
            return Publisher(topic)

        def create_subscription(self, msg_type, topic, callback, qos):
            assert msg_type is Image
            self.callbacks[topic] = callback

    class CvBridge:
        def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
            assert desired_encoding == "bgr8"
            return msg.data

        def cv2_to_imgmsg(self, cvim, encoding="passthrough", header=None):
            return Image(header, cvim, encoding)

    def spin(node):
        for msg in messages:
            node.callbacks["image"](msg)

    rclpy.init, rclpy.spin, rclpy.shutdown = (lambda args=None: None), spin, (lambda: None)
    rclpy.node, node_mod.Node = node_mod, Node
    sensor_msgs.msg, msg_mod.Image = msg_mod, Image
    cv_bridge.CvBridge = CvBridge
    return {"rclpy": rclpy, "rclpy.node": node_mod, "sensor_msgs": sensor_msgs, "sensor_msgs.msg": msg_mod,
            "cv_bridge": cv_bridge}, Image


def test_readme_rclpy_node_runs_on_stub_modules(monkeypatch):
    code = readme_ros_example()
    published: dict[str, list] = {}
    headers = [types.SimpleNamespace(stamp=t, frame_id="camera") for t in range(6)]
    messages: list = []  # spin() delivers them; made with the stub's own Image
    modules, Image = ros_stubs(messages, published)
    messages += [Image(h, moving_scene(t), "bgr8") for t, h in enumerate(headers)]
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    exec(compile(code, "README.md (rclpy example)", "exec"), {"__name__": "__main__"})
    labels, overlays = published["labels"], published["overlay"]
    assert 1 <= len(labels) == len(overlays) <= len(headers)
    got = [m.header for m in labels]
    assert all(any(g is h for h in headers) for g in got)  # the input's header, passed through
    assert [h.stamp for h in got] == sorted(h.stamp for h in got) and got[-1] is headers[-1]
    assert all(m.encoding == "mono16" and m.data.dtype == np.uint16 for m in labels)
    assert all(m.encoding == "bgr8" and m.data.shape == (120, 200, 3) for m in overlays)
