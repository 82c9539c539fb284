"""Throughput of `walkcut video` from a ROS bag against the same frames in an .mp4 (issue 22: >= 0.9x).

The frames: the CamVid val clip of ``bench_video.py`` (101 consecutive frames at 480 x 360, built
under /tmp; the data is not redistributable) looped ``--loops`` times, or a synthetic clip
(``--synthetic``: a moving scene, no data needed). The .mp4 is decoded once and its frames written
into a ROS 2 bag (MCAP) as ``sensor_msgs/msg/Image`` rgb8, and, with ``--compressed``, into a second
bag as JPEG ``CompressedImage``: every run segments the same pixels.

Then the real command, alternating so that both see the same machine load::

    walkcut video CLIP.mp4 --out OUT.mp4 [options]
    walkcut video BAG --topic /camera/image_raw --out OUT_BAG [options]     (x --repeats)

and it prints each run's FPS (the command's own summary: frames written / seconds of the pipeline,
model loading excluded), the median per input kind, the ratio bag / mp4, and the load average. On a
shared machine the wall-clock FPS follows the load more than the input kind, so it also prints what
the load hardly moves: the CPU seconds per frame of each run (user + system of the child process,
start-up included), and the CPU cost per frame of the only parts that differ, the frame reader and
the writer, measured in this process (``time.process_time``: OpenCV's FFmpeg threads included).

    python bench/bench_bags.py                      # defaults, 2 repeats
    python bench/bench_bags.py --options="--workers 1 --threads" --repeats 3 --compressed
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = Path("/tmp/walkcut_bench_bags")
TOPIC = "/camera/image_raw"


def synthetic_clip(n: int = 150, w: int = 480, h: int = 360) -> Path:
    import cv2
    import numpy as np

    SCRATCH.mkdir(parents=True, exist_ok=True)
    out = SCRATCH / f"synthetic_{w}x{h}_{n}.mp4"
    if out.exists():
        return out
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 15, (w, h))
    yy, xx = np.mgrid[0:h, 0:w]
    for t in range(n):
        img = np.empty((h, w, 3), np.uint8)
        img[..., 0] = (xx * 255 // w).astype(np.uint8)
        img[..., 1] = (yy * 255 // h).astype(np.uint8)
        img[..., 2] = 90
        cv2.circle(img, (60 + 2 * t % (w - 120), h // 2), 50, (20, 20, 230), -1)
        cv2.rectangle(img, (w - 160, 40 + t % (h - 140)), (w - 60, 140 + t % (h - 140)), (230, 230, 30), -1)
        writer.write(img)
    writer.release()
    return out


def camvid_clip(loops: int) -> Path:
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_video

    return bench_video.build_clip(loops)


def write_bags(clip: Path, compressed: bool) -> dict[str, Path]:
    """The clip's decoded frames as a raw (rgb8) bag and, optionally, a JPEG bag (built once)."""
    import cv2
    import numpy as np
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    kinds = {"bag_rgb8": "rgb8"} | ({"bag_jpeg": "jpeg"} if compressed else {})
    bags = {k: SCRATCH / f"{clip.stem}_{encoding}" for k, encoding in kinds.items()}
    missing = {k: kinds[k] for k, p in bags.items() if not p.exists()}
    if not missing:
        return bags
    ts = get_typestore(Stores.LATEST)
    types = ts.types
    writers = {}
    for key in missing:
        writer = Writer(bags[key], version=9, storage_plugin=StoragePlugin.MCAP)
        writer.open()
        msgtype = "sensor_msgs/msg/CompressedImage" if missing[key] == "jpeg" else "sensor_msgs/msg/Image"
        writers[key] = (writer, writer.add_connection(TOPIC, msgtype, typestore=ts), msgtype)
    cap = cv2.VideoCapture(str(clip))
    index = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        t = 1_700_000_000 * 10**9 + index * 66_666_667  # 15 FPS
        header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=t // 10**9,
                                                                                          nanosec=t % 10**9),
                                              frame_id="camera")
        for key, (writer, conn, msgtype) in writers.items():
            if missing[key] == "jpeg":
                data = cv2.imencode(".jpg", bgr)[1].reshape(-1)
                msg = types[msgtype](header=header, format="jpeg", data=data)
            else:
                rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                h, w = rgb.shape[:2]
                msg = types[msgtype](header=header, height=h, width=w, encoding="rgb8", is_bigendian=0,
                                     step=3 * w, data=rgb.reshape(-1))
            writer.write(conn, t, ts.serialize_cdr(msg, msgtype))
        index += 1
    cap.release()
    for writer, _, _ in writers.values():
        writer.close()
    return bags


def run(kind: str, source: Path, options: list[str]) -> dict:
    out = SCRATCH / ("out.mp4" if kind == "mp4" else f"out_{kind}")
    if out.is_dir():
        shutil.rmtree(out)
    out.unlink(missing_ok=True)
    topic = [] if kind == "mp4" else ["--topic", TOPIC]
    cmd = [sys.executable, "-m", "walkcut", "video", str(source), *topic, "--out", str(out), *options]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    fps = re.search(r"([\d.]+) FPS", proc.stderr)
    written = re.search(r"(\d+) frames written of (\d+) read", proc.stderr)
    decode = re.search(r"decode ([\d.]+)/([\d.]+)", proc.stderr)
    if proc.returncode != 0 or not fps:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    frames = int(written.group(1))
    return {"kind": kind, "fps": float(fps.group(1)), "frames": frames, "wall_s": wall, "cpu_per_frame": cpu / frames,
            "decode_p50_ms": float(decode.group(1)) if decode else None, "load": load}


def io_costs(clip: Path, bag: Path, repeats: int = 3) -> dict[str, float]:
    """CPU ms per frame of reading (decode to RGB) and writing (overlay picture + ids) each kind."""
    import cv2
    import numpy as np
    from walkcut.runtime.video.bags import BagReader, BagWriter
    from walkcut.runtime.video.frames import TrackedFrame
    from walkcut.runtime.video.io import VideoInput, VideoReader, VideoWriter

    def read(make) -> tuple[float, list]:
        with make() as reader:
            t = time.process_time()
            frames = list(reader.frames())
            return 1e3 * (time.process_time() - t) / len(frames), frames

    def write(writer, frames, ids) -> float:
        with writer:
            t = time.process_time()
            for frame in frames:
                writer.write_frame(TrackedFrame(frame, ids), cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
        return 1e3 * (time.process_time() - t) / len(frames)  # the bag's finalisation included

    costs: dict[str, list[float]] = {"read_mp4": [], "read_bag": [], "write_mp4": [], "write_bag": []}
    # Ids shaped like a segmentation: 16 blocky regions at full resolution.
    blocks = np.random.default_rng(0).integers(0, 16, (18, 24), dtype=np.uint8)
    for _ in range(repeats):
        ms, frames = read(lambda: VideoReader(VideoInput.parse(str(clip))))
        costs["read_mp4"].append(ms)
        ms, frames = read(lambda: BagReader(bag, TOPIC))
        costs["read_bag"].append(ms)
        h, w = frames[0].rgb.shape[:2]
        ids = cv2.resize(blocks, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int64)
        out = SCRATCH / "io.mp4"
        out.unlink(missing_ok=True)
        costs["write_mp4"].append(write(VideoWriter(out, 15), frames, ids))
        shutil.rmtree(SCRATCH / "io_bag", ignore_errors=True)
        costs["write_bag"].append(write(BagWriter(SCRATCH / "io_bag", TOPIC), frames, ids))
    return {k: statistics.median(v) for k, v in costs.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--options", default="", help="options for both runs of `walkcut video` (default: none)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each kind, alternating (default: 2)")
    p.add_argument("--loops", type=int, default=1, help="CamVid clip looped this many times (default: 1)")
    p.add_argument("--synthetic", action="store_true", help="a synthetic 150-frame clip instead of CamVid")
    p.add_argument("--compressed", action="store_true", help="also a bag of JPEG CompressedImage frames")
    args = p.parse_args()
    clip = synthetic_clip() if args.synthetic else camvid_clip(args.loops)
    bags = write_bags(clip, args.compressed)
    options = args.options.split()
    print(f"clip {clip} ({'synthetic' if args.synthetic else 'CamVid val'}); bags {', '.join(map(str, bags.values()))}")
    print(f"options: {' '.join(options) or '(defaults)'}; cores {os.cpu_count()}; load average at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    runs: dict[str, list[dict]] = {"mp4": [], **{k: [] for k in bags}}
    for _ in range(args.repeats):
        for kind in runs:
            r = run(kind, clip if kind == "mp4" else bags[kind], options)
            runs[kind].append(r)
            print(f"  {kind:9s} {r['frames']} frames, {r['fps']:.2f} FPS, decode p50 {r['decode_p50_ms']} ms, "
                  f"CPU {1e3 * r['cpu_per_frame']:.0f} ms/frame, wall {r['wall_s']:.1f} s, load {r['load']:.2f}",
                  flush=True)
    mp4 = statistics.median(r["fps"] for r in runs["mp4"])
    mp4_cpu = statistics.median(r["cpu_per_frame"] for r in runs["mp4"])
    for kind in bags:
        bag = statistics.median(r["fps"] for r in runs[kind])
        bag_cpu = statistics.median(r["cpu_per_frame"] for r in runs[kind])
        print(f"median FPS: mp4 {mp4:.2f}, {kind} {bag:.2f}; ratio {kind} / mp4 = {bag / mp4:.3f} (target >= 0.9)")
        print(f"median CPU ms/frame: mp4 {1e3 * mp4_cpu:.0f}, {kind} {1e3 * bag_cpu:.0f}; "
              f"ratio mp4 / {kind} = {mp4_cpu / bag_cpu:.3f} (the throughput ratio CPU-bound runs reach)")
    io = io_costs(clip, bags["bag_rgb8"])
    print("reader and writer CPU ms/frame (median of 3): " + ", ".join(f"{k} {v:.2f}" for k, v in io.items()))
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
