"""Dataset scores of the fast and the exact cut engine at the defaults, same images, same run.

Runs what ``walkcut eval DATASET`` runs (pixel source, default cut options, the default ODS/OIS sweep on
region datasets) once per engine and prints the summaries side by side with their difference; the
target of the cut engine v2 is a difference under 0.005 on every score.

    python bench/bench_cuts_eval.py bsds500 camvid [--limit N]
"""

from __future__ import annotations

import argparse
import os
import time

from walkcut.runtime.sources.pixels import PixelSource

from walkcut.cli.eval import DEFAULT_REGION_SWEEP
from walkcut.eval.datasets import load_dataset
from walkcut.eval.evaluate import evaluate, walkcut_segment_fn


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)
    for name in args.datasets:
        ds = load_dataset(name, None, split="val", limit=args.limit)
        thresholds = list(DEFAULT_REGION_SWEEP) if ds.protocol == "regions" else None
        rows = {}
        for engine in ("exact", "fast"):
            t = time.perf_counter()
            report = evaluate(ds, walkcut_segment_fn(PixelSource(), engine=engine), thresholds=thresholds,
                              progress=False)
            rows[engine] = report.to_dict()["summary"]
            print(f"{name} {engine}: {time.perf_counter() - t:.0f} s, load {os.getloadavg()}", flush=True)
        keys = [k for k, v in rows["exact"].items() if isinstance(v, (int, float))]
        print(f"| {name} | " + " | ".join(keys) + " |")
        print("|---" * (len(keys) + 1) + "|")
        for engine in ("exact", "fast"):
            print(f"| {engine} | " + " | ".join(f"{rows[engine][k]:.4f}" for k in keys) + " |")
        print("| fast - exact | " + " | ".join(f"{rows['fast'][k] - rows['exact'][k]:+.4f}" for k in keys) + " |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
