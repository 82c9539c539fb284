"""Speed of the whole recursive cut (graph + hierarchy + stopping rule), median and p90.

Graphs: the weight-free pixel walk of a bundled example image (sparse), and a dense synthetic
attention-like walk (softmax of noisy features with planted regions, like aggregated self-attention),
at R = 32 (n = 1024) and R = 64 (n = 4096). Also times a dense-``eigh`` reference of the same
recursion structure as DiffCut's published code (one full eigendecomposition per node, 100-threshold
split search) on cosine^10 colour/position affinities, for the speed ratio.

    python bench/bench_cuts.py [--repeat 7] [--max-segments 32]
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import numpy as np
from walkcut.runtime import cut_affinity, cut_transition_matrix
from walkcut.runtime.imageio import read_image
from walkcut.runtime.sources.pixels import PixelSource, grid_cell_colors

from walkcut.eval.reference import dense_recursive_ncut, synthetic_attention


def cosine_color_position(image_rgb: np.ndarray, R: int, exponent: float = 10.0) -> np.ndarray:
    """cosine^exponent affinity of [Lab colour, position] features on an R x R grid."""
    import cv2

    lab = cv2.cvtColor(grid_cell_colors(image_rgb, R), cv2.COLOR_RGB2LAB).reshape(-1, 3) / 100.0
    yy, xx = np.divmod(np.arange(R * R), R)
    F = np.concatenate([lab, np.stack([yy, xx], 1) / R], axis=1)
    F = F - F.mean(axis=0)
    F /= np.linalg.norm(F, axis=1, keepdims=True) + 1e-12
    return np.maximum(F @ F.T, 0.0) ** exponent


def timed(fn, repeat: int):
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return 1e3 * np.median(ts), 1e3 * np.percentile(ts, 90), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--max-segments", type=int, default=32)
    ap.add_argument("--image", default="examples/coffee.jpg")
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args(argv)
    image = read_image(args.image)
    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}; "
          f"max_segments={args.max_segments}; threshold=auto-ncut")
    print("| graph | n | median ms | p90 ms | segments | tree nodes |")
    print("|---|---|---|---|---|---|")
    for R in (32, 64):
        tr = PixelSource(grid=R).transition(image)
        med, p90, r = timed(lambda: cut_transition_matrix(tr.P, stationary=tr.stationary,
                                                          max_segments=args.max_segments), args.repeat)
        print(f"| pixels walk (sparse) | {R * R} | {med:.1f} | {p90:.1f} | {r.n_segments} | {len(r.hierarchy.nodes)} |")
        P = synthetic_attention(R)
        med, p90, r = timed(lambda: cut_transition_matrix(P, max_segments=args.max_segments), args.repeat)
        print(f"| attention-like walk (dense) | {R * R} | {med:.1f} | {p90:.1f} | {r.n_segments} | {len(r.hierarchy.nodes)} |")
    if not args.skip_reference:
        W = cosine_color_position(image, 32)
        med_ref, _, ref = timed(lambda: dense_recursive_ncut(W, 0.9), 1)
        med, p90, r = timed(lambda: cut_affinity(W, threshold=0.9, max_segments=64), args.repeat)
        print(f"\ncosine^10 colour/position graph, n=1024, tau=0.9: dense-eigh reference {med_ref:.0f} ms "
              f"({ref.max() + 1} segments); walkcut {med:.1f} ms ({r.n_segments} segments); "
              f"speed-up {med_ref / med:.0f}x")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
