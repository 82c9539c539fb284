"""Per-stage CPU time of an exported ViT source on 480 x 360 frames, one thread per stage.

For each model given: the Segmenter's own stage timings (preprocess, engine, cuts, upsample) over the
first ``--frames`` CamVid val frames resized to 480 x 360, with the model's cut settings (its
contract's ``cut_defaults``) and with ``--upsample joint-bilateral`` for comparison; onnxruntime with
one intra-op thread, one BLAS thread, OpenCV with one thread. Prints median / p90 in ms, the load
average before and after, and the model file's hash. Warm-up: the first frame is not counted.

    python bench/bench_vit.py models/vit_s_focus.onnx models/vit_s_focus_int8.onnx
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
from threadpoolctl import threadpool_limits
from walkcut.runtime.segmenter import Segmenter
from walkcut.runtime.sources.engine import EngineSource

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("WALKCUT_DATA", ROOT.parent / "shared" / "data"))
STAGES = ("preprocess", "engine", "cuts", "upsample")


def frames(n: int) -> list[np.ndarray]:
    paths = sorted(glob.glob(str(DATA / "camvid" / "val" / "*.png")))[: n + 1]
    if not paths:
        raise SystemExit(f"no CamVid frames under {DATA / 'camvid' / 'val'} (set WALKCUT_DATA)")
    return [cv2.cvtColor(cv2.resize(cv2.imread(p), (480, 360), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            for p in paths]


def time_model(path: str, images: list[np.ndarray], upsample: str | None) -> dict:
    seg = Segmenter(EngineSource.from_path(path, threads=1))
    rows = []
    for i, image in enumerate(images):
        t = seg.set_image(image).segment(upsample=upsample).timings
        if i:  # the first frame warms the session up
            rows.append([t[k] for k in STAGES])
    ms = 1e3 * np.asarray(rows)
    out = {k: {"median_ms": round(float(np.median(ms[:, j])), 1), "p90_ms": round(float(np.percentile(ms[:, j], 90)), 1)}
           for j, k in enumerate(STAGES)}
    out["total_median_ms"] = round(float(np.median(ms.sum(axis=1))), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--frames", type=int, default=30)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    images = frames(args.frames)
    report = {"load_before": [round(x, 2) for x in os.getloadavg()], "frames": len(images) - 1, "models": {}}
    with threadpool_limits(1):
        for path in args.models:
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
            report["models"][path] = {"sha256": digest, "model_defaults": time_model(path, images, None),
                                      "joint_bilateral": time_model(path, images, "joint-bilateral")}
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
