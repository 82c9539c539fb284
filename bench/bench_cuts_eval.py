"""Dataset scores of the fast and the reference cut method at the defaults, same images, same run.

Runs what ``walkcut eval DATASET`` runs (pixel source, default cut options, the default ODS/OIS sweep on
region datasets) once per method and prints the summaries side by side with their difference; the
target of the cut engine v2 (now ``method="fast"``) is a difference under 0.005 on every score.

    python bench/bench_cuts_eval.py bsds500 camvid [--limit N] [--tight]

``--tight`` adds a third run: the reference method with its ARPACK tolerance at 1e-12 instead of 1e-5,
i.e. (close to) the true eigenvectors. Where leading eigenvalues nearly coincide (CamVid frames) the
default-tolerance reference path returns a start-dependent mixture, and this row shows how far the
reference path itself moves when its eigenvectors are made accurate.
"""

from __future__ import annotations

import argparse
import os
import time

from walkcut.runtime.cuts import ReferenceNodeSolver
from walkcut.runtime.sources.pixels import PixelSource

from walkcut.cli.eval import DEFAULT_REGION_SWEEP
from walkcut.eval.datasets import load_dataset
from walkcut.eval.evaluate import evaluate, walkcut_segment_fn


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--tight", action="store_true", help="also run the reference method at ARPACK tolerance 1e-12")
    args = ap.parse_args(argv)
    methods = {"reference": "reference", "fast": "fast"}
    if args.tight:
        methods["reference-tight"] = ReferenceNodeSolver(tol=1e-12)
    for name in args.datasets:
        ds = load_dataset(name, None, split="val", limit=args.limit)
        thresholds = list(DEFAULT_REGION_SWEEP) if ds.protocol == "regions" else None
        rows = {}
        for label, method in methods.items():
            t = time.perf_counter()
            report = evaluate(ds, walkcut_segment_fn(PixelSource(), method=method),
                              thresholds=thresholds, progress=False)
            rows[label] = report.to_dict()["summary"]
            print(f"{name} {label}: {time.perf_counter() - t:.0f} s, load {os.getloadavg()}", flush=True)
        keys = [k for k, v in rows["reference"].items() if isinstance(v, (int, float))]
        print(f"| {name} | " + " | ".join(keys) + " |")
        print("|---" * (len(keys) + 1) + "|")
        for label in methods:
            print(f"| {label} | " + " | ".join(f"{rows[label][k]:.4f}" for k in keys) + " |")
        for other in list(methods)[1:]:
            print(f"| {other} - reference | "
                  + " | ".join(f"{rows[other][k] - rows['reference'][k]:+.4f}" for k in keys) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
