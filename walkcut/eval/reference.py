"""A deliberately plain reference of recursive Normalized Cuts, for correctness and speed comparison.

It follows the structure of DiffCut's published recursive NCut code: one full dense
eigendecomposition of ``D^-1/2 (D - W) D^-1/2`` per node, and the split point searched over 100
evenly spaced thresholds of the second eigenvector (not the exact sweep). Depth-first, a node is
split while its best NCut is below ``tau``. Not used by the runtime; ``walkcut bench --compare-dense``
and bench/bench_cuts.py time it against :func:`walkcut.runtime.cut_affinity` on the same graphs.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla


def dense_recursive_ncut(W: np.ndarray, tau: float, *, min_size: int = 4, n_thresholds: int = 100) -> np.ndarray:
    """Labels ``(n,)`` of the dense-``eigh`` recursive NCut of a symmetric affinity ``W``."""
    W = np.asarray(W, dtype=np.float64)
    labels = np.zeros(W.shape[0], dtype=np.int64)
    stack, next_label = [np.arange(W.shape[0])], 0
    while stack:
        idx = stack.pop()
        sub = W[np.ix_(idx, idx)]
        d = sub.sum(axis=1)
        best = None
        if idx.size >= 2 * min_size and (d > 0).all():
            s = 1.0 / np.sqrt(d)
            _, vec = sla.eigh(np.eye(idx.size) - s[:, None] * sub * s[None, :])
            y = vec[:, 1] * s
            for t in np.linspace(y.min(), y.max(), n_thresholds)[1:-1]:
                a = y > t
                if a.sum() < min_size or (~a).sum() < min_size:
                    continue
                cut = sub[np.ix_(a, ~a)].sum()
                ncut = cut / d[a].sum() + cut / d[~a].sum()
                if best is None or ncut < best[0]:
                    best = (ncut, a)
        if best is not None and best[0] < tau:
            stack += [idx[best[1]], idx[~best[1]]]
        else:
            labels[idx] = next_label
            next_label += 1
    return labels


def synthetic_attention(R: int, k: int = 16, dim: int = 64, seed: int = 0, *, sharpness: float = 8.0) -> np.ndarray:
    """Row-stochastic ``softmax(sharpness * cos(F_i, F_j))`` over an R x R grid with ``k`` planted
    Voronoi regions: noisy per-region features, like aggregated self-attention of a scene."""
    rng = np.random.default_rng(seed)
    n = R * R
    yy, xx = np.divmod(np.arange(n), R)
    seeds = rng.uniform(0, R, (k, 2))
    region = np.argmin((yy[:, None] - seeds[:, 0]) ** 2 + (xx[:, None] - seeds[:, 1]) ** 2, axis=1)
    F = rng.standard_normal((k, dim))[region] + 0.5 * rng.standard_normal((n, dim))
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    S = sharpness * (F @ F.T)
    S -= S.max(axis=1, keepdims=True)
    P = np.exp(S)
    return P / P.sum(axis=1, keepdims=True)
