"""Stationary distribution ``pi`` (``pi @ P = pi``, ``sum(pi) = 1``) of a row-stochastic ``P``.

Two solvers, one per cut method:

- :func:`stationary_distribution` (``method="reference"``): float64 power iteration, then ARPACK
  (implicitly restarted Arnoldi) on ``P^T``, to ``STATIONARY_TOL`` = 1e-9.
- :func:`stationary_distribution_fast` (``method="fast"``, dense ``P``): the same steps in single
  precision (``x @ P`` with a float32 ``x``: a float64 vector times the float32 ``P`` makes numpy
  upcast the whole matrix at every product, 20x the cost, and ``P.T`` was copied once more), to
  ``FAST_STATIONARY_TOL`` = 1e-4, optionally from a previous frame's ``pi``. Partitions were
  identical on every walk measured (bench/RESULTS.md, "Cut engine v2").

Attention walks with strong segments have eigenvalues close to 1 (slow mixing), where Arnoldi needs
far fewer products with ``P`` than power iteration (bench/bench_cuts.py). For a reducible walk the
result is one of the stationary distributions.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigs
from walkcut.runtime import defaults as _d

logger = logging.getLogger(__name__)


def _dense_stationary(P) -> np.ndarray:
    """Tiny graphs: the dense eigenproblem of ``P^T`` is cheapest and exact."""
    dense = P.toarray() if sp.issparse(P) else P
    vals, vecs = sla.eig(dense.T)
    cand = np.abs(vecs[:, int(np.argmax(vals.real))].real)
    return cand / cand.sum()


def stationary_distribution(P, *, tol: float = _d.STATIONARY_TOL,
                            max_power_iter: int = _d.STATIONARY_POWER_ITER) -> np.ndarray:
    """``pi`` of a row-stochastic ``P`` (dense or sparse) in double precision.

    ``max_power_iter`` power-iteration steps first (enough when the walk mixes fast); if they have
    not converged to an L1 change below ``tol``, ARPACK on ``P^T`` for the eigenvalue with the largest
    real part, 1, started from the last iterate (its failure is logged and the iterate returned).
    """
    n = P.shape[0]
    if n <= _d.STATIONARY_DENSE_MAX:
        return _dense_stationary(P)
    pi = np.full(n, 1.0 / n)
    PT = P.T.tocsr() if sp.issparse(P) else np.ascontiguousarray(P.T)
    for _ in range(max_power_iter):
        nxt = (PT @ pi).astype(np.float64)
        s = nxt.sum()
        if s <= 0:
            break
        nxt /= s
        if np.abs(nxt - pi).sum() < tol:
            return nxt
        pi = nxt
    try:
        _, vec = eigs(PT, k=1, which="LR", v0=pi + 1e-3 / n, tol=tol, ncv=min(n - 1, _d.STATIONARY_NCV))
        cand = np.abs(vec[:, 0].real)
        if cand.sum() > 0:
            return cand / cand.sum()
    except (ArpackNoConvergence, ArpackError) as exc:
        logger.warning("stationary distribution: ARPACK failed (%s); using the last power iterate", exc)
    return pi


def stationary_distribution_fast(P, *, start=None, tol: float = _d.FAST_STATIONARY_TOL) -> np.ndarray:
    """``pi`` of a dense ``P`` in single precision (float64 result, sum 1).

    ``start`` (e.g. the previous video frame's ``pi``) replaces the uniform first iterate. Sparse
    and tiny ``P`` go to :func:`stationary_distribution`.
    """
    n = P.shape[0]
    if sp.issparse(P) or n <= _d.STATIONARY_DENSE_MAX:
        return stationary_distribution(P)
    P = np.asarray(P, dtype=np.float32)
    pi = np.full(n, 1.0 / n, dtype=np.float32)
    if start is not None:
        s = np.asarray(start, dtype=np.float64).ravel()
        if s.shape == (n,) and np.isfinite(s).all() and (s >= 0).all() and s.sum() > 0:
            pi = (s / s.sum()).astype(np.float32)
    for _ in range(_d.STATIONARY_POWER_STEPS):
        nxt = pi @ P  # (n,) float32: P is read row by row, no transpose
        total = float(nxt.sum(dtype=np.float64))
        if total <= 0:
            break
        nxt /= np.float32(total)
        if float(np.abs(nxt - pi).sum(dtype=np.float64)) < tol:
            return (nxt / nxt.sum(dtype=np.float64)).astype(np.float64)
        pi = nxt
    op = LinearOperator((n, n), matvec=lambda x: np.asarray(x, dtype=np.float32).ravel() @ P, dtype=np.float32)
    try:
        _, vec = eigs(op, k=1, which="LR", v0=pi + np.float32(1e-3 / n), tol=tol,
                      ncv=min(n - 1, _d.STATIONARY_NCV))
        cand = np.abs(vec[:, 0].real).astype(np.float64)
        if cand.sum() > 0:
            return cand / cand.sum()
    except (ArpackNoConvergence, ArpackError) as exc:
        logger.warning("stationary distribution: ARPACK failed (%s); using the last power iterate", exc)
    pi = pi.astype(np.float64)
    return pi / pi.sum()
