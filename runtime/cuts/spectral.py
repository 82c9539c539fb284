"""Two-way Normalized Cut of one (sub)graph: Fiedler vector and exact sweep.

The relaxed NCut of a graph with affinity ``W`` and degrees ``d`` is the second-smallest
generalised eigenvector of ``(D - W) y = lambda D y`` (Shi & Malik 2000). We solve the equivalent
symmetric problem: ``v`` is the eigenvector of the second-largest eigenvalue of
``M = D^-1/2 W D^-1/2``, and ``y = D^-1/2 v``. The largest eigenpair of ``M`` is known in closed
form (eigenvalue 1, ``u = sqrt(d) / ||sqrt(d)||``), so we deflate it, ``M - u u^T``, and ask the
solver for a single eigenvector.

The split point is then chosen on the sorted ``y`` by evaluating the exact
``NCut(A, B) = cut/vol(A) + cut/vol(B)`` at every sweep position in one pass (prefix sums).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh, lobpcg
from walkcut.runtime import defaults as _d

logger = logging.getLogger(__name__)

SOLVERS = ("auto", "arpack", "lobpcg", "dense")
#: Below this many nodes dense ``eigh`` beats the iterative solvers (measured: bench/bench_cuts.py).
DENSE_MAX_NODES = _d.DENSE_MAX_NODES
#: Iterative solvers are never used below this many nodes (ARPACK needs room for its Krylov space).
ITERATIVE_MIN_NODES = _d.ITERATIVE_MIN_NODES
#: Dense fallback is refused above this size (memory / time).
DENSE_FALLBACK_MAX_NODES = _d.DENSE_FALLBACK_MAX_NODES


class SolverError(RuntimeError):
    """Every eigensolver in the fallback chain failed."""


@dataclass(frozen=True)
class Bipartition:
    """Best two-way split of one graph. ``side`` is True for nodes in A (local indices)."""

    side: np.ndarray  # (m,) bool
    ncut: float
    cut: float
    volume: float  # vol(A) + vol(B)
    vector: np.ndarray | None = None  # (m,) the generalised eigenvector y the sweep ran on


def fix_sign(v: np.ndarray) -> np.ndarray:
    """Make the entry of largest magnitude positive, so repeated solves return the same vector."""
    i = int(np.argmax(np.abs(v)))
    return -v if v[i] < 0 else v


def _deflated_operator(W, inv_sqrt_d: np.ndarray, u: np.ndarray):
    """``M - u u^T`` as a dense array (dense W) or a LinearOperator (sparse W)."""
    if sp.issparse(W):
        M = sp.diags(inv_sqrt_d) @ W @ sp.diags(inv_sqrt_d)
        M = sp.csr_matrix(M)
        m = W.shape[0]

        def matvec(x):
            x = np.asarray(x)
            return M @ x - np.outer(u, u @ x).reshape(x.shape)

        return LinearOperator((m, m), matvec=matvec, matmat=matvec, dtype=np.float64)
    s = inv_sqrt_d.astype(W.dtype)
    M = W * s[:, None]
    M *= s[None, :]
    M -= np.outer(u.astype(W.dtype), u.astype(W.dtype))
    return M


def _solve_dense(M) -> np.ndarray:
    A = M.toarray() if sp.issparse(M) else (M @ np.eye(M.shape[0]) if isinstance(M, LinearOperator) else M)
    m = A.shape[0]
    # driver="evx": with a repeated top eigenvalue (a graph of several identical components) the
    # default "evr" can return no vector for a one-index subset.
    _, vec = sla.eigh(A, subset_by_index=[m - 1, m - 1], driver="evx", check_finite=False)
    if vec.shape[1] == 0:
        vec = sla.eigh(A, check_finite=False)[1][:, -1:]
    return vec[:, 0]


def _solve_arpack(M, v0: np.ndarray, tol: float) -> np.ndarray:
    m = M.shape[0]
    try:
        _, vec = eigsh(M, k=1, which="LA", v0=v0, tol=tol, ncv=min(m - 1, _d.LANCZOS_NCV), maxiter=50 * m)
    except ArpackNoConvergence as exc:
        if exc.eigenvectors is not None and exc.eigenvectors.shape[1]:
            logger.warning("ARPACK did not converge; using its best partial eigenvector")
            return exc.eigenvectors[:, 0]
        raise
    return vec[:, 0]


def _solve_lobpcg(M, v0: np.ndarray, tol: float) -> np.ndarray:
    X = v0[:, None]
    _, vec = lobpcg(M, X, largest=True, tol=tol, maxiter=500)
    return vec[:, 0]


_SOLVER_FUNCS = {"arpack": _solve_arpack, "lobpcg": _solve_lobpcg}


def fiedler_vector(
    W, d: np.ndarray, *, solver: str = "auto", seed: int = 0, tol: float = _d.EIGEN_TOL, start: np.ndarray | None = None
) -> np.ndarray:
    """Second generalised eigenvector ``y`` of ``(D - W) y = lambda D y`` (sign fixed).

    Parameters
    ----------
    W : (m, m) ndarray or sparse matrix
        Symmetric non-negative affinity with all degrees positive.
    d : (m,) ndarray
        Degrees ``W.sum(1)``.
    solver : {"auto", "arpack", "lobpcg", "dense"}
        ``auto`` uses dense ``eigh`` below ``DENSE_MAX_NODES`` nodes and ARPACK (Lanczos) above.
        A failing iterative solver falls back to the next one in ``arpack -> lobpcg -> dense``,
        each fallback logged as a warning; when all fail, :class:`SolverError` is raised.
    seed : int
        Seeds the start vector, so results repeat.
    tol : float
        Relative residual of the iterative solvers. 1e-5 is the loosest that gave the same labels for
        every seed on BSDS val pixel graphs (1e-3 agreed on only 57-100% of nodes across seeds where
        the second and third eigenvalues nearly coincide), at 15% more time than 1e-3.
    start : (m,) array, optional
        A guess of ``y`` (e.g. the previous video frame's), used as the iterative solvers' start
        vector instead of the seeded random one: fewer products when the guess is close.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    m = W.shape[0]
    sqrt_d = np.sqrt(d)
    u = sqrt_d / np.linalg.norm(sqrt_d)
    M = _deflated_operator(W, 1.0 / sqrt_d, u)
    if solver == "dense" or (solver == "auto" and m <= DENSE_MAX_NODES) or m <= ITERATIVE_MIN_NODES:
        chain = ["dense"]
    else:
        first = "arpack" if solver == "auto" else solver
        chain = [first] + [s for s in ("arpack", "lobpcg") if s != first] + ["dense"]
    v0 = np.random.default_rng(seed).uniform(-1.0, 1.0, m)
    if start is not None and start.shape == (m,) and np.all(np.isfinite(start)):
        guess = np.asarray(start, dtype=np.float64) * sqrt_d  # y -> v of the symmetric problem
        guess -= u * (u @ guess)
        if np.linalg.norm(guess) > 1e-8 * np.linalg.norm(sqrt_d):
            v0 = guess + 1e-3 * np.linalg.norm(guess) / np.sqrt(m) * v0  # keep every direction present
    v0 -= u * (u @ v0)  # start orthogonal to the known top eigenvector
    if isinstance(M, np.ndarray):
        v0 = v0.astype(M.dtype)
    errors = []
    for name in chain:
        try:
            if name == "dense":
                if m > DENSE_FALLBACK_MAX_NODES:
                    raise SolverError(f"dense eigh refused for {m} nodes (> {DENSE_FALLBACK_MAX_NODES})")
                v = _solve_dense(M)
            else:
                v = _SOLVER_FUNCS[name](M, v0, tol)
            if not np.all(np.isfinite(v)):
                raise SolverError(f"{name} returned non-finite values")
            break
        except (ArpackError, ArpackNoConvergence, SolverError, np.linalg.LinAlgError, ValueError) as exc:
            errors.append(f"{name}: {exc}")
            logger.warning("eigensolver %s failed on %d nodes (%s); falling back", name, m, exc)
    else:
        raise SolverError("all eigensolvers failed: " + "; ".join(errors))
    return fix_sign(v.astype(np.float64) / sqrt_d)


def sweep_ncut(W, d: np.ndarray, y: np.ndarray, *, min_size: int = 1) -> Bipartition | None:
    """Exact best NCut over all threshold positions of ``y``; ``None`` if no split is allowed.

    With nodes sorted by ``y`` and ``A_k`` the first ``k`` of them,
    ``assoc(A_k) = sum_{i, j in A_k} W_ij`` is a prefix sum of ``2 * (row sums of the strictly lower
    triangle) + diagonal`` of the permuted ``W``, so ``cut(A_k) = vol(A_k) - assoc(A_k)`` and the NCut
    for every ``k`` come from one pass over ``W``. Both sides keep at least ``min_size`` nodes.
    """
    m = W.shape[0]
    if m < 2 * min_size or m < 2:
        return None
    order = np.argsort(y, kind="stable")
    if sp.issparse(W):
        Ws = W[order][:, order]
        lower = np.asarray(sp.tril(Ws, k=-1).sum(axis=1, dtype=np.float64)).ravel()
        diag = Ws.diagonal()
    else:
        Ws = W[np.ix_(order, order)]
        lower = np.tril(Ws, k=-1).sum(axis=1, dtype=np.float64)
        diag = np.diagonal(Ws)
    return best_prefix_split(order, lower, diag, d, min_size=min_size)


def best_prefix_split(order: np.ndarray, lower: np.ndarray, diag: np.ndarray, d: np.ndarray, *,
                      min_size: int) -> Bipartition:
    """The sweep's last step, shared by both engines: the best NCut over the prefixes of ``order``.

    ``lower[k]`` is the sum of ``W`` between the ``k``-th node of ``order`` and the nodes before it,
    ``diag[k]`` its self-weight, both in sweep order; ``d`` the degrees in node order.
    """
    m = order.size
    assoc = np.cumsum(2.0 * lower + np.asarray(diag, dtype=np.float64))
    vol = np.cumsum(d[order])
    total = vol[-1]
    cut = np.maximum(vol - assoc, 0.0)
    k = np.arange(min_size - 1, m - min_size)  # prefix sizes min_size .. m - min_size (0-based end)
    with np.errstate(divide="ignore", invalid="ignore"):
        ncut = cut[k] / vol[k] + cut[k] / (total - vol[k])
    ncut = np.where(np.isfinite(ncut), ncut, np.inf)
    best = int(np.argmin(ncut))
    kb = int(k[best])
    side = np.zeros(m, dtype=bool)
    side[order[: kb + 1]] = True
    return Bipartition(side=side, ncut=float(ncut[best]), cut=float(cut[kb]), volume=float(total))


def bipartition(
    W, *, min_size: int = 1, solver: str = "auto", seed: int = 0, start: np.ndarray | None = None
) -> Bipartition | None:
    """Best 2-way Normalized Cut of ``W`` (spectral relaxation + exact sweep).

    Nodes without edges inside ``W`` cannot be placed by the eigenvector; they carry no volume and
    no cut, so they join the larger side without changing the NCut.
    """
    m = W.shape[0]
    if m < max(2, 2 * min_size):
        return None
    d = np.asarray(W.sum(axis=1, dtype=np.float64)).ravel()
    live = d > 0
    if live.sum() < max(2, 2 * min_size):
        return None
    if not live.all():
        idx = np.flatnonzero(live)
        sub = W[idx][:, idx] if sp.issparse(W) else W[np.ix_(idx, idx)]
        inner = bipartition(sub, min_size=min_size, solver=solver, seed=seed)
        if inner is None:
            return None
        side = np.zeros(m, dtype=bool)
        side[idx] = inner.side
        if inner.side.sum() * 2 >= inner.side.size:
            side[~live] = True
        return Bipartition(side=side, ncut=inner.ncut, cut=inner.cut, volume=inner.volume)
    y = fiedler_vector(W, d, solver=solver, seed=seed, start=start)
    split = sweep_ncut(W, d, y, min_size=min_size)
    return None if split is None else Bipartition(split.side, split.ncut, split.cut, split.volume, vector=y)
