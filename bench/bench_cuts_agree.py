"""Do the fast and the reference cut methods give the same partitions on real images?

Three graph families from the BSDS500 val images (sorted by name):

- ``dense``: a dense walk per image, ``softmax(-||f_i - f_j||^2 / T)`` over per-cell features
  (Lab colour, local colour spread as texture, position) on an R x R grid; ``T`` is chosen so the
  default rule gives 5-15 segments, like aggregated attention of a scene;
- ``pixels``: the weight-free pixel source at R (sparse);
- ``reference seed 1``: the reference method with another start seed, the noise floor of "same partition".

Prints the median / min adjusted Rand index of fast vs reference (seed 0) per family, and the fast
method's time relative to the reference one in the same run.

    python bench/bench_cuts_agree.py [--limit 100] [--grid 32]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
from threadpoolctl import threadpool_limits
from walkcut.runtime import cut_transition_matrix
from walkcut.runtime.imageio import read_image
from walkcut.runtime.sources.pixels import PixelSource

from walkcut.eval.datasets import default_data_root
from walkcut.eval.metrics import adjusted_rand_index, contingency_table

#: Softmax temperature of the dense image walks, in units of the mean squared feature distance:
#: gives 5-15 segments at the defaults on most BSDS500 val images (median in bench/RESULTS.md).
TEMPERATURE = 0.01


def dense_image_walk(image_rgb: np.ndarray, R: int) -> np.ndarray:
    """Row-stochastic (R*R, R*R) float32 walk from colour, texture and position of the grid cells."""
    img = cv2.resize(image_rgb, (8 * R, 8 * R), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32) / 100.0
    cells = lab.reshape(R, 8, R, 8, 3)
    mean = cells.mean(axis=(1, 3)).reshape(-1, 3)
    spread = cells.std(axis=(1, 3)).reshape(-1, 3)
    yy, xx = np.divmod(np.arange(R * R), R)
    F = np.concatenate([mean, 0.5 * spread, 0.5 * np.stack([yy, xx], 1) / R], axis=1).astype(np.float64)
    sq = (F * F).sum(1)
    D = np.maximum(sq[:, None] + sq[None, :] - 2 * F @ F.T, 0.0)
    S = -D / (TEMPERATURE * D.mean())
    S -= S.max(axis=1, keepdims=True)
    P = np.exp(S)
    return (P / P.sum(axis=1, keepdims=True)).astype(np.float32)


def ari(a, b) -> float:
    return adjusted_rand_index(contingency_table(a, b))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--families", default="dense,pixels")
    args = ap.parse_args(argv)
    threadpool_limits(1)
    paths = sorted((default_data_root() / "bsds500" / "images" / "val").glob("*.jpg"))[: args.limit]
    print(f"{len(paths)} BSDS500 val images, R = {args.grid}, load {os.getloadavg()}")
    for family in args.families.split(","):
        aris, noise, segs, t_fast, t_ref = [], [], [], 0.0, 0.0
        for path in paths:
            image = read_image(Path(path))
            if family == "dense":
                P, st = dense_image_walk(image, args.grid), None
            else:
                tr = PixelSource(grid=args.grid).transition(image)
                P, st = tr.P, tr.stationary
            t = time.perf_counter()
            fast = cut_transition_matrix(P, stationary=st, method="fast")
            t_fast += time.perf_counter() - t
            t = time.perf_counter()
            ref = cut_transition_matrix(P, stationary=st, method="reference")
            t_ref += time.perf_counter() - t
            other = cut_transition_matrix(P, stationary=st, method="reference", seed=1)
            aris.append(ari(fast.labels, ref.labels))
            noise.append(ari(other.labels, ref.labels))
            segs.append((fast.n_segments, ref.n_segments))
        aris, noise, segs = np.array(aris), np.array(noise), np.array(segs)
        print(f"| {family} | {len(paths)} | {np.median(aris):.3f} | {aris.min():.3f} | {(aris >= 0.97).mean():.0%} | "
              f"{np.median(noise):.3f} | {noise.min():.3f} | {np.median(segs[:, 0]):.0f} / {np.median(segs[:, 1]):.0f} | "
              f"{t_ref / t_fast:.2f}x |", flush=True)
    print(f"columns: family | images | median ARI fast vs reference | min | share >= 0.97 | median ARI reference seed 1 "
          f"vs seed 0 | min | median segments fast / reference | reference time / fast time; load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
