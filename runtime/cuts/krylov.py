"""Eigen-solvers of one node: the top eigenvector of a symmetric matrix or operator.

Every node solver (:mod:`.spectral`, :mod:`.nodes`, :mod:`.sparse`) needs the eigenvector of the
largest eigenvalue of a symmetric operator from which the known top eigenvector ``u`` has been
deflated (``M - u u^T`` with ``M = D^-1/2 W D^-1/2``, or a shift-invert operator). The solvers here:

- :func:`top_eigenvector`: dense ``eigh`` of a small formed matrix (the only dense solve).
- :func:`arpack_top`, :func:`lobpcg_top`: scipy's implicitly restarted Lanczos and LOBPCG, the
  reference method's iterative solvers.
- :func:`lanczos_fiedler`: Lanczos with full reorthogonalisation that stops at the first Ritz
  residual under tolerance and returns its top Ritz vectors, so a node can hand its children a
  start block (the fast method).
- :func:`orthonormalize`: columns made orthonormal and orthogonal to given blocks (Cholesky QR).

This module imports nothing from the rest of the cuts: the other modules import it.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.linalg as sla
from scipy.sparse.linalg import ArpackNoConvergence, eigsh, lobpcg
from walkcut.runtime import defaults as _d

logger = logging.getLogger(__name__)


def fix_sign(v: np.ndarray) -> np.ndarray:
    """Make the entry of largest magnitude positive, so repeated solves return the same vector."""
    i = int(np.argmax(np.abs(v)))
    return -v if v[i] < 0 else v


def top_eigenvector(A: np.ndarray) -> np.ndarray:
    """Eigenvector ``(m,)`` of the largest eigenvalue of the dense symmetric ``A`` (LAPACK ``syevx``).

    ``driver="evx"``: with a repeated top eigenvalue (a graph of several identical components) the
    default ``"evr"`` can return no vector for a one-index subset; then the full ``eigh`` decides.
    """
    m = A.shape[0]
    vec = np.zeros((m, 0))
    if A.dtype in (np.float32, np.float64) and m > 1:
        # LAPACK ?syevx called directly: the same routine and arguments as
        # sla.eigh(subset_by_index=[m-1, m-1], driver="evx") (bit for bit), without its per-call
        # checks, which cost a quarter of a small node's solve.
        syevx, syevx_lwork = sla.get_lapack_funcs(("syevx", "syevx_lwork"), (A,))
        work, _ = syevx_lwork(m, lower=1)  # the workspace query sla.eigh makes
        lwork = max(1, int(np.ceil(float(np.real(work)))))
        _, v, found, _, info = syevx(A, compute_v=1, range="I", il=m, iu=m, lower=1, lwork=lwork)
        if info == 0 and found == 1:
            vec = v[:, :1]
    else:
        _, vec = sla.eigh(A, subset_by_index=[m - 1, m - 1], driver="evx", check_finite=False)
    if vec.shape[1] == 0:
        vec = sla.eigh(A, check_finite=False)[1][:, -1:]
    return vec[:, 0]


_SYEVX = {np.dtype(np.float32): sla.get_lapack_funcs("syevx", dtype=np.float32),
          np.dtype(np.float64): sla.get_lapack_funcs("syevx", dtype=np.float64)}


def top_eigenvector_small(A: np.ndarray) -> np.ndarray:
    """:func:`top_eigenvector` for the fast method's small dense nodes (float32 or float64 ``A``).

    LAPACK ``?syevx`` with its minimal workspace (``8 m``), which selects the unblocked tridiagonal
    reduction: on the nodes of up to ``DENSE_MAX_NODES`` members that is 20-30% faster than the
    blocked one the optimal workspace selects (measured at m = 20-160), and it skips the workspace
    query. The same eigenvector up to rounding, not bit for bit: the pixel path keeps
    :func:`top_eigenvector`.
    """
    m = A.shape[0]
    syevx = _SYEVX.get(A.dtype)
    if syevx is not None and m > 1:
        _, v, found, _, info = syevx(A, compute_v=1, range="I", il=m, iu=m, lower=1, lwork=8 * m)
        if info == 0 and found == 1:
            return v[:, 0]
    return top_eigenvector(A)


def tridiagonal_eigh(alpha: np.ndarray, beta: np.ndarray):
    """``(theta, S)``: eigenvalues (ascending) and eigenvectors of the symmetric tridiagonal matrix
    with diagonal ``alpha`` and off-diagonal ``beta``.

    LAPACK ``?stevd`` called directly: the routine and arguments ``sla.eigh_tridiagonal`` picks
    (bit for bit), without its per-call wrappers, which cost more than the solve on the small
    tridiagonal matrices of a Lanczos convergence check.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    if alpha.size == 1:
        return alpha.copy(), np.ones((1, 1))
    stevd = sla.get_lapack_funcs("stevd", (alpha, beta))
    theta, S, info = stevd(alpha, beta, compute_v=1)
    if info != 0:
        return sla.eigh_tridiagonal(alpha, beta, check_finite=False)
    return theta, S


def arpack_top(M, v0: np.ndarray, tol: float) -> np.ndarray:
    """Top eigenvector of ``M`` (array or LinearOperator) by ARPACK; its best partial vector when it
    does not converge but has one (logged), else :class:`~scipy.sparse.linalg.ArpackNoConvergence`."""
    m = M.shape[0]
    try:
        _, vec = eigsh(M, k=1, which="LA", v0=v0, tol=tol, ncv=min(m - 1, _d.LANCZOS_NCV), maxiter=50 * m)
    except ArpackNoConvergence as exc:
        if exc.eigenvectors is not None and exc.eigenvectors.shape[1]:
            logger.warning("ARPACK did not converge; using its best partial eigenvector")
            return exc.eigenvectors[:, 0]
        raise
    return vec[:, 0]


def lobpcg_top(M, v0: np.ndarray, tol: float) -> np.ndarray:
    """Top eigenvector of ``M`` by LOBPCG from the single start vector ``v0``."""
    _, vec = lobpcg(M, v0[:, None], largest=True, tol=tol, maxiter=500)
    return vec[:, 0]


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


def orthonormalize(S: np.ndarray, against: list[np.ndarray]) -> np.ndarray:
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


def lanczos_fiedler(op, u: np.ndarray, v0: np.ndarray, *, tol: float, max_steps: int, n_ritz: int,
                    check: int = _d.LANCZOS_CHECK, relative: bool = False, basis: bool = False,
                    fold_u: bool = False):
    """Top eigenpair of the symmetric operator ``op`` on the complement of ``u`` by Lanczos with full
    reorthogonalisation (``op`` maps an (m, k) block to an (m, k) block: ``M``, or a shift-invert
    operator of the sparse solver).

    Stops when the Ritz residual ``beta_j |s_j|`` of the top pair is below ``tol`` (times the top
    Ritz value when ``relative``), checked every ``check`` steps. Returns ``(v, ritz, converged)``:
    the Ritz vector (m,) and the top ``n_ritz`` Ritz vectors (m, k) for the children. With ``basis``,
    also ``(ritz, images)``: those Ritz vectors and ``op(ritz)`` rebuilt from the three-term relation
    ``op V = V T + r e_j^T`` (no product; exact up to rounding and the reorthogonalisation terms).
    With ``fold_u`` (the dense node solver, where a step's reorthogonalisation costs as much as a
    product on the smaller nodes), ``u`` is held as the basis's first row and each step subtracts
    the three-term recurrence, then makes one full pass over the basis (a second one only where that
    pass shrank ``w`` below 1/sqrt(2) of its norm): the same vectors up to rounding, with half the
    passes over the basis. The sparse solver keeps the two full passes.
    """
    m = v0.size
    steps = min(max_steps, m - 1)
    first = 1 if fold_u else 0
    rows = np.empty((steps + 1 + first, m))
    if fold_u:
        rows[0] = u
    V = rows[first:]  # Lanczos basis, one vector per row
    q = v0 - u * (u @ v0)
    q /= np.linalg.norm(q)
    V[0] = q
    alpha, beta = [], []
    converged = False
    j = 0
    for j in range(steps):
        w = op(V[j][:, None])[:, 0]
        done = rows[: j + 1 + first]
        if fold_u:
            # the three-term recurrence first, then one full pass that only removes rounding-level
            # components; a second pass where that pass still removed much (Daniel-Gragg-Kaufman-Stewart)
            if j:
                w -= beta[-1] * V[j - 1]
            a = float(V[j] @ w)
            w -= a * V[j]
            before = float(np.linalg.norm(w))
            w -= (done @ w) @ done
            b = float(np.linalg.norm(w))
            if b < 0.7071 * before:
                w -= (done @ w) @ done
                b = float(np.linalg.norm(w))
        else:
            a = float(V[j] @ w)
            for _ in range(2):  # full reorthogonalisation, twice (Kahan-Parlett)
                w -= (done @ w) @ done
                w -= u * (u @ w)
            b = float(np.linalg.norm(w))
        alpha.append(a)
        scale = max(abs(a), 1e-300) if relative else 1.0  # breakdown is judged against the operator's size
        last = j + 1 == steps or b < 1e-12 * scale
        # check == 1 (large dense nodes): every step while the tridiagonal solve is cheap against a
        # product (LANCZOS_CHECK_EVERY_STEP_NODES), then every LANCZOS_CHECK steps
        every = check if check != 1 or 8 * (j + 1) ** 3 <= m * m else _d.LANCZOS_CHECK
        if (j + 1) % every == 0 or last:
            theta, S = tridiagonal_eigh(np.array(alpha), np.array(beta))
            if b * abs(S[-1, -1]) < tol * (abs(theta[-1]) if relative else 1.0) or b < 1e-12 * scale:
                converged = True
                break
        if last:
            break
        beta.append(b)
        V[j + 1] = w / b
    a, b_ = np.array(alpha), np.array(beta[: len(alpha) - 1])
    _, S = tridiagonal_eigh(a, b_)
    k = min(n_ritz, len(alpha))
    Sk = S[:, ::-1][:, :k]
    ritz = V[: len(alpha)].T @ Sk  # (m, k), descending Ritz values
    if not basis:
        return ritz[:, 0], ritz, converged
    j1 = len(alpha)
    Vb = V[:j1]  # (j, m)
    images = a[:, None] * Vb  # op(v_i) = beta_{i-1} v_{i-1} + alpha_i v_i + beta_i v_{i+1}
    if j1 > 1:
        images[1:] += b_[:, None] * Vb[:-1]
        images[:-1] += b_[:, None] * Vb[1:]
    images[-1] += w  # the last step's residual (before normalisation)
    return ritz[:, 0], ritz, converged, (ritz, images.T @ Sk)
