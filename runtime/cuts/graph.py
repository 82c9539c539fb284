"""Graphs from a random walk: transition-matrix checks, matrix powers, affinities.

Let ``P`` be an (n, n) row-stochastic transition matrix over image patches and ``pi`` its stationary
distribution (``pi @ P == pi``). The affinity ``W`` that the cuts partition is built in one of three
ways (``mode``):

``walk``
    ``W = (Pi P + P^T Pi) / 2`` with ``Pi = diag(pi)``: the edge flow of the stationary walk,
    symmetrised. Then ``vol_W(A) = pi(A)`` and ``NCut_W(A, B) = Pr(A -> B | A) + Pr(B -> A | B)``:
    the Normalized Cut of ``W`` is the probability that one step of the walk leaves its segment
    (Meila & Shi 2001). Cutting ``W`` is cutting the walk.
``dot``
    Rows of ``F = P^t`` are patch features (where the walk goes next); ``W = F F^T``.
``cosine``
    ``W_ij = max(0, cos(F_i, F_j)) ** exponent``.

``power = t`` replaces ``P`` by the t-step chain ``P^t`` (repeated squaring): longer walks blur
fine structure and join patches with similar long-range behaviour, so t controls granularity.

``pi`` comes from :mod:`.stationary`. Dense transition matrices are kept in float32 (the cuts are
memory-bound on them); the fast method also builds the ``walk`` graph in place
(:func:`walk_affinity_inplace`).

References
----------
Shi & Malik, "Normalized Cuts and Image Segmentation", TPAMI 2000.
Meila & Shi, "A Random Walks View of Spectral Segmentation", AISTATS 2001.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from walkcut.runtime import defaults as _d
from walkcut.runtime.cuts.counts import tally
from walkcut.runtime.cuts.stationary import stationary_and_second, stationary_distribution

MODES = ("walk", "dot", "cosine")


class DisconnectedGraphWarning(UserWarning):
    """Some nodes have no edges at all; they are kept apart as one extra segment."""


def check_transition_matrix(P, *, row_tol: float = _d.ROW_TOL, name: str = "P"):
    """Validate ``P`` and return it with rows renormalised to 1: a float32 ndarray when dense (the
    cuts are memory-bound on dense graphs, and single precision halves the traffic), float64 CSR
    when sparse.

    Rows may deviate from 1 by up to ``row_tol`` (fp16 engines round) and are renormalised; rows
    that are all zero are allowed (the node has no out-going edges) and reported by the callers.

    Raises
    ------
    TypeError
        ``P`` is not an array or sparse matrix.
    ValueError
        ``P`` is not square, holds NaN/Inf or negative entries, or has rows that do not sum to 1.
    """
    if sp.issparse(P):
        P = sp.csr_matrix(P, dtype=np.float64)
        P.sum_duplicates()
        values = P.data
    else:
        try:
            P = np.asarray(P)
            if P.dtype.kind not in "fiub":
                P = P.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a numeric array or scipy sparse matrix ({exc})") from exc
        values = P
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise ValueError(f"{name} must be a square (n, n) matrix, got shape {P.shape}")
    if P.shape[0] < 2:
        raise ValueError(f"{name} must have at least 2 nodes, got {P.shape[0]}")
    if not sp.issparse(P):
        checked = _dense_checked_copy(P, name, row_tol)
        if checked is not None:
            unscaled, scale = checked
            tally("validation", 2 * unscaled.nbytes)  # the row scaling, read and write
            unscaled *= scale.astype(np.float32)[:, None]
            return unscaled
    finite = np.isfinite(values)
    if not finite.all():
        bad = int((~finite).sum())
        raise ValueError(
            f"{name} holds {bad} NaN/Inf entries: the attention engine produced invalid numbers "
            f"(check the model file, its precision, and the input image)"
        )
    if (values < -1e-6).any():
        raise ValueError(f"{name} has negative entries (min {values.min():.3g}); it must be a transition matrix")
    if sp.issparse(P):
        np.maximum(P.data, 0.0, out=P.data)
        rows = np.asarray(P.sum(axis=1)).ravel()
    else:
        P = np.maximum(P, 0, dtype=np.float32)
        rows = P.sum(axis=1, dtype=np.float64)
    nonzero = rows > 0
    off = np.abs(rows[nonzero] - 1.0)
    if off.size and off.max() > row_tol:
        i = int(np.flatnonzero(nonzero)[np.argmax(off)])
        raise ValueError(
            f"rows of {name} must sum to 1 (a row-stochastic transition matrix); row {i} sums to "
            f"{rows[i]:.6g}. Normalise the rows (P / P.sum(1, keepdims=True)) before cutting."
        )
    scale = np.where(nonzero, 1.0 / np.where(nonzero, rows, 1.0), 0.0)
    if sp.issparse(P):
        return sp.csr_matrix(sp.diags(scale) @ P)
    P *= scale[:, None].astype(np.float32)
    return P


def _dense_checked_copy(P: np.ndarray, name: str, row_tol: float):
    """The dense case of :func:`check_transition_matrix` in one pass over ``P`` by row blocks:
    ``(clipped float32 copy, row scale)``, the rows not yet scaled (the fast walk folds the
    scale into the graph's own pass over the matrix).

    Each block is read once while it is in cache (its extremes, the clipped float32 copy, the row
    sums) instead of once per check: the checks cost about a third of what separate whole-matrix
    passes did at n = 4096. Returns ``None`` when something is wrong, so the caller's whole-matrix
    checks find it and word the error.
    """
    n = P.shape[0]
    out = np.empty((n, n), dtype=np.float32)
    rows = np.empty(n, dtype=np.float64)
    ones = np.ones(n, dtype=np.float32)
    step = max(1, (1 << 18) // n)  # ~1 MB of float32 per block
    for r0 in range(0, n, step):
        r1 = min(r0 + step, n)
        o = out[r0:r1]
        o[...] = P[r0:r1]  # the only read of P; the checks below read the copy in cache
        lo = o.min()  # NaN, -Inf and negatives; a +Inf makes its row sum infinite
        if not np.isfinite(lo) or lo < -1e-6:
            return None
        if lo < 0:  # tiny negatives (fp16 rounding): clipped; the clip pass costs 4 mat-vecs at n = 4096
            np.maximum(o, 0, out=o)
        # the row sums as a float32 mat-vec (BLAS): a quarter of the time of numpy's float64
        # reduction, relative error ~1e-7, below the copy's own rounding of P
        rows[r0:r1] = o @ ones
    tally("validation", P.nbytes + out.nbytes)  # one pass reading P, writing the copy
    if not np.isfinite(rows).all():
        return None
    nonzero = rows > 0
    off = np.abs(rows[nonzero] - 1.0)
    if off.size and off.max() > row_tol:
        return None
    return out, np.where(nonzero, 1.0 / np.where(nonzero, rows, 1.0), 0.0)


def matrix_power(P, t: int):
    """``P^t`` by repeated squaring (dense or sparse)."""
    if not isinstance(t, (int, np.integer)) or isinstance(t, bool) or t < 1:
        raise ValueError(f"power must be an integer >= 1, got {t!r}")
    result = None
    base = P
    while True:
        if t & 1:
            result = base if result is None else result @ base
        t >>= 1
        if not t:
            break
        base = base @ base
    return sp.csr_matrix(result) if sp.issparse(result) else result


def walk_affinity_inplace(P: np.ndarray, pi: np.ndarray, *, tile: int = _d.SYMMETRIZE_TILE,
                          degrees: np.ndarray | None = None) -> np.ndarray:
    """``W = (Pi P + P^T Pi) / 2`` written over ``P`` (an array the caller owns), in square tiles.

    ``pi`` weights the rows (pass ``pi / row sums`` to normalise unscaled rows in the same pass);
    ``degrees``, a float64 ``(n,)`` array, receives the row sums of ``W``. The weighting, the
    symmetrisation and the row sums happen tile by tile while a tile is in cache: one read and one
    write of the matrix.

    The fast method's walk graph: one n x n buffer, no transposed temporary. The tile transposes and
    the weighted sums are OpenCV's (``cv2.transpose``, ``cv2.addWeighted``: blocked SIMD kernels):
    numpy's strided transposes made this step cost 64-92 single mat-vecs at n = 1024 and 28-45 at
    n = 4096; OpenCV's take 14 and 9-10 (bench/RESULTS.md, "Cut engine v2"). ``W`` is exactly
    symmetric: each lower tile is the transpose of its finished upper tile, and a diagonal tile's
    ``0.5 a + 0.5 b`` is the same number in both orders.
    """
    import cv2

    n = P.shape[0]
    weights = pi.astype(P.dtype)[:, None]  # (n, 1)
    if P.dtype != np.float32:  # the fast method's walks are float32; anything else takes numpy
        tally("graph W", 6 * P.nbytes)
        P *= weights
        P += P.T.copy()
        P *= 0.5
        if degrees is not None:
            degrees[:] = P.sum(axis=1, dtype=np.float64)
        return P
    tally("graph W", 2 * P.nbytes)  # each tile read and written once
    if degrees is not None:
        degrees[:] = 0.0
    # a tile's row and column sums as float32 mat-vecs (BLAS), accumulated in float64 across tiles:
    # numpy's float64 reductions cost a third of this function
    ones = np.ones(tile, dtype=P.dtype)
    for i in range(0, n, tile):
        i1 = min(i + tile, n)
        d = P[i:i1, i:i1]
        d *= weights[i:i1]
        cv2.addWeighted(d, 0.5, cv2.transpose(d), 0.5, 0.0, dst=d)
        if degrees is not None:
            degrees[i:i1] += d @ ones[: i1 - i]
        for j in range(i1, n, tile):
            j1 = min(j + tile, n)
            upper = P[i:i1, j:j1]
            lower = P[j:j1, i:i1]
            upper *= weights[i:i1]
            lower *= weights[j:j1]
            cv2.addWeighted(upper, 0.5, cv2.transpose(lower), 0.5, 0.0, dst=upper)
            lower[...] = cv2.transpose(upper)
            if degrees is not None:
                degrees[i:i1] += upper @ ones[: j1 - j]
                degrees[j:j1] += ones[: i1 - i] @ upper
    return P


def affinity(P, *, mode: str = _d.MODE, power: int = _d.POWER, stationary=None, exponent: float = 1.0,
             method: str = "reference", stationary_start=None):
    """Symmetric non-negative affinity ``W`` (dense or CSR) from a transition matrix; see
    :func:`affinity_and_stationary` for the parameters."""
    return affinity_and_stationary(P, mode=mode, power=power, stationary=stationary, exponent=exponent,
                                   method=method, stationary_start=stationary_start)[0]


def affinity_and_stationary(P, *, mode: str = _d.MODE, power: int = _d.POWER, stationary=None, exponent: float = 1.0,
                            method: str = "reference", stationary_start=None):
    """``(W, pi)``: the symmetric non-negative affinity (dense or CSR) of a transition matrix, and
    the stationary distribution used for it (``None`` unless ``mode="walk"``).

    Parameters
    ----------
    P : (n, n) array or sparse matrix
        Row-stochastic transition matrix (validated with :func:`check_transition_matrix`).
    mode : {"walk", "dot", "cosine"}
        See the module docstring.
    power : int, default 1
        Walk length t: ``P`` is replaced by ``P^t``.
    stationary : (n,) array, optional
        ``pi`` when the caller knows it (for a reversible walk ``P = D^-1 A``, ``pi ~ A.sum(1)``);
        computed otherwise. Only ``walk`` uses it.
    exponent : float, default 1.0
        ``cosine`` only: affinities are raised to this power (sharpening, as in DiffCut).
    method : {"reference", "fast"}, default "reference"
        The cut method the graph is built for. ``fast`` solves ``pi`` in single precision
        (:func:`~walkcut.runtime.cuts.stationary.stationary_and_second`, started from
        ``stationary_start`` when given) and builds a dense float32 ``walk`` graph in place
        (:func:`walk_affinity_inplace`); ``reference`` solves ``pi`` in double precision and
        symmetrises with numpy.
    stationary_start : (n,) array, optional
        ``fast`` only: a guess of ``pi`` (the previous frame's) to start the solve from.
    """
    graph = build_graph(P, mode=mode, power=power, stationary=stationary, exponent=exponent, method=method,
                        stationary_start=stationary_start)
    return graph.W, graph.pi


@dataclass(frozen=True, eq=False)
class Graph:
    """What :func:`build_graph` made: the affinity ``W``, ``pi`` (``walk`` mode), and what the fast
    method's building found on the way: the row sums of a dense ``W`` (``degrees``) and a guess of
    the root's generalised Fiedler vector (``root_hint``: ``phi / pi`` with ``phi`` the walk's second
    left Ritz vector from the stationary solve; ``P^t`` has the eigenvectors of ``P``)."""

    W: object
    pi: np.ndarray | None = None
    degrees: np.ndarray | None = None
    root_hint: np.ndarray | None = None


def build_graph(P, *, mode: str = _d.MODE, power: int = _d.POWER, stationary=None, exponent: float = 1.0,
                method: str = "reference", stationary_start=None) -> Graph:
    """:func:`affinity_and_stationary` as a :class:`Graph` (same parameters)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if method not in _d.METHODS:
        raise ValueError(f"method must be one of {_d.METHODS}, got {method!r}")
    if not (isinstance(exponent, (int, float)) and exponent > 0 and np.isfinite(exponent)):
        raise ValueError(f"exponent must be a positive finite number, got {exponent!r}")
    fast = method == "fast"
    scale = checked = None
    if fast and mode == "walk" and power == 1 and isinstance(P, np.ndarray):
        # The fast walk keeps the clipped copy unscaled: the row scale is folded into the
        # stationary products (on the vector) and into the graph's tile pass.
        if P.ndim == 2 and P.shape[0] == P.shape[1] >= 2 and P.dtype.kind in "fiub":
            checked = _dense_checked_copy(P, "P", _d.ROW_TOL)
    if checked is not None:
        P, scale = checked
    else:
        P = check_transition_matrix(P)
    Pt = matrix_power(P, power) if power != 1 else P
    if mode == "walk":
        hint = None
        if stationary is None:
            if fast:
                pi, phi = stationary_and_second(P, start=stationary_start, row_scale=scale)
                if phi is not None and (pi > 0).all():
                    hint = phi / pi
            else:
                pi = stationary_distribution(P)
        else:
            pi = np.asarray(stationary, dtype=np.float64).ravel()
            if pi.shape != (P.shape[0],) or not np.isfinite(pi).all() or (pi < 0).any() or pi.sum() <= 0:
                raise ValueError(
                    f"stationary must be a non-negative finite vector of length {P.shape[0]}"
                )
            pi = pi / pi.sum()
        if sp.issparse(Pt):
            flow = sp.diags(pi) @ Pt
            return Graph(sp.csr_matrix((flow + flow.T) * 0.5), pi)
        if fast and Pt.dtype == np.float32:
            # Pt is our own validated copy (or power of it) and is not needed afterwards.
            degrees = np.empty(Pt.shape[0])
            weights = pi if scale is None else pi * scale
            return Graph(walk_affinity_inplace(Pt, weights, degrees=degrees), pi, degrees, hint)
        flow = Pt * pi[:, None].astype(Pt.dtype)
        flow += flow.T
        flow *= 0.5
        return Graph(flow, pi)
    F = Pt.toarray() if sp.issparse(Pt) else Pt
    if mode == "dot":
        return Graph(F @ F.T)
    norms = np.linalg.norm(F, axis=1)
    Fn = F / np.where(norms > 0, norms, 1.0)[:, None]
    W = np.maximum(Fn @ Fn.T, 0.0)
    if exponent != 1.0:
        W **= exponent
    return Graph(W)


def zero_degree_nodes(W, *, degrees: bool = False, known: np.ndarray | None = None):
    """Indices of nodes whose affinity row is all zero (no edges, not even to themselves); with
    ``degrees``, also the row sums (float64) it read them from (``known``: row sums the caller
    already has, e.g. from building ``W``)."""
    if known is not None and np.shape(known) == (W.shape[0],):
        deg = np.asarray(known, dtype=np.float64)
    else:
        deg = np.asarray(W.sum(axis=1, dtype=np.float64)).ravel()
        if not sp.issparse(W):
            tally("degrees", W.nbytes)
    zero = np.flatnonzero(deg <= 0)
    if zero.size:
        warnings.warn(
            f"{zero.size} of {deg.size} nodes have no edges (zero degree); they cannot be cut and "
            f"are returned together as one extra segment",
            DisconnectedGraphWarning,
            stacklevel=3,
        )
    return (zero, deg) if degrees else zero
