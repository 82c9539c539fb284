"""Sparse graphs in the fast method: shift-invert Lanczos per node, and cheap sub-block gathers.

Why shift-invert. The pixel source's graphs have leading eigenvalues of ``M = D^-1/2 W D^-1/2``
within 1e-5 to 1e-9 of 1 (regions joined by very weak edges: ``lambda_2`` of the normalised
Laplacian ``L = I - M`` was 1.5e-9 to 1.4e-4 on CamVid frames at R = 32 and 64). Plain Lanczos on
``M`` converges at a rate set by the absolute gap ``lambda_3 - lambda_2``, so ARPACK needed 100-300
products per node and still returned a start-dependent mixture where the gaps are below its
tolerance (the reference method's labels changed with the seed: adjusted Rand index down to 0.14 on BSDS500
val). Lanczos on ``(L + sigma I)^-1`` instead sees the eigenvalues ``1 / (lambda + sigma)``, whose
relative gaps are ``(lambda_3 - lambda_2) / lambda_3``: 7-9 solves per node reach a relative residual of
1e-8, and the vector no longer depends on the start (bench/RESULTS.md, "Cut engine v2, sparse
graphs").

The factorisation: ``L + sigma I`` is symmetric positive definite for every ``sigma > 0``. A grid
graph in row-major order is banded (bandwidth about radius x R: 96 at R = 32, 384 at R = 64), and
LAPACK's banded Cholesky (:func:`scipy.linalg.cholesky_banded`) factors it in 2.3 ms at R = 32 and
70 ms at R = 64, against 8.5 and 201 ms for SuperLU with its best ordering (minimum degree on
``A + A^T``; a reverse Cuthill-McKee ordering made the band wider, not narrower), and solves 2-3x
faster. Graphs whose band is too wide (any sparse ``P`` a caller passes) go to SuperLU
(:func:`scipy.sparse.linalg.splu`, minimum degree, diagonal pivots). ``sigma`` is far below any
``lambda_2`` that matters, and the exact null vector ``u = sqrt(d) / |sqrt(d)|`` (eigenvalue
``1 / sigma``) is projected out before and after every solve.

The Lanczos iteration itself is :func:`walkcut.runtime.cuts.krylov.lanczos_fiedler`; the node solver
that calls this module is :class:`walkcut.runtime.cuts.nodes.FastNodeSolver`.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.sparse.linalg import splu
from walkcut.runtime import defaults as _d
from walkcut.runtime.cuts.krylov import lanczos_fiedler

logger = logging.getLogger(__name__)

# LAPACK's banded Cholesky factor and solve, looked up once: the routines scipy's
# ``cholesky_banded`` / ``cho_solve_banded`` call (bit for bit), without their per-call wrappers
# (batch dispatch, shape checks), which cost as much as the solve itself on these small nodes.
_PBTRF, _PBTRS = sla.get_lapack_funcs(("pbtrf", "pbtrs"), (np.zeros((1, 1)),))


def row_sums(W: sp.csr_matrix) -> np.ndarray:
    """Row sums of a CSR matrix in float64: the reduction ``W.sum(axis=1)`` makes (bit for bit)
    without its wrappers, a tenth of its cost on a node's block."""
    d = np.zeros(W.shape[0])
    nonempty = np.flatnonzero(np.diff(W.indptr))
    if nonempty.size:
        d[nonempty] = np.add.reduceat(W.data, W.indptr[nonempty])
    return d


def _gather(W: sp.csr_matrix, idx: np.ndarray):
    """``(rows, cols, values)`` of ``W[idx][:, idx]`` for sorted ``idx``: the entries in row order,
    row and column numbers among ``idx``.

    A child holding a large share of its parent's rows is cut out by one mask over all entries;
    a small one reads only its own rows.
    """
    n, m = W.shape[0], idx.size
    indptr, indices = W.indptr, W.indices
    pos = np.full(n, -1, dtype=np.int64)
    pos[idx] = np.arange(m)
    if 4 * m >= n:
        rows = np.repeat(pos, np.diff(indptr))
        cols = pos[indices]
        keep = (cols >= 0) & (rows >= 0)
        return rows[keep], cols[keep], W.data[keep]
    starts = indptr[idx].astype(np.int64)
    counts = indptr[idx + 1] - starts
    ends = np.cumsum(counts)
    take = np.repeat(starts - (ends - counts), counts) + np.arange(int(ends[-1]) if m else 0)
    cols = pos[indices[take]]
    keep = cols >= 0
    return np.repeat(np.arange(m), counts)[keep], cols[keep], W.data[take[keep]]


def csr_sub_block(W: sp.csr_matrix, idx: np.ndarray) -> sp.csr_matrix:
    """``W[idx][:, idx]`` for a CSR matrix and sorted indices, gathered with a handful of numpy calls.

    scipy's two-step fancy indexing costs ~1 ms per call in index checks and format conversions on
    these small graphs, which is a third of a node's solve; this reads each selected row once.
    """
    idx = np.asarray(idx, dtype=np.int64)
    rows, cols, values = _gather(W, idx)
    new_ptr = np.zeros(idx.size + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=idx.size), out=new_ptr[1:])
    return sp.csr_matrix((values, cols, new_ptr), shape=(idx.size, idx.size))


def dense_sub_block(W: sp.csr_matrix, idx: np.ndarray) -> np.ndarray:
    """``W[idx][:, idx]`` as a dense float32 array (the small nodes' dense ``eigh``): the entries
    scattered straight into it, the numbers ``csr_sub_block(W, idx).toarray().astype(np.float32)``
    gives without the sparse matrix in between."""
    idx = np.asarray(idx, dtype=np.int64)
    m = idx.size
    rows, cols, values = _gather(W, idx)
    block = np.zeros((m, m), dtype=np.float32)
    block.reshape(-1)[rows * m + cols] = values
    return block


class _ShiftInvert:
    """``X -> Q (L + sigma I)^-1 Q X`` with ``Q = I - u u^T``; counts its solves in ``products``.

    ``L + sigma I`` is factored by banded Cholesky (LAPACK ``pbtrf``) when its band in the given
    node order is narrow enough (grid graphs in row-major order: bandwidth about radius x R; at most
    ``banded_max_entries`` band entries), else by SuperLU. Both are built straight from ``W``'s CSR
    arrays (no intermediate sparse matrices). The band is written in the column-major layout
    ``pbtrf`` reads, so the wrapper makes no copy and each row of ``W`` lands in consecutive memory
    (at R = 64 this took the root's band build and factorisation from 36 to 26 ms of CPU).
    """

    def __init__(self, W: sp.csr_matrix, s: np.ndarray, u: np.ndarray, sigma: float, *, banded_max_entries: int):
        m = W.shape[0]
        W.sum_duplicates()  # a no-op on the canonical matrices the cuts build
        rows = np.repeat(np.arange(m), np.diff(W.indptr))
        cols = W.indices
        on_diag = cols == rows
        diag = np.zeros(m)
        diag[rows[on_diag]] = W.data[on_diag]  # W.diagonal(), without its wrapper
        self.u = u
        self.products = 0
        self.banded = None
        self.lu = None
        lower = cols < rows  # W is symmetric: its strict lower triangle and the diagonal define L
        r, c = rows[lower], cols[lower]
        bandwidth = int((r - c).max(initial=0))
        if (bandwidth + 1) * m <= banded_max_entries:
            # LAPACK upper band storage ab[bw + i - j, j] = A[i, j] (i <= j), held as its transpose
            # band[j, bw + i - j] so that row j of W's lower triangle is written to consecutive memory
            # and band.T is the column-major array pbtrf reads (no copy). Same values, products in the
            # same order, so the same factor bit for bit as the row-major-built upper storage.
            band = np.zeros((m, bandwidth + 1))
            flat = band.reshape(-1)  # a view; flat indices scatter ~2.5x faster than 2-D fancy indexing
            flat[r * bandwidth + (c + bandwidth)] = -W.data[lower] * s[c] * s[r]  # band[r, bw + c - r]: off-diagonal of L
            flat[bandwidth::bandwidth + 1] = -diag * s * s  # band[:, bw]: the diagonal
            band[:, bandwidth] += 1.0 + sigma
            factor, info = _PBTRF(band.T, lower=0, overwrite_ab=1)
            if info == 0:
                self.banded = factor
                return
            # not positive definite in rounding (info > 0): let SuperLU pivot
            logger.info("banded Cholesky failed on %d nodes (LAPACK info %d); using SuperLU", m, info)
        values = -W.data * s[rows] * s[cols]  # off-diagonal of L; its diagonal gets 1 + sigma below
        # W is symmetric, so its CSR arrays read as CSC describe the same matrix.
        A = sp.csc_matrix((values, cols, W.indptr), shape=(m, m)) + sp.identity(m, format="csc") * (1.0 + sigma)
        self.lu = splu(A, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})

    def __call__(self, X: np.ndarray) -> np.ndarray:  # (m, k) -> (m, k)
        self.products += X.shape[1]
        u = self.u[:, None]
        X = np.ascontiguousarray(X - u @ (u.T @ X))
        if self.banded is not None:
            Z, info = _PBTRS(self.banded, X, lower=0, overwrite_b=1)
            if info != 0:
                raise ValueError(f"LAPACK pbtrs failed (info {info})")
        else:
            Z = self.lu.solve(X)
        return Z - u @ (u.T @ Z)


def shift_invert_fiedler(W: sp.csr_matrix, d: np.ndarray, *, seed: int = 0, start: np.ndarray | None = None,
                         tol: float = _d.SHIFT_INVERT_TOL, sigma: float = _d.SHIFT_INVERT_SIGMA,
                         max_steps: int = _d.SHIFT_INVERT_MAX_STEPS, check: int = _d.SHIFT_INVERT_CHECK,
                         banded_max_entries: int = _d.SHIFT_INVERT_BANDED_MAX_ENTRIES):
    """Generalised Fiedler vector ``y`` of a sparse symmetric ``W`` (all degrees ``d`` positive).

    Returns ``(y, converged)``; ``y`` is ``None`` when the factorisation fails (the caller then uses
    the reference solver). ``start``, a guess of ``y`` (the previous frame's), replaces the random
    start. ``tol`` is the relative Ritz residual, checked every ``check`` solves, at most
    ``max_steps`` of them; ``sigma`` the shift; ``banded_max_entries`` bounds the banded factor.
    """
    m = W.shape[0]
    sqrt_d = np.sqrt(d)
    u = sqrt_d / np.linalg.norm(sqrt_d)
    try:
        op = _ShiftInvert(W if sp.isspmatrix_csr(W) else sp.csr_matrix(W), 1.0 / sqrt_d, u, sigma, banded_max_entries=banded_max_entries)
    except (RuntimeError, ValueError, np.linalg.LinAlgError) as exc:  # e.g. SuperLU's "exactly singular"
        logger.info("shift-invert factorisation failed on %d nodes (%s); using the reference solver", m, exc)
        return None, False
    v0 = np.random.default_rng(seed).uniform(-1.0, 1.0, m)
    if start is not None and np.shape(start) == (m,) and np.isfinite(start).all():
        guess = np.asarray(start, dtype=np.float64) * sqrt_d
        guess -= u * (u @ guess)
        norm = float(np.linalg.norm(guess))
        if norm > 0:
            v0 = guess / norm + 1e-3 / np.sqrt(m) * v0  # keep every direction present
    v, _, ok = lanczos_fiedler(op, u, v0, tol=tol, max_steps=max_steps, n_ritz=1, check=check, relative=True)
    return v / sqrt_d, ok
