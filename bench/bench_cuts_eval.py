"""Dataset scores of the fast and the exact cut engine at the defaults, same images, same run.

Runs what ``walkcut eval DATASET`` runs (pixel source, default cut options, the default ODS/OIS sweep on
region datasets) once per engine and prints the summaries side by side with their difference; the
target of the cut engine v2 is a difference under 0.005 on every score.

    python bench/bench_cuts_eval.py bsds500 camvid [--limit N] [--tight]

``--tight`` adds a third run: the exact engine with its ARPACK tolerance at 1e-12 instead of 1e-5, i.e.
(close to) the true eigenvectors. Where leading eigenvalues nearly coincide (CamVid frames) the
default-tolerance exact path returns a start-dependent mixture, and this row shows how far the exact
path itself moves when its eigenvectors are made accurate.
"""

from __future__ import annotations

import argparse
import os
import time

from walkcut.runtime.cuts import spectral
from walkcut.runtime.sources.pixels import PixelSource

from walkcut.cli.eval import DEFAULT_REGION_SWEEP
from walkcut.eval.datasets import load_dataset
from walkcut.eval.evaluate import evaluate, walkcut_segment_fn


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--tight", action="store_true", help="also run the exact engine at ARPACK tolerance 1e-12")
    args = ap.parse_args(argv)
    engines = ("exact", "fast", "exact-tight") if args.tight else ("exact", "fast")
    default_tol = spectral.fiedler_vector.__kwdefaults__["tol"]
    for name in args.datasets:
        ds = load_dataset(name, None, split="val", limit=args.limit)
        thresholds = list(DEFAULT_REGION_SWEEP) if ds.protocol == "regions" else None
        rows = {}
        for engine in engines:
            t = time.perf_counter()
            spectral.fiedler_vector.__kwdefaults__["tol"] = 1e-12 if engine == "exact-tight" else default_tol
            report = evaluate(ds, walkcut_segment_fn(PixelSource(), engine=engine.split("-")[0]),
                              thresholds=thresholds, progress=False)
            spectral.fiedler_vector.__kwdefaults__["tol"] = default_tol
            rows[engine] = report.to_dict()["summary"]
            print(f"{name} {engine}: {time.perf_counter() - t:.0f} s, load {os.getloadavg()}", flush=True)
        keys = [k for k, v in rows["exact"].items() if isinstance(v, (int, float))]
        print(f"| {name} | " + " | ".join(keys) + " |")
        print("|---" * (len(keys) + 1) + "|")
        for engine in engines:
            print(f"| {engine} | " + " | ".join(f"{rows[engine][k]:.4f}" for k in keys) + " |")
        for other in engines[1:]:
            print(f"| {other} - exact | " + " | ".join(f"{rows[other][k] - rows['exact'][k]:+.4f}" for k in keys)
                  + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
