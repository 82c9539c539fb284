"""The fast cut engine: the same recursive Normalized Cut as the exact path, with less arithmetic.

What differs from the exact path (:mod:`.graph`, :mod:`.spectral`), and why (profile in
bench/RESULTS.md, "Cut engine v2"):

- The stationary distribution is solved in single precision (``x @ P`` with a float32 ``x``): a
  float64 vector times the float32 ``P`` makes numpy upcast the whole matrix at every product (20x
  the cost), and ``P.T`` was copied once more. Tolerance ``STATIONARY_TOL`` is enough for the
  partitions (identical labels on every walk measured).
- ``W = (Pi P + P^T Pi) / 2`` is built in place in square tiles: one n x n buffer, no transposed
  temporary.
- The deflated ``M - u u^T`` is never formed: the solver applies ``s * (W @ (s * X))`` and keeps its
  block orthogonal to ``u``.
- The eigen-solves recycle their Krylov information (dense graphs): each node runs one Lanczos
  (full reorthogonalisation, stopped at the first Ritz residual under tolerance) started from one
  Rayleigh-Ritz step on its parent's top ``BLOCK_SIZE`` Ritz vectors restricted to its members, which
  already span most of the child's leading eigenvectors. Block LOBPCG on the same recycled block is
  kept as ``NODE_SOLVER = "block"``: on a dense 4096 graph a 16-column product costs a few single
  products, but at n = 1024 (matrix in cache) 10-20, and it lost to the exact path there. Only dense
  graphs recycle: sparse pixel graphs have clusters of leading eigenvalues within 1e-6 (nearly
  disconnected specks), where a block solver at any affordable tolerance returned a mixture of them
  and changed the partitions (CamVid: 4 segments instead of 8), so their nodes keep the exact path's
  ARPACK and share only the other savings.
- Each node keeps its affinity block contiguously until its children are made, and a child's block
  is gathered from its parent's (small, cache-resident) block instead of the full matrix. The leaves'
  blocks are disjoint diagonal blocks, so they never hold more than one extra ``W`` in total.
- The sweep's lower-triangle sums are computed in row chunks with a rank mask instead of a permuted
  copy of the block plus a ``tril`` copy.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigs
from walkcut.runtime import defaults as _d
from walkcut.runtime.cuts import sparse, spectral

logger = logging.getLogger(__name__)

# Tuning constants live in runtime/defaults.py (with the measurements behind them).
STATIONARY_TOL = _d.FAST_STATIONARY_TOL
STATIONARY_POWER_STEPS = _d.STATIONARY_POWER_STEPS
BLOCK_SIZE = _d.BLOCK_SIZE
FAST_TOL = _d.FAST_TOL
FAST_TOL_F32 = _d.FAST_TOL_F32
RANDOM_COLUMNS = _d.RANDOM_COLUMNS
ROOT_MAX_ITER = _d.ROOT_MAX_ITER
CHILD_MAX_ITER = _d.CHILD_MAX_ITER
NODE_SOLVER = _d.NODE_SOLVER
LANCZOS_MAX_STEPS = _d.LANCZOS_MAX_STEPS
LANCZOS_CHECK = _d.LANCZOS_CHECK
SWEEP_CHUNK_ELEMENTS = _d.SWEEP_CHUNK_ELEMENTS
SYMMETRIZE_TILE = _d.SYMMETRIZE_TILE
SPARSE_SOLVER = _d.SPARSE_SOLVER
#: Nodes up to this size are solved by dense ``eigh`` (cheaper than any iteration at this size).
DENSE_MAX_NODES = spectral.DENSE_MAX_NODES


# --------------------------------------------------------------------------------------------------
# Graph


def stationary_distribution_fast(P, *, start=None, tol: float = STATIONARY_TOL) -> np.ndarray:
    """``pi`` with ``pi @ P = pi`` in single precision for a dense ``P`` (float64 result, sum 1).

    ``start`` (e.g. the previous video frame's ``pi``) replaces the uniform first iterate.
    Sparse ``P`` goes to the exact :func:`walkcut.runtime.cuts.graph.stationary_distribution`.
    """
    from walkcut.runtime.cuts.graph import stationary_distribution

    n = P.shape[0]
    if sp.issparse(P) or n <= 32:
        return stationary_distribution(P)
    P = np.asarray(P, dtype=np.float32)
    pi = np.full(n, 1.0 / n, dtype=np.float32)
    if start is not None:
        s = np.asarray(start, dtype=np.float64).ravel()
        if s.shape == (n,) and np.isfinite(s).all() and (s >= 0).all() and s.sum() > 0:
            pi = (s / s.sum()).astype(np.float32)
    for _ in range(STATIONARY_POWER_STEPS):
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
        _, vec = eigs(op, k=1, which="LR", v0=pi + np.float32(1e-3 / n), tol=tol, ncv=min(n - 1, 16))
        cand = np.abs(vec[:, 0].real).astype(np.float64)
        if cand.sum() > 0:
            return cand / cand.sum()
    except (ArpackNoConvergence, ArpackError) as exc:
        logger.warning("stationary distribution: ARPACK failed (%s); using the last power iterate", exc)
    pi = pi.astype(np.float64)
    return pi / pi.sum()


def walk_affinity_inplace(P: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """``W = (Pi P + P^T Pi) / 2`` written over ``P`` (a float32 array the caller owns), in tiles.

    The tile transposes and the weighted sums are OpenCV's (``cv2.transpose``, ``cv2.addWeighted``:
    blocked SIMD kernels): numpy's strided transposes made this step cost 64-92 single mat-vecs at
    n = 1024 and 28-45 at n = 4096; OpenCV's take 14 and 9-10 (bench/RESULTS.md, "Cut engine v2").
    ``W`` is exactly symmetric: each lower tile is the transpose of its finished upper tile, and a
    diagonal tile's ``0.5 a + 0.5 b`` is the same number in both orders.
    """
    import cv2

    n = P.shape[0]
    P *= pi.astype(P.dtype)[:, None]
    if P.dtype != np.float32:  # the fast engine's walks are float32; anything else takes numpy
        P += P.T.copy()
        P *= 0.5
        return P
    t = SYMMETRIZE_TILE
    for i in range(0, n, t):
        i1 = min(i + t, n)
        d = P[i:i1, i:i1]
        cv2.addWeighted(d, 0.5, cv2.transpose(d), 0.5, 0.0, dst=d)
        for j in range(i1, n, t):
            j1 = min(j + t, n)
            upper = P[i:i1, j:j1]
            lower = P[j:j1, i:i1]
            cv2.addWeighted(upper, 0.5, cv2.transpose(lower), 0.5, 0.0, dst=upper)
            lower[...] = cv2.transpose(upper)
    return P


# --------------------------------------------------------------------------------------------------
# Eigen-solves


def _cholesky_qr(S: np.ndarray) -> np.ndarray | None:
    """Orthonormal basis of the columns of ``S`` by Cholesky QR (two passes), ``None`` if ill-conditioned.

    One Gram product and a triangular solve: far cheaper than Householder QR on tall thin blocks.
    """
    for _ in range(2):
        G = S.T @ S
        try:
            L = np.linalg.cholesky(G)
        except np.linalg.LinAlgError:
            return None
        S = sla.solve_triangular(L, S.T, lower=True, check_finite=False).T
    return S


def _orthonormalize(S: np.ndarray, against: list[np.ndarray]) -> np.ndarray:
    """Columns of ``S`` orthogonal to every block in ``against`` and orthonormal (small columns dropped)."""
    for _ in range(2):  # twice is enough (Kahan-Parlett)
        for B in against:
            S = S - B @ (B.T @ S)
    norms = np.linalg.norm(S, axis=0)
    keep = norms > 1e-8 * max(1.0, float(norms.max(initial=0.0)))
    if not keep.any():
        return S[:, :0]
    S = S[:, keep] / norms[keep]
    Q = _cholesky_qr(S)
    if Q is None:  # nearly dependent columns: Householder QR, keeping the well-determined ones
        Q, Rf = np.linalg.qr(S)
        Q = Q[:, np.abs(np.diag(Rf)) > 1e-8]
        for B in against:
            Q = Q - B @ (B.T @ Q)
        Q, _ = np.linalg.qr(Q)
    return Q


class _Operator:
    """``X -> s * (W @ (s * X))`` for a dense float32 or sparse ``W`` with ``s = d^-1/2``."""

    def __init__(self, W, s: np.ndarray):
        self.W = W
        self.s = s
        self.products = 0

    def __call__(self, X: np.ndarray) -> np.ndarray:  # (m, k) -> (m, k) float64
        self.products += X.shape[1]
        Y = self.s[:, None] * X
        if sp.issparse(self.W):
            out = self.W @ Y
        else:
            out = self.W @ Y.astype(self.W.dtype)
        return self.s[:, None] * np.asarray(out, dtype=np.float64)


def block_fiedler(op: _Operator, u: np.ndarray, X0: np.ndarray, *, tol: float, max_iter: int):
    """Leading eigenvectors of ``M`` on the complement of ``u`` by LOBPCG; converged on column 0 only.

    Returns ``(X, converged)``: ``X`` (m, k) Ritz vectors by descending Ritz value.
    """
    U = u[:, None]
    X = _orthonormalize(X0, [U])
    AX = op(X)
    G = X.T @ AX
    theta, C = np.linalg.eigh((G + G.T) * 0.5)
    C = C[:, ::-1]
    theta = theta[::-1]
    X, AX = X @ C, AX @ C
    Pdir = np.zeros((X.shape[0], 0))  # LOBPCG's previous search directions
    k = X.shape[1]
    for _ in range(max_iter):
        R = AX - X * theta
        if np.linalg.norm(R[:, 0]) < tol:
            return X, True
        S = _orthonormalize(np.hstack([R, Pdir]), [U, X])
        if S.shape[1] == 0:
            return X, True
        AS = op(S)
        Z = np.hstack([X, S])
        AZ = np.hstack([AX, AS])
        G = Z.T @ AZ
        theta_all, C = np.linalg.eigh((G + G.T) * 0.5)
        C = C[:, ::-1][:, :k]
        theta = theta_all[::-1][:k]
        X, AX = Z @ C, AZ @ C
        Pdir = S @ C[k:]  # its product is recomputed after orthonormalisation (one block product per round)
    return X, False


def lanczos_fiedler(op, u: np.ndarray, v0: np.ndarray, *, tol: float, max_steps: int, n_ritz: int,
                    check: int = LANCZOS_CHECK, relative: bool = False):
    """Top eigenpair of the symmetric operator ``op`` on the complement of ``u`` by Lanczos with full
    reorthogonalisation (``op`` is ``M``, or a shift-invert operator of the sparse solver).

    Stops when the Ritz residual ``beta_j |s_j|`` of the top pair is below ``tol`` (times the top
    Ritz value when ``relative``), checked every ``check`` steps. Returns ``(v, ritz, converged)``:
    the Ritz vector (m,) and the top ``n_ritz`` Ritz vectors (m, k) for the children.
    """
    m = v0.size
    steps = min(max_steps, m - 1)
    V = np.empty((steps + 1, m))  # Lanczos basis, one vector per row
    q = v0 - u * (u @ v0)
    q /= np.linalg.norm(q)
    V[0] = q
    alpha, beta = [], []
    converged = False
    j = 0
    for j in range(steps):
        w = op(V[j][:, None])[:, 0]
        a = float(V[j] @ w)
        alpha.append(a)
        basis = V[: j + 1]
        for _ in range(2):  # full reorthogonalisation, twice (Kahan-Parlett)
            w -= (basis @ w) @ basis
            w -= u * (u @ w)
        b = float(np.linalg.norm(w))
        scale = max(abs(a), 1e-300) if relative else 1.0  # breakdown is judged against the operator's size
        last = j + 1 == steps or b < 1e-12 * scale
        if (j + 1) % check == 0 or last:
            theta, S = sla.eigh_tridiagonal(np.array(alpha), np.array(beta), check_finite=False)
            if b * abs(S[-1, -1]) < tol * (abs(theta[-1]) if relative else 1.0) or b < 1e-12 * scale:
                converged = True
                break
        if last:
            break
        beta.append(b)
        V[j + 1] = w / b
    _, S = sla.eigh_tridiagonal(np.array(alpha), np.array(beta[: len(alpha) - 1]), check_finite=False)
    k = min(n_ritz, len(alpha))
    ritz = V[: len(alpha)].T @ S[:, ::-1][:, :k]  # (m, k), descending Ritz values
    return ritz[:, 0], ritz, converged


def _dense_fiedler(W: np.ndarray, s: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Top eigenvector of the small deflated ``M - u u^T`` (same as the exact path)."""
    M = (s[:, None] * np.asarray(W, dtype=np.float64)) * s[None, :]
    M -= np.outer(u, u)
    m = M.shape[0]
    _, vec = sla.eigh(M, subset_by_index=[m - 1, m - 1], driver="evx", check_finite=False)
    if vec.shape[1] == 0:
        vec = sla.eigh(M, check_finite=False)[1][:, -1:]
    return vec[:, 0]


# --------------------------------------------------------------------------------------------------
# Sweep


def sweep_ncut_chunked(W, d: np.ndarray, y: np.ndarray, *, min_size: int = 1):
    """Exact best NCut over all thresholds of ``y`` (same result as :func:`spectral.sweep_ncut`)."""
    m = W.shape[0]
    if m < 2 * min_size or m < 2:
        return None
    order = np.argsort(y, kind="stable")
    rank = np.empty(m, dtype=np.int64)
    rank[order] = np.arange(m)
    if sp.issparse(W):
        W = sp.csr_matrix(W)
        row_rank = np.repeat(rank, np.diff(W.indptr))
        lower_mask = rank[W.indices] < row_rank
        lower = np.bincount(row_rank[lower_mask], weights=W.data[lower_mask], minlength=m)
        diag = W.diagonal().astype(np.float64)[order]
    else:
        lower_orig = np.empty(m, dtype=np.float64)
        rows = max(1, SWEEP_CHUNK_ELEMENTS // m)
        for r0 in range(0, m, rows):
            r1 = min(r0 + rows, m)
            block = W[r0:r1]  # contiguous rows, no gather
            mask = rank[None, :] < rank[r0:r1, None]
            lower_orig[r0:r1] = np.einsum("ij,ij->i", block, mask.astype(block.dtype), dtype=np.float64)
        lower = lower_orig[order]
        diag = np.diagonal(W).astype(np.float64)[order]
    return spectral.best_prefix_split(order, lower, diag, d, min_size=min_size)


# --------------------------------------------------------------------------------------------------
# One node


def bipartition_fast(W, *, min_size: int, seed: int, block: np.ndarray | None, start: np.ndarray | None = None,
                     recycle: bool = True):
    """Best 2-way NCut of one node's block ``W`` with the recycled solver.

    Parameters
    ----------
    recycle : bool
        ``False``: the node's Fiedler vector comes from the exact path's single-vector Lanczos
        (:func:`spectral.fiedler_vector`), for graphs whose leading eigenvalues cluster within the
        block solver's tolerance (sparse pixel graphs: nearly disconnected specks); the block and
        sweep savings remain.
    block : (m, k) array or None
        Start subspace (the parent's Ritz vectors restricted to this node, or the previous frame's
        root block); random columns fill it up to ``BLOCK_SIZE``.
    start : (m,) array or None
        A guess of the generalised Fiedler vector ``y`` (the previous frame's root vector).

    Returns
    -------
    (Bipartition or None, block or None)
        The split (with ``vector`` set) and the Ritz block to hand to the children.
    """
    m = W.shape[0]
    if m < max(2, 2 * min_size):
        return None, None
    d = np.asarray(W.sum(axis=1, dtype=np.float64)).ravel()
    if not (d > 0).all():  # rare: nodes with no edges inside this block; the exact path handles them
        return spectral.bipartition(W, min_size=min_size, seed=seed, start=start), None
    sqrt_d = np.sqrt(d)
    s = 1.0 / sqrt_d
    u = sqrt_d / np.linalg.norm(sqrt_d)
    ritz = None
    if sp.issparse(W) and m > DENSE_MAX_NODES and SPARSE_SOLVER == "shift-invert":
        y, ok = sparse.shift_invert_fiedler(W, d, seed=seed, start=start)
        if not ok:
            logger.info("shift-invert Lanczos did not converge on %d nodes; using the exact solver", m)
            y = spectral.fiedler_vector(W, d, seed=seed, start=y)
        y = spectral.fix_sign(y)
        split = sweep_ncut_chunked(W, d, y, min_size=min_size)
        if split is None:
            return None, None
        return spectral.Bipartition(split.side, split.ncut, split.cut, split.volume, vector=y), None
    if not recycle:
        y = spectral.fiedler_vector(W, d, seed=seed, start=start)
        split = sweep_ncut_chunked(W, d, y, min_size=min_size)
        if split is None:
            return None, None
        return spectral.Bipartition(split.side, split.ncut, split.cut, split.volume, vector=y), None
    if m <= DENSE_MAX_NODES:
        Wd = W.toarray() if sp.issparse(W) else W
        v = _dense_fiedler(Wd, s, u)
    else:
        rng = np.random.default_rng(seed)
        op = _Operator(W, s)
        tol = FAST_TOL if sp.issparse(W) or W.dtype == np.float64 else FAST_TOL_F32
        cols = []
        if start is not None and np.shape(start) == (m,) and np.isfinite(start).all():
            cols.append((np.asarray(start, dtype=np.float64) * sqrt_d)[:, None])
        k = min(BLOCK_SIZE, max(2, (m - 1) // 4))
        if block is not None and block.shape[0] == m and np.isfinite(block).all():
            cols.append(np.asarray(block[:, : k - RANDOM_COLUMNS], dtype=np.float64))
        if NODE_SOLVER == "lanczos":
            v0 = rng.uniform(-1.0, 1.0, m)
            if cols:  # one Rayleigh-Ritz step on the recycled vectors: the best start they hold
                X = _orthonormalize(np.hstack(cols), [u[:, None]])
                if X.shape[1]:
                    G = X.T @ op(X)
                    best = X @ np.linalg.eigh((G + G.T) * 0.5)[1][:, -1]
                    v0 = best + 1e-3 / np.sqrt(m) * v0  # keep every direction present
            v, ritz, ok = lanczos_fiedler(op, u, v0, tol=tol, max_steps=LANCZOS_MAX_STEPS, n_ritz=k)
        else:
            have = sum(c.shape[1] for c in cols)
            cols.append(rng.uniform(-1.0, 1.0, (m, max(k - have, RANDOM_COLUMNS))))
            max_iter = CHILD_MAX_ITER if block is not None else ROOT_MAX_ITER
            ritz, ok = block_fiedler(op, u, np.hstack(cols)[:, :k], tol=tol, max_iter=max_iter)
            v = ritz[:, 0]
        if not ok:
            logger.info("%s solver did not converge on %d nodes; using the exact solver", NODE_SOLVER, m)
            v = spectral.fiedler_vector(W, d, seed=seed, start=v / sqrt_d) * sqrt_d
    y = spectral.fix_sign(v / sqrt_d)
    split = sweep_ncut_chunked(W, d, y, min_size=min_size)
    if split is None:
        return None, None
    return spectral.Bipartition(split.side, split.ncut, split.cut, split.volume, vector=y), ritz


def sub_block(W, idx: np.ndarray):
    """``W[idx][:, idx]`` as a contiguous block (dense float32 for small sparse blocks)."""
    from walkcut.runtime.cuts.hierarchy import DENSE_SUBGRAPH_MAX_NODES

    if sp.issparse(W):
        sub = sparse.csr_sub_block(sp.csr_matrix(W), idx)
        # Shift-invert needs the sparse graph; nodes small enough for dense ``eigh`` (or for the
        # "arpack" solver's dense float32 products) become dense.
        dense_max = DENSE_MAX_NODES if SPARSE_SOLVER == "shift-invert" else DENSE_SUBGRAPH_MAX_NODES
        if idx.size <= dense_max:
            return sub.toarray().astype(np.float32)
        return sub
    return W.take(idx, axis=0).take(idx, axis=1)  # two takes: faster than one np.ix_ gather

