"""Where the time of one cut goes, in units of one single-thread float32 n x n mat-vec (same process).

Runs ``cut_transition_matrix`` once under cProfile per method and graph and sums the cumulative time
of the stage functions (a function called inside another stage counts in the innermost listed one).
For the fast method it also prints the load-independent work per stage: the bytes each stage streams
through dense matrices over 4 n^2 (counted mat-vecs, :mod:`walkcut.runtime.cuts.counts`) and its
products (``calls``).

    python bench/bench_cuts_profile.py [--grids 32,64]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

from threadpoolctl import threadpool_limits
from walkcut.runtime import cut_transition_matrix
from walkcut.runtime.cuts.counts import counting
from walkcut.runtime.imageio import read_image
from walkcut.runtime.sources.pixels import PixelSource

from walkcut.eval.reference import synthetic_attention

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cuts import matvec_seconds

#: stage -> function names (file suffix, function) whose cumulative time it gets (the reference
#: solver's fiedler_vector also runs inside the fast solver's fallbacks: counted twice there, rare)
STAGES = {
    "validation": [("graph.py", "check_transition_matrix")],
    "stationary pi": [("stationary.py", "stationary_distribution"), ("stationary.py", "stationary_and_second")],
    "graph W": [("graph.py", "build_graph")],
    "node blocks + bookkeeping": [("hierarchy.py", "add")],
    "eigen-solves": [("spectral.py", "fiedler_vector"), ("nodes.py", "_dense_vector"),
                     ("nodes.py", "_recycled_lanczos"), ("nodes.py", "_shift_invert_vector")],
    "sweeps": [("sweep.py", "sweep_ncut"), ("sweep.py", "sweep_ncut_chunked")],
}


def profile(P, st, method):
    pr = cProfile.Profile()
    t = time.perf_counter()
    pr.enable()
    cut_transition_matrix(P, stationary=st, method=method)
    pr.disable()
    total = time.perf_counter() - t
    stats = pstats.Stats(pr).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    cum = {}
    for (file, _, name), (_, _, _, ct, _) in stats.items():
        cum[(os.path.basename(file), name)] = cum.get((os.path.basename(file), name), 0.0) + ct
    out = {stage: sum(cum.get(key, 0.0) for key in keys) for stage, keys in STAGES.items()}
    # Nesting: build_graph holds validation, pi and W; hierarchy.add holds the node work
    # (gathers, eigen-solves, sweeps, per-node bookkeeping).
    out["graph W"] -= out["stationary pi"] + out["validation"]
    out["node blocks + bookkeeping"] -= out["eigen-solves"] + out["sweeps"]
    out["other"] = total - sum(out.values())
    out["total"] = total
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grids", default="32,64")
    args = ap.parse_args(argv)
    threadpool_limits(1)
    image = read_image("examples/coffee.jpg")
    print(f"load {os.getloadavg()}")
    for R in map(int, args.grids.split(",")):
        n = R * R
        tr = PixelSource(grid=R).transition(image)
        for name, P, st in (("dense walk", synthetic_attention(R, seed=1), None), ("pixels", tr.P, tr.stationary)):
            cut_transition_matrix(P, stationary=st)  # warm-up
            mv = matvec_seconds(n)
            rows = {method: profile(P, st, method) for method in ("reference", "fast")}
            mv = 0.5 * (mv + matvec_seconds(n))
            print(f"\n{name}, n = {n}: one mat-vec {1e3 * mv:.3f} ms")
            print("| stage | reference (mat-vecs) | fast (mat-vecs) |")
            print("|---|---|---|")
            for stage in rows["reference"]:
                print(f"| {stage} | {rows['reference'][stage] / mv:.0f} | {rows['fast'][stage] / mv:.0f} |")
            with counting() as c:
                cut_transition_matrix(P, stationary=st)
            units = c.units(n)
            print(f"\n{name}, n = {n}, fast method, counted work (no clock): "
                  f"{c.total_units(n):.1f} mat-vecs in all")
            print("| stage | counted mat-vecs | calls |")
            print("|---|---|---|")
            for stage in sorted(units):
                print(f"| {stage} | {units[stage]:.1f} | {c.calls.get(stage, 0)} |")
    print(f"load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
