"""Human consistency on BSDS500: each annotation scored against the other annotations of its image.

This checks our region metrics (walkcut.eval.metrics) against the published "human" rows of the
BSDS benchmark. For each image with annotations G_1..G_m, annotation G_k plays the segmentation and
{G_j : j != k} the ground truth, aggregated exactly as a segmentation would be (covering counts pooled
over annotators, PRI and VoI averaged over them). The image's score is the mean over k (covering:
pooled counts); the dataset's is the pixel-pooled covering and the mean PRI / VoI over images. There
is no parameter, so ODS = OIS.

Usage::

    python bench/human_consistency.py [--root ../shared/data/bsds500] [--split val] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np

from walkcut.eval import metrics
from walkcut.eval.datasets import load_dataset


def human_scores(gts):
    """Per-annotator RegionScore of each annotation against the others (needs >= 2 annotations)."""
    out = []
    for k in range(len(gts)):
        others = [g for j, g in enumerate(gts) if j != k]
        out.append(metrics.score_regions(gts[k], others))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="BSDS500 root (default: ../shared/data/bsds500)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    ds = load_dataset("bsds500", args.root, split=args.split)
    t0 = time.perf_counter()
    num = den = 0.0
    pri, voi, voi_nats, cov_img = [], [], [], []
    n_ann = []
    for s in ds:
        if len(s.gt) < 2:
            continue
        sc = human_scores(s.gt)
        n_ann.append(len(s.gt))
        num += sum(r.covering_num for r in sc)
        den += sum(r.covering_den for r in sc)
        cov_img.append(sum(r.covering_num for r in sc) / sum(r.covering_den for r in sc))
        pri.append(np.mean([r.pri for r in sc]))
        voi.append(np.mean([r.voi for r in sc]))
        voi_nats.append(voi[-1] * np.log(2.0))
    res = {
        "split": args.split,
        "images": len(pri),
        "annotations": int(sum(n_ann)),
        "covering": num / den,
        "covering_image_mean": float(np.mean(cov_img)),
        "pri": float(np.mean(pri)),
        "voi_bits": float(np.mean(voi)),
        "voi_nats": float(np.mean(voi_nats)),
        "seconds": time.perf_counter() - t0,
        "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()}",
    }
    for k, v in res.items():
        print(f"{k:22s} {v:.4f}" if isinstance(v, float) else f"{k:22s} {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
