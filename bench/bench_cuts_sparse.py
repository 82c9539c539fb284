"""Sparse (pixel) graphs: the fast method's shift-invert node solver against ARPACK, same run.

For the first N images of a val set (BSDS500 or CamVid frames resized to 480 x 360, like the video
benchmark), the pixel source at R, and one BLAS thread:

1. ``solvers``: time per cut of the reference method (ARPACK per node) and the fast method
   (shift-invert per node), interleaved image by image so both see the same load; the adjusted Rand
   index of each against the reference method, against the reference method with a 1e-12 ARPACK
   tolerance ("tight": the eigenvectors themselves), and of each method against itself with another
   seed (does the answer depend on the start vector?). The fast method's former ARPACK option
   (``SPARSE_SOLVER="arpack"``, ARPACK on dense float32 node copies) was removed in v0.3; its row is
   in bench/RESULTS.md, "Cut engine v2, sparse graphs".
2. ``factor``: one root graph per R: time of SuperLU (three orderings), dense and banded Cholesky of
   ``L + sigma I``, and of one solve with each, against one sparse product.

    python bench/bench_cuts_sparse.py solvers --dataset camvid --limit 24 --grid 32 --max-segments 16
    python bench/bench_cuts_sparse.py factor --grids 32,48,64
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import time

import cv2
import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.sparse.linalg import splu
from threadpoolctl import threadpool_limits
from walkcut.runtime.cuts import ReferenceNodeSolver, cut_transition_matrix
from walkcut.runtime.cuts.graph import affinity_and_stationary
from walkcut.runtime.sources.pixels import PixelSource

from walkcut.eval.datasets import default_data_root
from walkcut.eval.metrics import adjusted_rand_index, contingency_table


def images(dataset: str, limit: int) -> list[np.ndarray]:
    root = default_data_root()
    if dataset == "camvid":
        paths = sorted(glob.glob(str(root / "camvid" / "val" / "*.png")))[:limit]
        size = (480, 360)
    else:
        paths = sorted(glob.glob(str(root / "bsds500" / "images" / "val" / "*.jpg")))[:limit]
        size = None
    if not paths:
        raise SystemExit(f"no {dataset} images under {root} (set WALKCUT_DATA)")
    out = []
    for p in paths:
        img = cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB)
        out.append(cv2.resize(img, size, interpolation=cv2.INTER_AREA) if size else img)
    return out


def ari(a, b) -> float:
    return adjusted_rand_index(contingency_table(a, b))


def run_solvers(args) -> None:
    trs = [PixelSource(grid=args.grid).transition(img) for img in images(args.dataset, args.limit)]
    configs = {  # name -> method
        "reference": "reference",
        "fast, shift-invert": "fast",
        "reference, tight (tol 1e-12)": ReferenceNodeSolver(tol=1e-12),
    }
    seconds = {k: 0.0 for k in configs}
    labels = {k: [] for k in configs}
    seed1 = {k: [] for k in configs if "tight" not in k}
    for tr in trs:
        for name, method in configs.items():
            kw = dict(stationary=tr.stationary, max_segments=args.max_segments, method=method)
            t = time.perf_counter()
            labels[name].append(cut_transition_matrix(tr.P, **kw).labels)
            seconds[name] += time.perf_counter() - t
            if name in seed1:
                seed1[name].append(cut_transition_matrix(tr.P, seed=1, **kw).labels)
    n = len(trs)
    print(f"{args.dataset}, first {n} images, R = {args.grid}, max_segments = {args.max_segments}; "
          f"load after {os.getloadavg()}")
    print("| method / node solver | ms per cut | vs reference | ARI vs reference: median (min) | ARI vs tight: median (min) "
          "| ARI seed 1 vs seed 0: median (min) | segments (median) |")
    print("|---|---|---|---|---|---|---|")
    for name in configs:
        a = [ari(x, y) for x, y in zip(labels["reference"], labels[name])]
        t = [ari(x, y) for x, y in zip(labels["reference, tight (tol 1e-12)"], labels[name])]
        s = [ari(x, y) for x, y in zip(labels[name], seed1[name])] if name in seed1 else None
        segs = np.median([lab.max() + 1 for lab in labels[name]])
        seed_col = f"{np.median(s):.3f} ({min(s):.3f})" if s else "-"
        print(f"| {name} | {1e3 * seconds[name] / n:.1f} | {seconds['reference'] / seconds[name]:.2f}x | "
              f"{np.median(a):.3f} ({min(a):.3f}) | {np.median(t):.3f} ({min(t):.3f}) | {seed_col} | {segs:.0f} |")


def timed(fn, repeat: int = 3):
    out = fn()
    t = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return 1e3 * (time.perf_counter() - t) / repeat, out


def run_factor(args) -> None:
    img = images("camvid", 1)[0]
    print("| R | n | nnz | SuperLU MMD(A+A^T) ms (fill) | SuperLU COLAMD ms | dense Cholesky ms | banded Cholesky ms "
          "(bandwidth) | one solve: SuperLU / dense / banded ms | one sparse product ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for R in (int(g) for g in args.grids.split(",")):
        print(factor_row(img, R), flush=True)
    print(f"load after {os.getloadavg()}")


def factor_row(img: np.ndarray, R: int) -> str:
    """One table row: the factorisations of the root graph of ``img`` at ``R``."""
    tr = PixelSource(grid=R).transition(img)
    W, _ = affinity_and_stationary(tr.P, stationary=tr.stationary)
    W = sp.csr_matrix(W)
    n = W.shape[0]
    s = 1 / np.sqrt(np.asarray(W.sum(axis=1)).ravel())
    A = sp.csr_matrix(sp.identity(n) * (1 + 1e-9) - sp.diags(s) @ W @ sp.diags(s))
    opts = {"SymmetricMode": True}
    t_mmd, lu = timed(lambda: splu(A.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options=opts))
    t_col, _ = timed(lambda: splu(A.tocsc(), permc_spec="COLAMD", diag_pivot_thresh=0.0, options=opts), 1)
    dense = A.toarray()
    t_dense, cho = timed(lambda: sla.cho_factor(dense, check_finite=False), 1)
    upper = sp.triu(A).tocoo()
    bw = int((upper.col - upper.row).max())
    ab = np.zeros((bw + 1, n))
    ab[bw + upper.row - upper.col, upper.col] = upper.data
    t_band, cb = timed(lambda: sla.cholesky_banded(ab, check_finite=False))
    x = np.random.default_rng(0).standard_normal(n)
    s_lu, _ = timed(lambda: lu.solve(x), 20)
    s_dense, _ = timed(lambda: sla.cho_solve(cho, x, check_finite=False), 20)
    s_band, _ = timed(lambda: sla.cho_solve_banded((cb, False), x, check_finite=False), 20)
    s_mv, _ = timed(lambda: W @ x, 50)
    return (f"| {R} | {n} | {W.nnz} | {t_mmd:.1f} ({lu.L.nnz + lu.U.nnz}) | {t_col:.1f} | {t_dense:.1f} | "
            f"{t_band:.1f} ({bw}) | {s_lu:.3f} / {s_dense:.3f} / {s_band:.3f} | {s_mv:.3f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("solvers", "factor"))
    ap.add_argument("--dataset", choices=("camvid", "bsds500"), default="camvid")
    ap.add_argument("--limit", type=int, default=24)
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--max-segments", type=int, default=16)
    ap.add_argument("--grids", default="32,48,64")
    args = ap.parse_args(argv)
    threadpool_limits(1)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"load before {os.getloadavg()}")
    (run_solvers if args.what == "solvers" else run_factor)(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
