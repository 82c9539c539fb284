"""Ablation over the paper's axes with the weight-free pixel source (or an engine).

Axes: graph mode (walk, dot, cosine) x walk power t (1, 2, 4, 8) x stopping rule (constant NCut
thresholds, auto-ncut, auto-mincut) x graph resolution R (32, 64). Each hierarchy is built once per
image and (mode, power); every stopping rule re-prunes it. BSDS500 val is scored with Segmentation
Covering / PRI / VoI, CamVid val with Hungarian-matched mIoU / pixel accuracy. Writes a markdown table.

    python bench/ablation.py --limit 25 --out bench/ABLATION.md

The pixel source is ``PixelSource(grid=R, contour_scale=...)``: intervening contours at 2.0 since
v0.2 (``--contour-scale none``: the 0.1 colour + position graph the tables below the v0.2 section were
measured with). Source options beyond these, and the stopping rule's tree size, are swept by
bench/quality_sweep.py.

R = 64 with dense modes or long walks builds dense 4096 x 4096 products (minutes per image on a
2-core CPU), so by default R = 64 runs the walk mode with t = 1 and 2 only (``--full64`` for all).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm
from walkcut.runtime.imageio import atomic_write_bytes
from walkcut.runtime.segmenter import Segmenter
from walkcut.runtime.sources.pixels import PixelSource

from walkcut.eval import metrics
from walkcut.eval.datasets import load_dataset

RULES = (0.01, 0.03, 0.1, 0.3, "auto-ncut", "auto-mincut")
MODES = ("walk", "dot", "cosine")
POWERS = (1, 2, 4, 8)


def configs(full64: bool):
    for mode, power in itertools.product(MODES, POWERS):
        yield 32, mode, power
    for mode, power in itertools.product(MODES, POWERS):
        if full64 or (mode == "walk" and power <= 2):
            yield 64, mode, power


def run_dataset(name: str, dataset, samples, cfgs, engine=None, contour_scale=2.0) -> list[dict]:
    rows = []
    for R, mode, power in cfgs:
        seg = Segmenter(engine if engine is not None else PixelSource(grid=R, contour_scale=contour_scale))
        acc = {rule: [] for rule in RULES}
        sem = {rule: None for rule in RULES}
        k = {rule: [] for rule in RULES}
        t0 = time.perf_counter()
        for s in tqdm(samples, desc=f"{name} R={R} {mode} t={power}", leave=False, file=sys.stderr):
            seg.set_image(s.image)
            for rule in RULES:
                lab = seg.segment(mode=mode, power=power, threshold=rule).labels
                k[rule].append(int(lab.max()) + 1)
                if name == "bsds500":
                    acc[rule].append(metrics.score_regions(lab, s.gt))
                else:
                    c = metrics.semantic_counts(lab, s.gt, num_classes=dataset.num_classes,
                                                ignore_label=dataset.ignore_label)
                    if sem[rule] is None:
                        sem[rule] = c
                    else:
                        sem[rule] += c
        seconds = (time.perf_counter() - t0) / len(samples)
        for rule in RULES:
            row = {"R": R, "mode": mode, "power": power, "rule": str(rule), "segments": float(np.median(k[rule])),
                   "seconds_per_image": seconds}
            if name == "bsds500":
                v = acc[rule]
                row.update(covering=sum(r.covering_num for r in v) / sum(r.covering_den for r in v),
                           pri=float(np.mean([r.pri for r in v])), voi=float(np.mean([r.voi for r in v])))
            else:
                row.update(miou=sem[rule].miou, pixel_accuracy=sem[rule].pixel_accuracy)
            rows.append(row)
        print(f"done {name} R={R} {mode} t={power} ({seconds:.2f} s/img)", file=sys.stderr, flush=True)
    return rows


def table(name: str, rows: list[dict]) -> str:
    if name == "bsds500":
        head = "| R | mode | t | rule | Covering | PRI | VoI | segments |\n|---|---|---|---|---|---|---|---|\n"
        body = "".join(f"| {r['R']} | {r['mode']} | {r['power']} | {r['rule']} | {r['covering']:.3f} | {r['pri']:.3f} "
                       f"| {r['voi']:.3f} | {r['segments']:.0f} |\n" for r in rows)
    else:
        head = "| R | mode | t | rule | mIoU | pixel acc. | segments |\n|---|---|---|---|---|---|---|\n"
        body = "".join(f"| {r['R']} | {r['mode']} | {r['power']} | {r['rule']} | {r['miou']:.3f} "
                       f"| {r['pixel_accuracy']:.3f} | {r['segments']:.0f} |\n" for r in rows)
    return head + body


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=25, help="images per dataset (default: 25)")
    ap.add_argument("--datasets", nargs="+", default=["bsds500", "camvid"])
    ap.add_argument("--full64", action="store_true", help="all modes and powers at R = 64 too")
    ap.add_argument("--out", type=Path, default=Path("bench/ABLATION.md"))
    ap.add_argument("--contour-scale", type=lambda t: None if t == "none" else float(t), default=2.0,
                    help="intervening-contour scale of the pixel source, or 'none' (default: 2.0)")
    args = ap.parse_args(argv)
    parts = [(f"# Ablation (pixel source)\n\nCommand: `python bench/ablation.py --limit {args.limit}"
             f"{' --full64' if args.full64 else ''}`; first {args.limit} images of each validation set, "
             f"sorted by name. Rules: constant NCut thresholds and the two automatic rules.\n")]
    for name in args.datasets:
        dataset = load_dataset(name, limit=args.limit)
        rows = run_dataset(name, dataset, list(dataset), list(configs(args.full64)),
                           contour_scale=args.contour_scale)
        parts.append(f"\n## {name}\n\n" + table(name, rows))
        atomic_write_bytes(args.out, "".join(parts).encode())  # keep what is done if a later set fails
    print("".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
