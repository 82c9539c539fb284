"""Tune the cuts on real ViT attention (issue 19): layers x size x graph x rule x tree x upsampling.

Reads the per-layer attention cached by ``bench/vit_cache.py`` and the ground truth of BSDS500 val /
CamVid val (../shared/data). A candidate is a set of options:

- ``size`` (224: 16 x 16 patches, 448: 32 x 32) and ``layers`` (``all``, ``lastK``, ``firstK``, ``a-b``
  or a ``+``-separated list of indices) pick the cached maps; P = their sum, rows renormalised (what
  the exported graph computes);
- ``hybrid`` a in [0, 1): P = (1 - a) P_attention + a P_pixels, with the weight-free pixel walk on the
  same grid (colour + contours: boundaries the 14-pixel patches cannot place);
- ``mode``, ``power``, ``max_segments``, ``min_size``: the cut (``cut_transition_matrix``);
- ``upsample``: ``joint-bilateral`` (default) or ``nearest``; ``snap=K`` (K fine segments of the pixel
  walk on a ``snap_grid`` grid) uses the runtime's ``upsample="snap"``.

Each image goes through the runtime's own ``Segmenter`` (a ``GivenSource`` hands it the cached walk).

Every image's tree is built once per candidate and pruned by both automatic rules and a sweep of
constant NCut thresholds (best in hindsight = ODS, for reference only: the defaults must be one
setting chosen on val). One JSON line per (candidate, rule) goes to ``--out``.

    python bench/vit_tune.py --cache /tmp/vitcache --dataset bsds500 --candidate size=224,layers=all
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from walkcut.runtime.cuts.hierarchy import otsu_threshold
from walkcut.runtime.defaults import COST_FLOOR, FALLBACK_NCUT
from walkcut.runtime import defaults as _d
from walkcut.runtime.segmenter import Segmenter
from walkcut.runtime.sources.given import GivenSource
from walkcut.runtime.sources.pixels import PixelSource, Transition

from walkcut.eval import metrics
from walkcut.eval.datasets import load_dataset

SWEEP = (0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95)  # constant NCut thresholds, best in hindsight = ODS
RULES = ("auto-ncut", "auto-mincut")
#: Variants of the automatic rule (Otsu on log NCut with node sizes ** a as weights, times f).
VARIANTS = ("otsu:a=0,f=1", "otsu:a=0.5,f=1", "otsu:a=1,f=1.15", "otsu:a=1,f=1.3", "otsu:a=0,f=1.15")


def variant_threshold(hierarchy, name: str) -> float:
    d = dict(kv.split("=") for kv in name.split(":")[1].split(","))
    values, sizes = hierarchy.costs("ncut", with_sizes=True)
    if values.size < 2 or np.ptp(np.maximum(values, COST_FLOOR)) == 0:
        return FALLBACK_NCUT
    return float(d["f"]) * otsu_threshold(values, sizes ** float(d["a"]), floor=COST_FLOOR)
DEFAULTS = {"size": 224, "layers": "all", "hybrid": 0.0, "mode": "walk", "power": 1, "max_segments": 32,
            "min_size": None, "upsample": "joint-bilateral", "contour_scale": 2.0, "sharpen": 1.0, "exponent": 1.0,
            "nodiag": 0, "snap": 0, "snap_grid": 32}


def parse_candidate(text: str) -> dict:
    out = dict(DEFAULTS)
    for part in filter(None, text.split(",")):
        key, value = part.split("=")
        if key not in DEFAULTS:
            raise SystemExit(f"unknown candidate key {key!r} (known: {sorted(DEFAULTS)})")
        try:
            out[key] = None if value == "none" else json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def layer_indices(spec: str, count: int) -> list[int]:
    spec = str(spec)
    if spec == "all":
        return list(range(count))
    if spec.startswith("last"):
        return list(range(count - int(spec[4:]), count))
    if spec.startswith("first"):
        return list(range(int(spec[5:])))
    if "-" in spec:
        a, b = spec.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(p) for p in spec.split("+")]


def transition(cache: np.ndarray, cand: dict, image: np.ndarray) -> np.ndarray:
    """(n, n) float32 row-stochastic walk of one image for a candidate."""
    idx = layer_indices(cand["layers"], cache.shape[0])
    P = cache[idx].astype(np.float32).sum(axis=0)
    if cand["nodiag"]:
        np.fill_diagonal(P, 0.0)
    if cand["sharpen"] != 1.0:  # attention temperature: P_ij^beta, rows renormalised below
        P /= P.max(axis=1, keepdims=True)
        P **= cand["sharpen"]
    P /= P.sum(axis=1, keepdims=True)
    if cand["hybrid"]:
        R = int(round(P.shape[0] ** 0.5))
        pix = PixelSource(grid=R, contour_scale=cand["contour_scale"]).transition(image).P
        pix = pix.toarray() if hasattr(pix, "toarray") else np.asarray(pix)
        P = (1 - cand["hybrid"]) * P + cand["hybrid"] * pix.astype(np.float32)
    return P


def run_candidate(samples, cache_dir: Path, dataset, cand: dict) -> list[dict]:
    folder = cache_dir / f"{dataset.name}_{cand['size']}"
    semantic = dataset.protocol == "semantic"
    acc = {r: ([] if not semantic else metrics.SemanticCounts(dataset.num_classes)) for r in RULES + VARIANTS + SWEEP}
    segs = {r: [] for r in RULES + VARIANTS}
    t_cut = t_up = 0.0
    if cand["snap"]:
        _d.SNAP_SEGMENTS = int(cand["snap"])  # the runtime's snap, at this many fine segments
        _d.SNAP_GRID = int(cand["snap_grid"])
    for s in samples:
        cache = np.load(folder / f"{s.id}.npy")
        P = transition(cache, cand, s.image)
        R = int(round(P.shape[0] ** 0.5))
        upsample = "snap" if cand["snap"] else cand["upsample"]
        # The runtime's own path (Segmenter: cut, snap, upsample), on the cached attention.
        seg = Segmenter(GivenSource(Transition(P=P, grid_shape=(R, R)))).set_image(s.image)
        base = seg.segment(mode=cand["mode"], power=cand["power"], threshold="auto-ncut",
                           max_segments=cand["max_segments"], min_size=cand["min_size"],
                           exponent=cand["exponent"], upsample=upsample)
        t_cut += base.timings["cuts"]
        t_up += base.timings["upsample"]
        tree = base.cut.hierarchy
        for rule in RULES + VARIANTS + SWEEP:
            threshold = variant_threshold(tree, rule) if rule in VARIANTS else rule
            lab = base.labels if rule == "auto-ncut" else seg.segment(
                mode=cand["mode"], power=cand["power"], threshold=threshold, max_segments=cand["max_segments"],
                min_size=cand["min_size"], exponent=cand["exponent"], upsample=upsample).labels
            if rule in segs:
                segs[rule].append(int(lab.max()) + 1)
            if semantic:
                acc[rule] += metrics.semantic_counts(lab, s.gt, num_classes=dataset.num_classes,
                                                     ignore_label=dataset.ignore_label)
            else:
                acc[rule].append(metrics.score_regions(lab, s.gt))
    n = len(samples)
    rows = []
    for rule in RULES + VARIANTS + SWEEP:
        row = {"candidate": cand, "rule": rule, "dataset": dataset.name, "images": n,
               "cut_ms": 1e3 * t_cut / n, "upsample_ms": 1e3 * t_up / n}
        if rule in segs:
            row["segments"] = float(np.mean(segs[rule]))
        if semantic:
            row.update(miou=acc[rule].miou, pixel_accuracy=acc[rule].pixel_accuracy)
        else:
            sc = acc[rule]
            row.update(covering=sum(r.covering_num for r in sc) / sum(r.covering_den for r in sc),
                       pri=float(np.mean([r.pri for r in sc])), voi=float(np.mean([r.voi for r in sc])))
        rows.append(row)
    return rows


def show(rows: list[dict]) -> None:
    c = rows[0]["candidate"]
    name = ",".join(f"{k}={v}" for k, v in c.items() if DEFAULTS.get(k) != v) or "defaults"
    auto = [r for r in rows if isinstance(r["rule"], str)]
    sweep = [r for r in rows if not isinstance(r["rule"], str)]
    key = "miou" if "miou" in rows[0] else "covering"
    best = max(sweep, key=lambda r: r[key])
    parts = []
    for r in auto + [best]:
        label = r["rule"] if isinstance(r["rule"], str) else f"best const {r['rule']}"
        if key == "miou":
            parts.append(f"{label}: {r['miou']:.3f}/{r['pixel_accuracy']:.3f}" + (f" ({r['segments']:.1f} seg)" if "segments" in r else ""))
        else:
            parts.append(f"{label}: {r['covering']:.3f}/{r['pri']:.3f}/{r['voi']:.3f}" + (f" ({r['segments']:.1f} seg)" if "segments" in r else ""))
    print(f"[{rows[0]['dataset']}] {name}  cut {rows[0]['cut_ms']:.1f} ms up {rows[0]['upsample_ms']:.1f} ms | " + " | ".join(parts), flush=True)


def table(paths: list[str]) -> str:
    """Markdown: one row per candidate, BSDS500 and CamVid side by side, three rules each."""
    by = {}
    for path in paths:
        for line in open(path):
            r = json.loads(line)
            c = {**DEFAULTS, **r["candidate"]}
            name = ", ".join(f"{k}={v}" for k, v in c.items() if DEFAULTS.get(k) != v) or "defaults"
            by.setdefault(name, {}).setdefault(r["dataset"], []).append(r)

    def cell(rows, rule):
        r = next((x for x in rows if x["rule"] == rule), None)
        if r is None:
            return "-"
        if "miou" in r:
            return f"{r['miou']:.3f} / {r['pixel_accuracy']:.3f}"
        return f"{r['covering']:.3f} / {r['pri']:.3f} / {r['voi']:.3f}"

    def best(rows):
        consts = [x for x in rows if not isinstance(x["rule"], str)]
        if not consts:
            return "-"
        key = "miou" if "miou" in consts[0] else "covering"
        r = max(consts, key=lambda x: x[key])
        return f"{cell([r], r['rule'])} ({r['rule']})"

    out = ["| candidate (S=224: 16 x 16 patches unless size=448) | BSDS auto-ncut | BSDS auto-ncut-unweighted | "
           "BSDS best constant | CamVid auto-ncut | CamVid auto-ncut-unweighted | CamVid best constant | "
           "cut + upsample ms |", "|" + " --- |" * 8]
    for name, sets in by.items():
        b, cv = sets.get("bsds500", []), sets.get("camvid", [])
        any_row = (b or cv)[0]
        ms = f"{any_row['cut_ms']:.0f} + {any_row['upsample_ms']:.0f}"
        out.append(f"| {name} | {cell(b, 'auto-ncut')} | {cell(b, 'otsu:a=0,f=1')} | {best(b)} | "
                   f"{cell(cv, 'auto-ncut')} | {cell(cv, 'otsu:a=0,f=1')} | {best(cv)} | {ms} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default="/tmp/vitcache")
    ap.add_argument("--dataset", choices=["bsds500", "camvid"])
    ap.add_argument("--candidate", action="append", default=[], help="key=value,... (repeatable)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default=None, help="append JSON lines here")
    ap.add_argument("--sweep", default=None, help="comma list of constant NCut thresholds (default: SWEEP)")
    ap.add_argument("--table", nargs="+", default=None, metavar="JSONL",
                    help="print the markdown table of earlier runs' JSON lines and exit")
    args = ap.parse_args()
    if args.table:
        print(table(args.table))
        return
    if args.sweep:
        global SWEEP
        SWEEP = tuple(float(v) for v in args.sweep.split(","))
    if not args.dataset:
        ap.error("--dataset is required (or --table)")
    dataset = load_dataset(args.dataset).limited(args.limit)
    samples = list(dataset)
    for text in args.candidate or [""]:
        rows = run_candidate(samples, Path(args.cache), dataset, parse_candidate(text))
        show(rows)
        if args.out:
            with open(args.out, "a") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
