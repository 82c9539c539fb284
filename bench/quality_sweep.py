"""Candidate sweep for the weight-free source's quality (issue 12): source options x tree size x rule.

Each candidate is a set of ``PixelSource`` options plus cut options (``max_segments``, ``min_size``);
every image's hierarchy is built once per candidate and re-pruned by every stopping rule (the two
automatic rules and a sweep of constant thresholds, whose best value in hindsight is reported as
ODS). BSDS500 val is scored with Covering / PRI / VoI, CamVid val with Hungarian mIoU / pixel accuracy.
Trees are kept in ``--cache`` so that stopping rules can be compared later without new eigen-solves.

    python bench/quality_sweep.py --limit 20 --candidate grid=32 --candidate grid=48,contour_scale=1
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from walkcut.runtime.cuts.hierarchy import AUTO_RULES, otsu_threshold
from walkcut.runtime.defaults import COST_FLOOR, FALLBACK_NCUT
from walkcut.runtime.segmenter import Segmenter
from walkcut.runtime.sources.pixels import PixelSource

from walkcut.eval import metrics
from walkcut.eval.datasets import load_dataset

CUT_KEYS = ("max_segments", "min_size")
SWEEP = tuple(float(f"{0.003 * (1 / 0.003) ** (k / 15):.3g}") for k in range(16))

_DATASETS: dict = {}


def otsu_variant(hierarchy, a: float, f: float, floor: float = COST_FLOOR) -> float:
    """Otsu on log NCut costs with node sizes ** ``a`` as weights, times ``f`` (the default rule is
    a = 1, f = 1); the fallback constant when the tree has fewer than two distinct costs."""
    values, sizes = hierarchy.costs("ncut", with_sizes=True)
    if values.size < 2 or np.ptp(np.maximum(values, floor)) == 0:
        return FALLBACK_NCUT
    return f * otsu_threshold(values, sizes**a, floor=floor)


def variant_name(a: float, f: float, floor: float) -> str:
    return f"otsu a={a} f={f}" + ("" if floor == COST_FLOOR else f" floor={floor:g}")


def parse_variant(text: str) -> tuple[float, float, float]:
    d = dict(part.split("=") for part in text.split(","))
    return float(d.get("a", 1)), float(d.get("f", 1)), float(d.get("floor", COST_FLOOR))


def parse_candidate(text: str) -> dict:
    out = {}
    for part in filter(None, text.split(",")):
        key, value = part.split("=")
        out[key.strip()] = None if value == "none" else json.loads(value)
    return out


def _dataset(name: str, limit: int):
    if (name, limit) not in _DATASETS:
        _DATASETS[(name, limit)] = list(load_dataset(name, limit=limit))
    return _DATASETS[(name, limit)]


def score(name: str, labels, sample, num_classes=None, ignore=None):
    if name == "bsds500":
        r = metrics.score_regions(labels, sample.gt)
        return ("regions", r.covering_num, r.covering_den, r.pri, r.voi)
    c = metrics.semantic_counts(labels, sample.gt, num_classes=num_classes, ignore_label=ignore)
    return ("semantic", c.tp, c.fp, c.fn, c.pixels)


def one_image(job):
    name, limit, k, cand, rules, variants = job
    ds = _dataset(name, limit)
    sample = ds[k]
    meta = load_dataset(name, limit=1)
    src = {key: v for key, v in cand.items() if key not in CUT_KEYS}
    cut = {key: v for key, v in cand.items() if key in CUT_KEYS}
    seg = Segmenter(PixelSource(**src))
    t0 = time.perf_counter()
    seg.set_image(sample.image)
    first = seg.segment(threshold=rules[0], **cut)
    seconds = time.perf_counter() - t0
    out = {}
    for rule in rules:
        s = first if rule == rules[0] else seg.segment(threshold=rule, **cut)
        out[str(rule)] = (score(name, s.labels, sample, meta.num_classes, meta.ignore_label), s.n_segments)
    for a, f, floor in variants:
        s = seg.segment(threshold=otsu_variant(first.hierarchy, a, f, floor), **cut)
        out[variant_name(a, f, floor)] = (score(name, s.labels, sample, meta.num_classes, meta.ignore_label), s.n_segments)
    return k, seconds, first.timings, out, first.hierarchy


def summarise(name: str, per_rule: dict, num_classes: int | None) -> dict:
    res = {}
    for rule, items in per_rule.items():
        segs = float(np.mean([n for _, n in items]))
        if name == "bsds500":
            num = sum(s[1] for s, _ in items)
            den = sum(s[2] for s, _ in items)
            res[rule] = {"covering": num / den, "pri": float(np.mean([s[3] for s, _ in items])),
                             "voi": float(np.mean([s[4] for s, _ in items])), "segments": segs}
        else:
            tp = sum(s[1] for s, _ in items)
            fp = sum(s[2] for s, _ in items)
            fn = sum(s[3] for s, _ in items)
            pixels = sum(s[4] for s, _ in items)
            union = tp + fp + fn
            present = union > 0
            res[rule] = {"miou": float(np.mean(tp[present] / union[present])),
                             "pixel_accuracy": float(tp.sum() / pixels), "segments": segs}
    return res


def run(name: str, limit: int, cand: dict, workers: int, cache: Path | None, constants=(), variants=()):
    ds = _dataset(name, limit)
    meta = load_dataset(name, limit=1)
    rules = list(AUTO_RULES) + list(SWEEP) + [c for c in constants if c not in SWEEP]
    jobs = [(name, limit, k, cand, rules, variants) for k in range(len(ds))]
    t0 = time.perf_counter()
    with get_context("fork").Pool(workers) as pool:
        results = sorted(pool.imap_unordered(one_image, jobs), key=lambda r: r[0])
    wall = time.perf_counter() - t0
    per_rule = {key: [res[3][key] for res in results] for key in results[0][3]}
    summary = summarise(name, per_rule, meta.num_classes)
    t = {k: float(np.median([r[2][k] for r in results])) for k in ("source", "cuts", "upsample")}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        key = name + "_" + "_".join(f"{k}={v}" for k, v in sorted(cand.items()))
        with open(cache / f"{key}_n{limit}.pkl", "wb") as f:
            pickle.dump([r[4] for r in results], f)
    return summary, t, wall / len(ds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", action="append", type=parse_candidate, required=True)
    ap.add_argument("--datasets", nargs="+", default=["bsds500", "camvid"])
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--constants", type=lambda t: [float(v) for v in t.split(",")], default=[],
                    help="extra constant thresholds to report (comma-separated)")
    ap.add_argument("--otsu", type=parse_variant, action="append", default=[], metavar="a=A,f=F[,floor=C]",
                    help="extra Otsu variant: node sizes ** A as weights, threshold times F, costs below C equal")
    ap.add_argument("--jsonl", type=Path, default=None, help="append one JSON line per candidate and set")
    args = ap.parse_args(argv)
    for cand in args.candidate:
        for name in args.datasets:
            summary, t, per_image = run(name, args.limit, cand, args.workers, args.cache, args.constants, args.otsu)
            if name == "bsds500":
                best = max(SWEEP, key=lambda r: summary[str(r)]["covering"])
                cols = ("covering", "pri", "voi", "segments")
            else:
                best = max(SWEEP, key=lambda r: summary[str(r)]["miou"])
                cols = ("miou", "pixel_accuracy", "segments")
            extra = [str(c) for c in args.constants] + [variant_name(*v) for v in args.otsu]
            line = {"set": name, "candidate": cand, "limit": args.limit, "timings_median": t,
                    "wall_per_image": per_image, "load": os.getloadavg()[0],
                    "rules": {r: summary[r] for r in ("auto-ncut", "auto-mincut", str(best), *extra)}, "best_constant": best,
                    "ods": {c: (max if c in ("covering", "pri", "miou", "pixel_accuracy") else min)(
                        summary[str(r)][c] for r in SWEEP) for c in cols[:-1]}}
            txt = " ".join(f"{r}:" + "/".join(f"{summary[r][c]:.3f}" for c in cols)
                           for r in ("auto-ncut", "auto-mincut", str(best), *extra))
            print(f"{name} {cand} | {txt} | ODS " + "/".join(f"{v:.3f}" for v in line["ods"].values())
                  + f" | src {t['source']*1e3:.0f} cuts {t['cuts']*1e3:.0f} up {t['upsample']*1e3:.0f} ms"
                  + f" | load {line['load']:.1f}", flush=True)
            if args.jsonl:
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
