"""Quality of the weight-free source + cuts on BSDS500 val: Covering / PRI / VoI at ODS and OIS.

For each configuration the hierarchy is built once per image and pruned at a sweep of constant NCut
thresholds (for ODS/OIS) and with the automatic rules. Prints one markdown row per configuration.

    python bench/bench_quality_bsds.py                      # the package defaults
    python bench/bench_quality_bsds.py --grid 32 64 --color-scale 0.5 1 2 --upsample nearest joint-bilateral

Needs ../shared/data/bsds500 (or $WALKCUT_DATA); the data is read in place, never copied.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time

import numpy as np
from tqdm import tqdm
from walkcut.runtime.segmenter import Segmenter
from walkcut.runtime.sources.pixels import PixelSource

from walkcut.eval.datasets import load_dataset
from walkcut.eval.metrics import score_regions, summarize_region_sweep

THRESHOLDS = np.geomspace(0.003, 1.0, 24)


def evaluate(samples, *, grid, color_scale, mode, power, upsample, max_segments, min_size):
    seg = Segmenter(PixelSource(grid=grid, color_scale=color_scale), upsample=upsample)
    sweep, auto = [], {"auto-ncut": [], "auto-mincut": []}
    n_auto = {"auto-ncut": [], "auto-mincut": []}
    t_cut = []
    for s in samples:
        seg.set_image(s.image)
        opts = dict(mode=mode, power=power, max_segments=max_segments, min_size=min_size)
        first = seg.segment(threshold="auto-ncut", **opts)
        t_cut.append(first.timings["cuts"])
        row = [score_regions(seg.segment(threshold=float(t), **opts).labels, s.gt) for t in THRESHOLDS]
        sweep.append(row)
        for rule in auto:
            r = first if rule == "auto-ncut" else seg.segment(threshold=rule, **opts)
            auto[rule].append(score_regions(r.labels, s.gt))
            n_auto[rule].append(r.n_segments)
    summary = summarize_region_sweep(sweep)
    out = {"ods_ois": summary.as_dict(), "ods_threshold": float(THRESHOLDS[summary.ods_index["covering"]])}
    for rule, scores in auto.items():
        num = sum(r.covering_num for r in scores)
        den = sum(r.covering_den for r in scores)
        out[rule] = {"covering": num / den, "pri": float(np.mean([r.pri for r in scores])),
                     "voi": float(np.mean([r.voi for r in scores])), "segments": float(np.median(n_auto[rule]))}
    out["cut_ms_median"] = 1e3 * float(np.median(t_cut))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=int, nargs="+", default=[32])
    ap.add_argument("--color-scale", type=float, nargs="+", default=[1.0])
    ap.add_argument("--mode", nargs="+", default=["walk"])
    ap.add_argument("--power", type=int, nargs="+", default=[1])
    ap.add_argument("--upsample", nargs="+", default=["joint-bilateral"])
    ap.add_argument("--max-segments", type=int, nargs="+", default=[32])
    ap.add_argument("--min-size", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", default=None, help="append results as JSON lines here")
    args = ap.parse_args(argv)
    samples = list(tqdm(load_dataset("bsds500", limit=args.limit), desc="loading", file=sys.stderr))
    print("| grid | colour scale | mode | t | upsample | max seg | Cov ODS | Cov OIS | PRI ODS | PRI OIS | VoI ODS | VoI OIS "
          "| ODS tau | auto-ncut Cov/PRI/VoI (K) | auto-mincut Cov/PRI/VoI (K) | cut ms |")
    print("|" + "---|" * 16)
    for grid, cs, mode, power, up, ms in itertools.product(args.grid, args.color_scale, args.mode, args.power,
                                                            args.upsample, args.max_segments):
        t0 = time.perf_counter()
        r = evaluate(samples, grid=grid, color_scale=cs, mode=mode, power=power, upsample=up, max_segments=ms,
                     min_size=args.min_size)
        o = r["ods_ois"]
        a, m = r["auto-ncut"], r["auto-mincut"]
        print(f"| {grid} | {cs} | {mode} | {power} | {up} | {ms} | {o['covering_ods']:.3f} | {o['covering_ois']:.3f} "
              f"| {o['pri_ods']:.3f} | {o['pri_ois']:.3f} | {o['voi_ods']:.3f} | {o['voi_ois']:.3f} | {r['ods_threshold']:.3g} "
              f"| {a['covering']:.3f}/{a['pri']:.3f}/{a['voi']:.3f} ({a['segments']:.0f}) "
              f"| {m['covering']:.3f}/{m['pri']:.3f}/{m['voi']:.3f} ({m['segments']:.0f}) | {r['cut_ms_median']:.1f} |",
              flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({"grid": grid, "color_scale": cs, "mode": mode, "power": power, "upsample": up,
                                    "max_segments": ms, **r, "seconds": time.perf_counter() - t0}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
