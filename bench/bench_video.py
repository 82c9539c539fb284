"""Video benchmark on CamVid: throughput of `walkcut video`, flat memory, temporal id consistency.

The CamVid val frames in ../shared/data/camvid/val are consecutive frames of one drive. This script
assembles them into a 480x360 clip at 15 FPS **under /tmp** (the data is not redistributable: no
frame or clip ever goes into the repository), then:

1. ``fps``: runs the real command, ``walkcut video CLIP --out /tmp/... [options]``, and reports its
   summary (frames, FPS, per-stage p50/p90), wall time and the load average before and after.
2. ``memory``: the same pipeline in-process over the clip looped 10x (1010 frames), sampling the
   resident set size every 50 frames; reports RSS after 50 frames, at the end, and the maximum.
3. ``consistency``: per-frame ids with and without Hungarian matching; the mean fraction of pixels
   whose id changes between consecutive frames, for both, and their ratio.

    python bench/bench_video.py all --workers 2 --processes
"""

from __future__ import annotations

import argparse
import functools
import glob
import itertools
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("WALKCUT_DATA", ROOT.parent / "shared" / "data"))
SCRATCH = Path("/tmp/walkcut_bench_video")


def build_clip(loops: int = 1) -> Path:
    import cv2

    frames = sorted(glob.glob(str(DATA / "camvid" / "val" / "*.png")))
    if not frames:
        raise SystemExit(f"no CamVid frames under {DATA / 'camvid' / 'val'} (set WALKCUT_DATA)")
    SCRATCH.mkdir(parents=True, exist_ok=True)
    out = SCRATCH / f"camvid_val_480x360_x{loops}.mp4"
    if out.exists():
        return out
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 15, (480, 360))
    small = [cv2.resize(cv2.imread(f), (480, 360), interpolation=cv2.INTER_AREA) for f in frames]
    for _ in range(loops):
        for img in small:
            writer.write(img)
    writer.release()
    return out


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def video_options(args) -> list[str]:
    opts = ["--grid", str(args.grid), "--workers", str(args.workers), "--label-side", str(args.label_side)]
    return opts + (["--processes"] if args.processes else [])


def bench_fps(args) -> dict:
    clip = build_clip(1)
    out = SCRATCH / "out.mp4"
    load_before = os.getloadavg()
    cmd = [sys.executable, "-m", "walkcut.cli", "video", str(clip), "--out", str(out), *video_options(args)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    summary = proc.stderr.strip().splitlines()[-2:]
    fps = re.search(r"([\d.]+) FPS", proc.stderr)
    return {"test": "fps", "command": "walkcut video CLIP --out OUT " + " ".join(video_options(args)),
            "rc": proc.returncode, "wall_s": round(wall, 1), "fps": float(fps.group(1)) if fps else None,
            "summary": summary, "load_before": load_before, "load_after": os.getloadavg()}


def _make_pipeline(args, track=True):
    from walkcut.runtime.video import ProcessSegmenter, VideoPipeline, limit_blas_threads

    from walkcut.cli.video import VIDEO_MAX_SEGMENTS, build_segmenter

    limit_blas_threads(1)
    factory = functools.partial(build_segmenter, grid=args.grid, label_side=args.label_side)
    make = functools.partial(ProcessSegmenter, factory) if args.processes else factory
    return VideoPipeline(make, cut_options={"max_segments": VIDEO_MAX_SEGMENTS}, workers=args.workers, track=track)


def bench_memory(args) -> dict:
    from walkcut.runtime.video import VideoInput, VideoReader, VideoWriter

    clip = build_clip(10)
    samples = []

    def on_frame(i, ids, picture):
        if i % 50 == 0:
            samples.append((i, round(rss_mb(), 1)))

    load_before = os.getloadavg()
    with VideoWriter(SCRATCH / "out_x10.mp4", 15) as writer, VideoReader(VideoInput.parse(str(clip))) as reader:
        summary = _make_pipeline(args).run(reader, writer, on_frame=on_frame)
    return {"test": "memory", "frames": summary.frames_written, "fps": round(summary.fps, 2),
            "rss_mb_after_50": samples[1][1] if len(samples) > 1 else None, "rss_mb_end": round(rss_mb(), 1),
            "rss_mb_max_sampled": max(s for _, s in samples), "samples": samples,
            "note": "RSS of the parent process" + (" (workers are separate processes)" if args.processes else ""),
            "load_before": load_before, "load_after": os.getloadavg()}


def _keep_ids(store, index, ids, picture) -> None:
    store.append(ids.astype("int32"))


def bench_consistency(args) -> dict:
    import numpy as np
    from walkcut.runtime.video import VideoInput, VideoReader
    from walkcut.runtime.video.tracking import change_fraction

    clip = build_clip(1)
    result = {"test": "consistency"}
    for track in (True, False):
        ids: list = []
        with VideoReader(VideoInput.parse(str(clip))) as reader:
            _make_pipeline(args, track=track).run(reader, on_frame=functools.partial(_keep_ids, ids))
        changes = [change_fraction(a, b) for a, b in itertools.pairwise(ids)]
        key = "matched" if track else "independent"
        result[f"change_{key}"] = round(float(np.mean(changes)), 4)
        result[f"segments_mean_{key}"] = round(float(np.mean([x.max() + 1 for x in ids])), 1)
    result["ratio"] = round(result["change_independent"] / max(result["change_matched"], 1e-9), 2)
    return result


def make_picture(args) -> dict:
    """docs/video_frame.png: a frame of `walkcut video` over a slow pan across a bundled example image."""
    import cv2
    import numpy as np
    from walkcut.runtime.imageio import read_image, write_rgb_png
    from walkcut.runtime.video import VideoInput, VideoReader, VideoWriter

    image = cv2.cvtColor(read_image(ROOT / "examples" / "coffee.jpg"), cv2.COLOR_RGB2BGR)
    h, w = image.shape[:2]
    cw, ch = int(w * 0.8), int(h * 0.8)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    clip = SCRATCH / "pan.mp4"
    with VideoWriter(clip, 10) as writer:
        for t in range(12):  # pan right and down by a few pixels per frame
            x0, y0 = int((w - cw) * t / 11), int((h - ch) * t / 22)
            writer.write(cv2.resize(image[y0 : y0 + ch, x0 : x0 + cw], (480, 360), interpolation=cv2.INTER_AREA))
    pictures = {}
    with VideoReader(VideoInput.parse(str(clip))) as reader:
        _make_pipeline(args).run(reader, on_frame=lambda i, ids, pic: pictures.__setitem__(i, pic))
    frame = cv2.resize(pictures[11], (360, 270), interpolation=cv2.INTER_AREA)
    out = ROOT / "docs" / "video_frame.png"
    out.parent.mkdir(exist_ok=True)
    write_rgb_png(out, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return {"test": "picture", "path": str(out.relative_to(ROOT)), "bytes": out.stat().st_size,
            "frames": len(pictures), "shape": list(frame.shape), "colors_kept": bool(np.any(pictures[11] != 0))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("fps", "memory", "consistency", "picture", "all"))
    p.add_argument("--grid", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--processes", action="store_true")
    p.add_argument("--label-side", type=int, default=320)
    args = p.parse_args(argv)
    print(json.dumps({"machine": platform.node(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                      "load_avg": os.getloadavg()}), flush=True)
    todo = ("fps", "consistency", "memory") if args.what == "all" else (args.what,)
    for name in todo:
        run = {"fps": bench_fps, "memory": bench_memory, "consistency": bench_consistency, "picture": make_picture}
        print(json.dumps(run[name](args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
