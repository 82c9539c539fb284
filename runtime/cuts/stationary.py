"""Stationary distribution ``pi`` (``pi @ P = pi``, ``sum(pi) = 1``) of a row-stochastic ``P``.

Two solvers, one per cut method:

- :func:`stationary_distribution` (``method="reference"``): float64 power iteration, then ARPACK
  (implicitly restarted Arnoldi) on ``P^T``, to ``STATIONARY_TOL`` = 1e-9.
- :func:`stationary_distribution_fast` / :func:`stationary_and_second` (``method="fast"``, dense
  ``P``): Arnoldi with full reorthogonalisation in single-precision products (``x @ P`` with a
  float32 ``x``: a float64 vector times the float32 ``P`` makes numpy upcast the whole matrix at
  every product, 20x the cost, and ``P.T`` was copied once more), optionally from a previous
  frame's ``pi``; it also returns the walk's second left Ritz vector, the root eigen-solve's start
  (bench/RESULTS.md, "Speed v3: cuts"; v2's ten power steps and ARPACK to 1e-4: "Cut engine v2").

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
from walkcut.runtime.cuts.counts import tally

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

    ``start`` (e.g. the previous video frame's ``pi``) replaces the uniform first vector. Sparse
    and tiny ``P`` go to :func:`stationary_distribution`. See :func:`stationary_and_second`.
    """
    return stationary_and_second(P, start=start, tol=tol)[0]


def stationary_and_second(P, *, start=None, tol: float = _d.FAST_STATIONARY_TOL, row_scale=None):
    """``(pi, phi)``: the stationary distribution of a dense ``P`` and a guess of the left eigenvector
    of its second-largest eigenvalue (``None`` where there is none).

    Arnoldi with full reorthogonalisation on ``P^T`` (products ``x @ P`` in float32, the basis in
    float64) from the uniform vector or ``start``, stopped when the L1 residual
    ``|pi P - pi|_1`` of the normalised top Ritz vector is below ``tol * STATIONARY_RESIDUAL_FACTOR``
    (checked every ``STATIONARY_CHECK`` products; after ``STATIONARY_MAX_STEPS`` ARPACK's restarted
    Arnoldi finishes from the best vector, and ``phi`` is ``None``). The same Krylov basis holds the
    walk's slow modes: its second Ritz vector, divided by ``pi``, is the start of the root's
    eigen-solve (for a reversible walk the Krylov space of ``P^T`` scaled by ``pi^-1/2`` is
    a Krylov space of the root's symmetric matrix). On the bench's walks this took 16-26 products
    where ten power steps and ARPACK took 27-35, at the same error against the float64 solve.

    ``row_scale`` (n,): the walk is ``diag(row_scale) P`` (rows not yet normalised); the scale is
    applied to the vector of each product instead of to the matrix.
    """
    n = P.shape[0]
    scale = None if row_scale is None else np.asarray(row_scale, dtype=np.float64)
    if sp.issparse(P) or n <= _d.STATIONARY_DENSE_MAX:
        return stationary_distribution(P if scale is None else sp.diags(scale) @ P), None
    P = np.asarray(P, dtype=np.float32)
    x = np.full(n, 1.0 / n)
    if start is not None:
        s = np.asarray(start, dtype=np.float64).ravel()
        if s.shape == (n,) and np.isfinite(s).all() and (s >= 0).all() and s.sum() > 0:
            x = s / s.sum()
    steps = min(_d.STATIONARY_MAX_STEPS, n - 1)
    V = np.empty((steps + 1, n))  # Arnoldi basis of P^T, one vector per row
    H = np.zeros((steps + 1, steps))
    V[0] = x / np.linalg.norm(x)
    target = tol * _d.STATIONARY_RESIDUAL_FACTOR
    pi = phi = None
    for j in range(steps):
        x = V[j] if scale is None else V[j] * scale
        w = (x.astype(np.float32) @ P).astype(np.float64)  # (n,): P^T v, P read row by row
        tally("stationary pi", P.nbytes, calls=1)
        done = V[: j + 1]
        for _ in range(2):  # full reorthogonalisation, twice
            h = done @ w
            w -= h @ done
            H[: j + 1, j] += h
        H[j + 1, j] = b = float(np.linalg.norm(w))
        breakdown = b < 1e-12 * max(1.0, float(np.abs(H[: j + 1, j]).max()))
        if (j + 1) % _d.STATIONARY_CHECK and not breakdown and j + 1 < steps:
            V[j + 1] = w / b
            continue
        vals, vecs = np.linalg.eig(H[: j + 1, : j + 1])
        order = np.argsort(-vals.real)
        z = vecs[:, order[0]].real
        cand = z @ done
        total = float(cand.sum())
        if total != 0 and np.isfinite(total):
            pi = np.abs(cand / total)
            pi /= pi.sum()
            residual = abs(b * z[-1] / total) * (np.abs(w).sum() / max(b, 1e-300))
            if j + 1 > 1 and vals.size > 1:
                phi = vecs[:, order[1]].real @ done
            if residual < target or breakdown:
                return pi, phi
        if breakdown:
            break
        V[j + 1] = w / b
    # Slowly mixing walks: ARPACK's restarted Arnoldi, from the best vector found, finishes the job
    # (an unrestarted basis would grow, and its Hessenberg eigen-solves with it).
    logger.info("stationary distribution: Arnoldi not converged after %d products; restarting with ARPACK", steps)
    start_vec = np.full(n, 1.0 / n) if pi is None else pi

    def matvec(x):
        tally("stationary pi", P.nbytes, calls=1)
        x = np.asarray(x, dtype=np.float64).ravel()
        return (x if scale is None else x * scale).astype(np.float32) @ P

    op = LinearOperator((n, n), matvec=matvec, dtype=np.float32)
    try:
        _, vec = eigs(op, k=1, which="LR", v0=start_vec + 1e-3 / n, tol=tol, ncv=min(n - 1, _d.STATIONARY_NCV))
        cand = np.abs(vec[:, 0].real).astype(np.float64)
        if cand.sum() > 0:
            # No second vector here: on walks this slow the short basis's guess made the root's
            # Lanczos and the tree below it dearer (BSDS500 dense image walks), not cheaper.
            return cand / cand.sum(), None
    except (ArpackNoConvergence, ArpackError) as exc:
        logger.warning("stationary distribution: ARPACK failed (%s); using the last Arnoldi vector", exc)
    if pi is None:
        dense = P.astype(np.float64)
        return stationary_distribution(dense if scale is None else dense * scale[:, None]), None
    return pi, None
