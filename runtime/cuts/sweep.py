"""The exact NCut sweep: the best two-way split of a graph along a vector ``y``.

With the nodes sorted by ``y`` and ``A_k`` the first ``k`` of them,
``assoc(A_k) = sum_{i, j in A_k} W_ij`` is a prefix sum of ``2 * (row sums of the strictly lower
triangle) + diagonal`` of the permuted ``W``, so ``cut(A_k) = vol(A_k) - assoc(A_k)`` and the exact
``NCut(A_k, B_k) = cut/vol(A_k) + cut/vol(B_k)`` for every ``k`` come from one pass over ``W``
(:func:`best_prefix_split`). Two ways to get the lower-triangle sums, same numbers:
:func:`sweep_ncut` gathers the permuted ``W`` (the reference method), :func:`sweep_ncut_chunked`
masks ranks in row chunks of ``W`` as it is (the fast method: no permuted copy, no ``tril`` copy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from walkcut.runtime import defaults as _d
from walkcut.runtime.cuts.counts import tally


@dataclass(frozen=True)
class Bipartition:
    """Best two-way split of one graph. ``side`` is True for nodes in A (local indices)."""

    side: np.ndarray  # (m,) bool
    ncut: float
    cut: float
    volume: float  # vol(A) + vol(B)
    vector: np.ndarray | None = None  # (m,) the generalised eigenvector y the sweep ran on


def best_prefix_split(order: np.ndarray, lower: np.ndarray, diag: np.ndarray, d: np.ndarray, *,
                      min_size: int) -> Bipartition:
    """The sweep's last step, shared by both sweeps: the best NCut over the prefixes of ``order``.

    ``lower[k]`` is the sum of ``W`` between the ``k``-th node of ``order`` and the nodes before it,
    ``diag[k]`` its self-weight, both in sweep order; ``d`` the degrees in node order. Both sides keep
    at least ``min_size`` nodes.
    """
    return _best_split(order, np.cumsum(2.0 * lower + np.asarray(diag, dtype=np.float64)), d, min_size)


def _best_split(order: np.ndarray, assoc: np.ndarray, d: np.ndarray, min_size: int) -> Bipartition:
    """The best NCut over the prefixes of ``order`` from their associations ``assoc`` (``assoc[k]``:
    the weight inside the first ``k + 1`` nodes), every sweep's last step."""
    m = order.size
    vol = np.cumsum(d[order])
    total = float(vol[-1])
    lo, hi = min_size - 1, m - min_size  # prefix ends min_size .. m - min_size (0-based)
    va = vol[lo:hi]
    ck = np.maximum(va - assoc[lo:hi], 0.0)
    vb = total - va
    # Divisions only where the volume is positive (inf elsewhere): the same numbers as dividing under
    # np.errstate and mapping non-finite results to inf, without the context manager's per-call cost.
    ncut = np.divide(ck, va, out=np.full(va.size, np.inf), where=va > 0)
    ncut += np.divide(ck, vb, out=np.full(vb.size, np.inf), where=vb > 0)
    ncut = np.where(np.isfinite(ncut), ncut, np.inf)
    best = int(np.argmin(ncut))
    side = np.zeros(m, dtype=bool)
    side[order[: lo + best + 1]] = True
    return Bipartition(side=side, ncut=float(ncut[best]), cut=float(ck[best]), volume=total)


def sweep_ncut(W, d: np.ndarray, y: np.ndarray, *, min_size: int = 1) -> Bipartition | None:
    """Exact best NCut over all threshold positions of ``y``; ``None`` if no split is allowed."""
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


def sweep_ncut_chunked(W, d: np.ndarray, y: np.ndarray, *, min_size: int = 1,
                       chunk_elements: int = _d.SWEEP_CHUNK_ELEMENTS) -> Bipartition | None:
    """The same split as :func:`sweep_ncut`, without a permuted copy of ``W``.

    Dense ``W``: the lower-triangle sums in sweep order are masked row sums over chunks of about
    ``chunk_elements`` entries (cache-sized); sparse ``W``: one ``bincount`` over the CSR entries.
    """
    m = W.shape[0]
    if m < 2 * min_size or m < 2:
        return None
    order = np.argsort(y, kind="stable")
    rank = np.empty(m, dtype=np.int64)
    rank[order] = np.arange(m)
    if sp.issparse(W):
        W = W if sp.isspmatrix_csr(W) else sp.csr_matrix(W)
        row_rank = np.repeat(rank, np.diff(W.indptr))
        col_rank = rank[W.indices]
        lower_mask = col_rank < row_rank
        lower = np.bincount(row_rank[lower_mask], weights=W.data[lower_mask], minlength=m)
        on_diag = col_rank == row_rank
        diag = np.zeros(m)
        diag[row_rank[on_diag]] = W.data[on_diag]  # W.diagonal() in sweep order, without its wrapper
    else:
        # the block, read once; each chunk's rank mask and its float copy stay in cache
        # (SWEEP_CHUNK_ELEMENTS), except where a chunk is larger than that (one row of a huge node)
        rows = max(1, chunk_elements // m)
        spill = rows * m > _d.SWEEP_CHUNK_ELEMENTS
        tally("sweeps", m * m * (W.itemsize + (2 + 2 * W.itemsize if spill else 0)), calls=1)
        lower_orig = np.empty(m, dtype=np.float64)
        for r0 in range(0, m, rows):
            r1 = min(r0 + rows, m)
            block = W[r0:r1]  # contiguous rows, no gather
            mask = rank[None, :] < rank[r0:r1, None]
            lower_orig[r0:r1] = np.einsum("ij,ij->i", block, mask.astype(block.dtype), dtype=np.float64)
        lower = lower_orig[order]
        diag = np.diagonal(W).astype(np.float64)[order]
    return best_prefix_split(order, lower, diag, d, min_size=min_size)


def sweep_ncut_dense(W: np.ndarray, d: np.ndarray, y: np.ndarray, *, min_size: int = 1,
                     chunk_elements: int = _d.SWEEP_CHUNK_ELEMENTS) -> Bipartition | None:
    """The split of :func:`sweep_ncut` for a dense ``W`` whose degrees ``d`` are all positive (the
    fast method's dense nodes), with one pass of BLAS over ``W`` instead of masks.

    The rows are taken in sweep order, a chunk at a time: a chunk's lower-triangle sums are its
    product with the indicator of the nodes of the earlier chunks (a float32 mat-vec) plus the
    strict lower triangle of its own diagonal block. The mat-vec sums in single precision (relative
    error ~1e-7 against the masked float64 sums), far below the eigenvector's tolerance.
    """
    m = W.shape[0]
    if m < 2 * min_size or m < 2:
        return None
    order = np.argsort(y, kind="stable")
    if m <= _d.SWEEP_SMALL_NODES:
        # small nodes: assoc(A_k) is the k-th diagonal entry of the 2-D prefix sums of the permuted
        # block (three numpy calls where the chunked form takes ten; Python dominates here)
        S = W.take(order, axis=0).take(order, axis=1, mode="clip").cumsum(axis=0, dtype=np.float64)
        tally("sweeps", W.nbytes, calls=1)
        return _best_split(order, np.diagonal(S.cumsum(axis=1)), d, min_size)
    # fewer, larger chunks than the masked sweep's: a chunk is read once by a mat-vec, so one larger
    # than L2 costs little, while each chunk costs ~25 us of Python
    rows = min(m, max(chunk_elements // m, _d.SWEEP_MIN_ROWS))
    tally("sweeps", W.nbytes, calls=1)  # one read of the block; the row chunks are re-read in cache
    seen = np.zeros(m, dtype=W.dtype)  # 1 for the nodes of the chunks done
    strict = _strict_lower(rows, W.dtype)  # strict lower triangle of a diagonal block
    lower = np.empty(m, dtype=np.float64)
    buf = np.empty((rows, m), dtype=W.dtype)
    for r0 in range(0, m, rows):
        r1 = min(r0 + rows, m)
        idx = order[r0:r1]
        chunk = W.take(idx, axis=0, out=buf[: r1 - r0], mode="clip")  # (rows, m) in sweep order
        own = chunk.take(idx, axis=1, mode="clip")  # its diagonal block
        own *= strict[: r1 - r0, : r1 - r0]
        lower[r0:r1] = chunk @ seen if r0 else 0.0
        lower[r0:r1] += own.sum(axis=1, dtype=np.float64)
        seen[idx] = 1
    diag = np.diagonal(W).astype(np.float64)[order]
    return best_prefix_split(order, lower, diag, d, min_size=min_size)


_STRICT: dict = {}


def _strict_lower(rows: int, dtype) -> np.ndarray:
    """``np.tri(rows, k=-1)`` as a slice of one cached 256-row triangle (the default chunks have at
    most 256 rows; a larger chunk, from a caller's ``chunk_elements``, gets its own)."""
    key = np.dtype(dtype)
    tri = _STRICT.get(key)
    if tri is None or tri.shape[0] < rows:
        if rows > 256:
            return np.tri(rows, k=-1, dtype=dtype)
        tri = _STRICT[key] = np.tri(256, k=-1, dtype=dtype)
        tri.flags.writeable = False
    return tri[:rows, :rows]
