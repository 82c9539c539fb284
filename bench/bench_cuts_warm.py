"""What warm starts save on a sequence: consecutive CamVid val frames (name order), pixel source.

Each frame is cut cold and warm (``warm_start`` = the previous frame's hierarchy: its ``pi``, root
vector and root Ritz block), fast method, one BLAS thread; prints the median cut time of each, the
ratio, and the adjusted Rand index of warm vs cold labels. ``--dense`` also runs dense walks built
from the same frames (bench_cuts_agree.dense_image_walk), where ``pi`` is solved and the root is
recycled.

    python bench/bench_cuts_warm.py [--frames 30] [--grid 32] [--dense]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from walkcut.runtime import cut_transition_matrix
from walkcut.runtime.imageio import read_image
from walkcut.runtime.sources.pixels import PixelSource

from walkcut.eval.datasets import default_data_root
from walkcut.eval.metrics import adjusted_rand_index, contingency_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cuts_agree import dense_image_walk


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--dense", action="store_true")
    args = ap.parse_args(argv)
    threadpool_limits(1)
    paths = sorted((default_data_root() / "camvid" / "val").glob("*.png"))[: args.frames]
    print(f"{len(paths)} consecutive CamVid val frames, R = {args.grid}, load {os.getloadavg()}")
    for family in ("pixels", "dense") if args.dense else ("pixels",):
        cold_t, warm_t, aris, previous = [], [], [], None
        for path in paths:
            image = read_image(path)
            if family == "pixels":
                tr = PixelSource(grid=args.grid).transition(image)
                P, st = tr.P, tr.stationary
            else:
                P, st = dense_image_walk(image, args.grid), None
            t = time.perf_counter()
            cold = cut_transition_matrix(P, stationary=st)
            cold_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            warm = cut_transition_matrix(P, stationary=st, warm_start=previous)
            warm_t.append(time.perf_counter() - t)
            aris.append(adjusted_rand_index(contingency_table(cold.labels, warm.labels)))
            previous = warm.hierarchy
        cold_t, warm_t = np.array(cold_t[1:]), np.array(warm_t[1:])  # frame 0 has no previous frame
        print(f"| {family} | {1e3 * np.median(cold_t):.1f} | {1e3 * np.median(warm_t):.1f} | "
              f"{np.median(cold_t / warm_t):.2f}x | {np.median(aris):.3f} | {min(aris):.3f} |", flush=True)
    print(f"columns: graph | cold median ms | warm median ms | median cold/warm per frame | median ARI warm vs "
          f"cold | min; load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
