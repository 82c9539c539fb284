"""Speed of the whole recursive cut (graph + hierarchy + stopping rule), fast and reference methods.

Graphs: the weight-free pixel walk of a bundled example image (sparse), and dense synthetic
attention-like walks (softmax of noisy features with planted regions, like aggregated self-attention),
at R = 32 (n = 1024) and R = 64 (n = 4096). Times are also given in units of one single-thread
float32 n x n matrix-vector product timed in the same process (the machines are shared; ratios in
one run are what repeat), and the work of one cut is counted without a clock: "counted mat-vecs" are
the bytes the cut streams through dense n x n matrices and node blocks over 4 n^2 (one float32
mat-vec), a product with k vectors counting k (:mod:`walkcut.runtime.cuts.counts`; fast method only,
sparse graphs count only their dense small nodes). Also times a dense-``eigh`` reference of the same recursion structure as
DiffCut's published code (one full eigendecomposition per node, 100-threshold split search) on
cosine^10 colour/position affinities, for the speed ratio, and the peak RSS of a fresh process that
runs one fast n = 4096 dense cut.

    python bench/bench_cuts.py [--repeat 5] [--max-segments 32] [--walks 3]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import subprocess
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits
from walkcut.runtime import cut_affinity, cut_transition_matrix
from walkcut.runtime.cuts.counts import counting
from walkcut.runtime.imageio import read_image
from walkcut.runtime.sources.pixels import PixelSource, grid_cell_colors

from walkcut.eval.metrics import adjusted_rand_index, contingency_table
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
    return np.median(ts), np.percentile(ts, 90), out


def matvec_seconds(n: int, repeat: int = 50) -> float:
    """Median time of one float32 ``A @ x`` (n x n), single thread."""
    rng = np.random.default_rng(0)
    A = rng.random((n, n), dtype=np.float32)
    x = rng.random(n, dtype=np.float32)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        A @ x
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def counted(fn, n: int) -> float:
    """Work of one call of ``fn`` in counted single float32 n x n mat-vecs (load-independent)."""
    with counting() as c:
        fn()
    return c.total_units(n)


def ari(a, b) -> float:
    return adjusted_rand_index(contingency_table(a, b))


def peak_rss_child(R: int, method: str) -> tuple[float, float, float]:
    """Peak RSS (MiB) of a fresh interpreter that loads one dense float32 walk and cuts it, its RSS
    before the cut (interpreter, libraries and P), and the peak of memory allocated during the cut
    (tracemalloc, which numpy reports its arrays to)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "P.npy")
        np.save(path, synthetic_attention(R).astype(np.float32))
        code = (
            "import sys, tracemalloc, numpy as np\n"
            "from walkcut.runtime import cut_transition_matrix\n"
            "def status(key):\n"
            "    for line in open('/proc/self/status'):\n"
            "        if line.startswith(key): return int(line.split()[1]) / 1024\n"
            "P = np.load(sys.argv[1])\n"
            "before = status('VmRSS')\n"
            "tracemalloc.start()\n"
            "cut_transition_matrix(P, method=sys.argv[2])\n"
            "print(status('VmHWM'), before, tracemalloc.get_traced_memory()[1] / 2**20)\n"
        )
        out = subprocess.run([sys.executable, "-c", code, path, method], check=True, capture_output=True,
                             text=True).stdout.split()
    return float(out[0]), float(out[1]), float(out[2])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--max-segments", type=int, default=32)
    ap.add_argument("--walks", type=int, default=3, help="dense synthetic walks (seeds) per size")
    ap.add_argument("--image", default="examples/coffee.jpg")
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args(argv)
    threadpool_limits(1)  # one BLAS thread, as the cuts use (and the mat-vec unit is timed with)
    image = read_image(args.image)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; max_segments={args.max_segments}; threshold=auto-ncut; "
          f"load {os.getloadavg()}")
    print("| graph | n | fast ms (p90) | reference ms | fast / mat-vec | reference / mat-vec | speed-up | ARI | segments "
          "| fast counted mat-vecs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for R in (32, 64):
        n = R * R
        tr = PixelSource(grid=R).transition(image)
        graphs = [("pixels walk (sparse)", tr.P, tr.stationary)]
        graphs += [(f"attention-like walk {s} (dense)", synthetic_attention(R, seed=s), None) for s in range(args.walks)]
        for name, P, st in graphs:
            mv = matvec_seconds(n)
            res = {}
            for method in ("fast", "reference"):
                res[method] = timed(functools.partial(cut_transition_matrix, P, stationary=st,
                                                      max_segments=args.max_segments, method=method), args.repeat)
            mv = 0.5 * (mv + matvec_seconds(n))  # before and after: the load drifts
            f, e = res["fast"], res["reference"]
            work = counted(functools.partial(cut_transition_matrix, P, stationary=st,
                                             max_segments=args.max_segments), n)
            print(f"| {name} | {n} | {1e3 * f[0]:.1f} ({1e3 * f[1]:.1f}) | {1e3 * e[0]:.1f} | {f[0] / mv:.0f} | "
                  f"{e[0] / mv:.0f} | {e[0] / f[0]:.1f}x | {ari(f[2].labels, e[2].labels):.3f} | "
                  f"{f[2].n_segments}/{e[2].n_segments} | {work:.0f} |", flush=True)
    if not args.skip_reference:
        W = cosine_color_position(image, 32)
        med_ref, _, ref = timed(lambda: dense_recursive_ncut(W, 0.9), 1)
        med, _, r = timed(lambda: cut_affinity(W, threshold=0.9, max_segments=64), args.repeat)
        med_x, _, rx = timed(lambda: cut_affinity(W, threshold=0.9, max_segments=64, method="reference"), args.repeat)
        med_ref2, _, _ = timed(lambda: dense_recursive_ncut(W, 0.9), 1)  # again: the load drifts
        med_ref = 0.5 * (med_ref + med_ref2)
        print(f"\ncosine^10 colour/position graph, n=1024, tau=0.9: dense-eigh reference {1e3 * med_ref:.0f} ms "
              f"({ref.max() + 1} segments); fast {1e3 * med:.1f} ms ({r.n_segments} segments), speed-up "
              f"{med_ref / med:.0f}x; reference {1e3 * med_x:.1f} ms ({rx.n_segments} segments), speed-up "
              f"{med_ref / med_x:.0f}x; ARI fast vs reference {ari(r.labels, rx.labels):.3f}")
    for method in ("fast", "reference"):
        peak, base, traced = peak_rss_child(64, method)
        print(f"n=4096 dense float32 walk, {method}: peak RSS of the process {peak:.0f} MiB ({base:.0f} MiB "
              f"before the cut: interpreter, libraries and P); peak allocated by the cut {traced:.0f} MiB")
    print(f"load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
