"""Counted work of the fast cut on dense attention-like walks, stage by stage (no clock).

Units: single-thread float32 n x n mat-vecs, i.e. bytes streamed through dense matrices and node
blocks over 4 n^2, a product with k vectors counting k (:mod:`walkcut.runtime.cuts.counts`). Counts do
not depend on the machine's load, so they compare across runs and machines.

    python bench/bench_cuts_counts.py [--grid 64] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse

from threadpoolctl import threadpool_limits
from walkcut.runtime import cut_transition_matrix
from walkcut.runtime.cuts.counts import counting

from walkcut.eval.reference import synthetic_attention

STAGES = ("validation", "stationary pi", "graph W", "degrees", "node gathers", "eigen-solves", "sweeps",
          "small dense eigh")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=int, default=64)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args(argv)
    threadpool_limits(1)
    n = args.grid * args.grid
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = []
    for seed in seeds:
        P = synthetic_attention(args.grid, seed=seed)  # float64, as bench/bench_cuts.py passes it
        with counting() as c:
            result = cut_transition_matrix(P)
        runs.append((c, result.n_segments))
    print(f"n = {n}, fast method, counted mat-vecs per stage")
    print("| stage | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    print("|---|" + "---|" * len(seeds))
    for stage in STAGES:
        print(f"| {stage} | " + " | ".join(f"{c.units(n).get(stage, 0.0):.1f}" for c, _ in runs) + " |")
    print("| total | " + " | ".join(f"{c.total_units(n):.1f}" for c, _ in runs) + " |")
    print("| stationary products | " + " | ".join(str(c.calls.get("stationary pi", 0)) for c, _ in runs) + " |")
    print("| segments | " + " | ".join(str(k) for _, k in runs) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
