"""Node solvers: how the tree builder gets the best two-way cut of each node.

The hierarchy (:mod:`.hierarchy`) grows a binary tree and asks a :class:`NodeSolver` for every
node's split: :meth:`~NodeSolver.root` once, then :meth:`~NodeSolver.child` for each child, handing
back the parent's :class:`NodeCut`. The solver is chosen once per cut from the ``method`` option
(:func:`node_solver`), so the tree builder has no per-method branches. Both solvers grow the same
tree from the same splits up to eigensolver tolerance (tests/test_cuts_methods.py); they differ in
how each node's Fiedler vector is computed.

:class:`ReferenceNodeSolver` (``method="reference"``, the v0.1 algorithm)
    Gathers each node's affinity block from the whole graph and solves it from scratch
    (:func:`walkcut.runtime.cuts.spectral.bipartition`: dense ``eigh`` or ARPACK, falling back
    ``arpack -> lobpcg -> dense``).
:class:`FastNodeSolver` (``method="fast"``, the default; profile in bench/RESULTS.md, "Cut engine v2")
    - Each node keeps its affinity block contiguously until its children are made, and a child's
      block is gathered from its parent's (small, cache-resident) block instead of the whole graph.
      The leaves' blocks are disjoint diagonal blocks, so they never hold more than one extra ``W``.
    - Dense graphs recycle Krylov information: each node runs one Lanczos
      (:func:`~walkcut.runtime.cuts.krylov.lanczos_fiedler`) started from one Rayleigh-Ritz step on
      its parent's top ``BLOCK_SIZE`` Ritz vectors restricted to its members, which already span
      most of the child's leading eigenvectors. The deflated ``M - u u^T`` is never formed.
    - Sparse (pixel) graphs have clusters of leading eigenvalues within 1e-6 (nearly disconnected
      specks), where a recycled start at any affordable tolerance returned a mixture of them and
      changed the partitions (CamVid: 4 segments instead of 8); their nodes run shift-invert Lanczos
      instead (:mod:`.sparse`), whose vector does not depend on the start.
    - The sweep is the chunked one (:func:`~walkcut.runtime.cuts.sweep.sweep_ncut_chunked`).
    - A solve that does not converge falls back to the reference solver (logged at INFO).

Imports run one way: :mod:`.krylov`, :mod:`.sweep` <- :mod:`.spectral`, :mod:`.sparse` <- this
module <- :mod:`.hierarchy`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from walkcut.runtime import defaults as _d
from walkcut.runtime.cuts import krylov, sparse, spectral
from walkcut.runtime.cuts.counts import tally
from walkcut.runtime.cuts.sweep import Bipartition, sweep_ncut_chunked, sweep_ncut_dense

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class NodeCut:
    """What a node solver found for one node.

    ``volume`` is the node's total affinity and ``split`` its best two-way cut (``None`` when it
    cannot be split). ``block`` and ``ritz`` are what the node's children start from (the fast
    solver: the node's own affinity block and its top Ritz vectors; ``None`` otherwise); the tree
    builder drops them once the children exist. The root's ``ritz`` is kept for warm starts.
    """

    volume: float
    split: Bipartition | None
    block: object = None
    ritz: np.ndarray | None = None
    #: Fast solver, dense nodes: ``M ritz`` (from the Lanczos relation, no product) and ``sqrt(d)``,
    #: so the larger child's start block needs products with the off-diagonal block only.
    images: np.ndarray | None = None
    sqrt_d: np.ndarray | None = None


@runtime_checkable
class NodeSolver(Protocol):
    """How the tree builder cuts one node (see the module docstring)."""

    name: ClassVar[str]

    def prepare(self, W):
        """The whole graph as this solver reads it (called once per tree, after the isolated nodes
        were found)."""

    def root(self, W, members: np.ndarray, *, min_size: int, seed: int, start: np.ndarray | None = None,
             block: np.ndarray | None = None, degrees: np.ndarray | None = None) -> NodeCut:
        """Cut the root (``members``: the non-isolated nodes of the prepared graph ``W``), optionally
        from a previous graph's root vector ``start`` and Ritz block ``block``; ``degrees`` are the
        row sums of the whole ``W`` when the caller has them (a pass over ``W`` saved)."""

    def child(self, W, parent: NodeCut, members: np.ndarray, local: np.ndarray, *, min_size: int,
              seed: int) -> NodeCut:
        """Cut a child: ``members`` its nodes in ``W``, ``local`` their positions among its parent's."""


def _check_positive(name: str, value, *, integer: bool = False, low: float = 0.0) -> None:
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds) or not np.isfinite(value) or value <= low:
        raise ValueError(f"{name} must be {'an integer' if integer else 'a finite number'} > {low:g}, got {value!r}")


@dataclass(frozen=True)
class ReferenceNodeSolver:
    """Every node solved from scratch on a block gathered from the whole graph.

    Parameters
    ----------
    solver : {"auto", "arpack", "lobpcg", "dense"}, default "auto"
        First eigensolver of :func:`~walkcut.runtime.cuts.spectral.fiedler_vector` (``auto``: dense
        ``eigh`` up to ``DENSE_MAX_NODES`` nodes, ARPACK above); failures fall back
        ``arpack -> lobpcg -> dense`` with a logged warning.
    tol : float, default EIGEN_TOL (1e-5)
        Relative residual of the iterative solvers.
    """

    solver: str = "auto"
    tol: float = _d.EIGEN_TOL
    name: ClassVar[str] = "reference"

    def __post_init__(self):
        if self.solver not in spectral.SOLVERS:
            raise ValueError(f"solver must be one of {spectral.SOLVERS}, got {self.solver!r}")
        _check_positive("tol", self.tol)

    def prepare(self, W):
        return sp.csr_matrix(W) if sp.issparse(W) else W

    def root(self, W, members, *, min_size, seed, start=None, block=None, degrees=None) -> NodeCut:
        return self._cut(W, members, min_size=min_size, seed=seed, start=start)

    def child(self, W, parent, members, local, *, min_size, seed) -> NodeCut:
        return self._cut(W, members, min_size=min_size, seed=seed, start=None)

    def _cut(self, W, members, *, min_size, seed, start) -> NodeCut:
        if sp.issparse(W):
            sub = W[members][:, members]
            if members.size <= _d.DENSE_SUBGRAPH_MAX_NODES:
                # Small subgraphs: dense single-precision kernels beat sparse-call overhead.
                sub = sub.toarray().astype(np.float32)
        else:
            sub = W[np.ix_(members, members)]
        split = spectral.bipartition(sub, min_size=min_size, solver=self.solver, seed=seed, start=start,
                                     tol=self.tol)
        return NodeCut(volume=float(sub.sum(dtype=np.float64)), split=split)


class _Operator:
    """``X -> s * (W @ (s * X))`` for a dense float32 or sparse ``W`` with ``s = d^-1/2``: ``M``
    applied without forming it; counts its column products in ``products``."""

    def __init__(self, W, s: np.ndarray):
        self.W = W
        self.s = s
        self.products = 0
        self._col = s[:, None]
        self._sparse = sp.issparse(W)

    def __call__(self, X: np.ndarray) -> np.ndarray:  # (m, k) -> (m, k) float64
        self.products += X.shape[1]
        Y = self._col * X
        if self._sparse:
            tally("eigen-solves (sparse)", 0, calls=X.shape[1])
            out = self.W @ Y
        else:
            tally("eigen-solves", X.shape[1] * self.W.nbytes, calls=X.shape[1])
            if X.shape[1] > 1:
                # W is symmetric: W Y = (Y^T W)^T, which OpenBLAS computes 1.4-1.5x faster for a few
                # columns on large blocks (12 columns, m = 1413-2683)
                out = (Y.T.astype(self.W.dtype) @ self.W).T
            else:
                out = self.W @ Y.astype(self.W.dtype)
        return self._col * out  # float64 (the scale is), in one pass


def sub_block(W, idx: np.ndarray):
    """``W[idx][:, idx]`` as a contiguous block; sparse blocks small enough for dense ``eigh``
    (``DENSE_MAX_NODES``) become dense float32, larger ones stay sparse for shift-invert."""
    if sp.issparse(W):
        W = W if sp.isspmatrix_csr(W) else sp.csr_matrix(W)
        if idx.size <= _d.DENSE_MAX_NODES:
            return sparse.dense_sub_block(W, idx)
        return sparse.csr_sub_block(W, idx)
    return gather_block(W, idx)[0]


def gather_block(W: np.ndarray, idx: np.ndarray, other: np.ndarray | None = None):
    """``(W[idx][:, idx], its row sums, W[idx][:, other] or None)`` of a dense ``W``, in one pass.

    Row chunks of about ``GATHER_CHUNK_BYTES`` are taken from ``W`` (the only read of ``W``) and
    split into their columns while they sit in cache, where the row sums are also taken: the block
    is written once and not read again.
    """
    m, size = idx.size, W.shape[0]
    block = np.empty((m, m), dtype=W.dtype)
    off = None if other is None else np.empty((m, other.size), dtype=W.dtype)
    d = np.empty(m, dtype=np.float64)
    rows = max(1, _d.GATHER_CHUNK_BYTES // max(1, size * W.itemsize))
    ones = np.ones(m, dtype=W.dtype)
    for r0 in range(0, m, rows):
        r1 = min(r0 + rows, m)
        chunk = W.take(idx[r0:r1], axis=0)
        # mode="clip" (the indices are valid): with the default "raise" numpy buffers every take
        # into ``out`` through a temporary copy, which made the gather 3-6x slower (bench/RESULTS.md)
        chunk.take(idx, axis=1, out=block[r0:r1], mode="clip")
        d[r0:r1] = block[r0:r1] @ ones  # float32 mat-vec: a third of numpy's float64 reduction
        if off is not None:
            chunk.take(other, axis=1, out=off[r0:r1], mode="clip")
    tally("node gathers", W.itemsize * (m * size + m * m + (0 if other is None else m * other.size)))
    return block, d, off


def _orthonormal_pair(Z: np.ndarray, MZ: np.ndarray):
    """``(Q, M Q)`` with ``Q = Z C`` orthonormal, from ``Z`` and its image ``M Z`` (no product):
    ``C = L^-T`` from the Cholesky factor ``L`` of the Gram matrix, or from its eigen-decomposition
    (dropping directions ``Z`` barely holds) where ``Z`` is nearly rank-deficient."""
    G = Z.T @ Z
    G = (G + G.T) * 0.5
    # Cholesky first (a tenth of the eigen-decomposition's time on these 10-50 column blocks); the
    # eigen-decomposition where it fails or ``Z`` is nearly rank-deficient, to drop those directions.
    try:
        L = np.linalg.cholesky(G)
    except np.linalg.LinAlgError:
        L = None
    if L is not None:
        diag = np.diagonal(L)
        if float(diag.min()) ** 2 > 1e-8 * max(float(np.diagonal(G).max()), 1e-300):
            C = sla.solve_triangular(L, np.eye(L.shape[0]), lower=True, trans="T", check_finite=False)
            return Z @ C, MZ @ C
    lam, U = np.linalg.eigh(G)
    keep = lam > 1e-10 * max(float(lam[-1]), 1e-300)
    C = U[:, keep] / np.sqrt(lam[keep])
    return Z @ C, MZ @ C


def _dense_vector(W: np.ndarray, sqrt_d: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Top eigenvector of the small deflated ``M - u u^T`` of a dense block, formed in the block's
    precision (float32 on the fast path: the eigenvector's rounding, ~1e-7 over the eigengap, is
    far below the Lanczos nodes' tolerance of 1e-5)."""
    tally("small dense eigh", W.nbytes, calls=1)
    s = (1.0 / sqrt_d).astype(W.dtype)
    M = W * s[:, None]
    M *= s[None, :]
    uu = u.astype(W.dtype)
    M -= uu[:, None] * uu[None, :]
    return krylov.top_eigenvector_small(M).astype(np.float64)


def _with_sweep(W, d: np.ndarray, y: np.ndarray, min_size: int, sweep=sweep_ncut_chunked) -> Bipartition | None:
    split = sweep(W, d, y, min_size=min_size)
    return None if split is None else Bipartition(split.side, split.ncut, split.cut, split.volume, vector=y)


@dataclass(frozen=True)
class FastNodeSolver:
    """Recycled Lanczos (dense graphs) and shift-invert Lanczos (sparse graphs) per node.

    Parameters
    ----------
    tol, tol_f32 : float, default FAST_TOL (1e-6), FAST_TOL_F32 (1e-5)
        Ritz residual of the dense Lanczos on float64 and float32 graphs.
    reference_tol : float, default EIGEN_TOL (1e-5)
        Tolerance of the reference solver where it takes over (no convergence, small sparse nodes).
    block_size, random_columns : int, default BLOCK_SIZE (16), RANDOM_COLUMNS (4)
        Ritz vectors handed to the children, and how many of a child's start vectors are random
        instead (``random_columns = block_size``: nothing recycled).
    max_steps : int, default LANCZOS_MAX_STEPS (300)
        Lanczos steps of a dense node before the reference solver takes over.
    shift_invert_max_steps : int, default SHIFT_INVERT_MAX_STEPS (60)
        Solves of a sparse node before the reference solver takes over.
    """

    tol: float = _d.FAST_TOL
    tol_f32: float = _d.FAST_TOL_F32
    reference_tol: float = _d.EIGEN_TOL
    block_size: int = _d.BLOCK_SIZE
    random_columns: int = _d.RANDOM_COLUMNS
    max_steps: int = _d.LANCZOS_MAX_STEPS
    shift_invert_max_steps: int = _d.SHIFT_INVERT_MAX_STEPS
    name: ClassVar[str] = "fast"

    def __post_init__(self):
        for key in ("tol", "tol_f32", "reference_tol"):
            _check_positive(key, getattr(self, key))
        for key in ("block_size", "max_steps", "shift_invert_max_steps"):
            _check_positive(key, getattr(self, key), integer=True)
        if not (isinstance(self.random_columns, (int, np.integer)) and 0 <= self.random_columns <= self.block_size):
            raise ValueError(f"random_columns must be an integer in [0, block_size], got {self.random_columns!r}")

    def prepare(self, W):
        if sp.issparse(W):
            return sp.csr_matrix(W)
        # The dense products are memory-bound: one single-precision copy halves every later read
        # (walks from cut_transition_matrix are float32 already; this serves cut_affinity's callers).
        return W if W.dtype == np.float32 else np.asarray(W, dtype=np.float32)

    def root(self, W, members, *, min_size, seed, start=None, block=None, degrees=None) -> NodeCut:
        dense = not sp.issparse(W)
        # A dense W is used as it is (no copy of the whole matrix); a sparse one becomes a dense
        # float32 block up to DENSE_MAX_NODES, as every other node does.
        d = None
        if dense and members.size == W.shape[0]:
            sub = W
            if degrees is not None and np.shape(degrees) == (members.size,):
                d = np.asarray(degrees, dtype=np.float64)
        elif dense:
            sub, d, _ = gather_block(W, members)
        elif members.size == W.shape[0] > _d.DENSE_MAX_NODES and W.has_canonical_format:
            sub = W  # every node: the gather would copy W entry for entry
        else:
            sub = sub_block(W, members)
        if block is not None and block.shape[0] != members.size:
            block = None
        return self._cut(sub, d=d, min_size=min_size, seed=seed, block=block, start=start, recycle=dense)

    def child(self, W, parent, members, local, *, min_size, seed) -> NodeCut:
        if sp.issparse(W) or sp.issparse(parent.block):
            return self._cut(sub_block(parent.block, local), d=None, min_size=min_size, seed=seed, block=None,
                             start=None, recycle=False)
        size, m = parent.block.shape[0], local.size
        # The larger child's start block: its products follow from the parent's (parent.images) and
        # the off-diagonal block, which is smaller than the child's own block.
        big = m > _d.DENSE_MAX_NODES  # small children are solved by dense eigh: no start block
        use_off = big and parent.images is not None and size - m < m
        other = None
        if use_off:
            mask = np.ones(size, dtype=bool)
            mask[local] = False
            other = np.flatnonzero(mask)
        sub, d, off = gather_block(parent.block, local, other)
        block = images = None
        if big and parent.ritz is not None and (d > 0).all():
            # the parent's generalised Ritz vectors y restricted, in the child's symmetric form
            Y = parent.ritz / parent.sqrt_d[:, None]
            sqrt_dc = np.sqrt(d)
            block = Y[local] * sqrt_dc[:, None]
            if use_off:
                k = Y.shape[1]
                tally("eigen-solves", k * off.nbytes, calls=k)
                WY = parent.images[local] * parent.sqrt_d[local, None] - off @ Y[other].astype(off.dtype)
                images = WY / sqrt_dc[:, None]
        return self._cut(sub, d=d, min_size=min_size, seed=seed, block=block, images=images, start=None,
                         recycle=True)

    def _cut(self, sub, *, d, min_size, seed, block, start, recycle, images=None) -> NodeCut:
        if d is None and sp.isspmatrix_csr(sub):
            d = sparse.row_sums(sub)
        elif d is None:
            d = np.asarray(sub.sum(axis=1, dtype=np.float64)).ravel()
            if not sp.issparse(sub):
                tally("degrees", sub.nbytes)
        volume = float(d.sum())
        split, ritz, extra = self._bipartition(sub, d, min_size=min_size, seed=seed, block=block, start=start,
                                               recycle=recycle, images=images)
        if split is None:
            return NodeCut(volume=volume, split=None)
        return NodeCut(volume=volume, split=split, block=sub, ritz=ritz, images=extra,
                       sqrt_d=None if extra is None else np.sqrt(d))

    def bipartition(self, W, *, min_size: int, seed: int, block: np.ndarray | None = None,
                    start: np.ndarray | None = None, recycle: bool = True):
        """Best 2-way NCut of one node's block ``W``.

        Parameters
        ----------
        block : (m, k) array or None
            Start subspace (the parent's Ritz vectors restricted to this node, or the previous frame's
            root block); random columns fill it up to ``block_size``.
        start : (m,) array or None
            A guess of the generalised Fiedler vector ``y`` (the previous frame's root vector).
        recycle : bool
            ``False`` for the nodes of a sparse graph: shift-invert above ``DENSE_MAX_NODES``, the
            reference solver's dense ``eigh`` below (its float32 deflated matrix).

        Returns
        -------
        (Bipartition or None, Ritz block or None)
            The split (with ``vector`` set) and the Ritz vectors to hand to the children.
        """
        d = np.asarray(W.sum(axis=1, dtype=np.float64)).ravel()
        split, ritz, _ = self._bipartition(W, d, min_size=min_size, seed=seed, block=block, start=start,
                                           recycle=recycle)
        return split, ritz

    def _bipartition(self, W, d, *, min_size, seed, block=None, start=None, recycle=True, images=None):
        """:meth:`bipartition` with the degrees ``d`` known; also returns ``M ritz`` (or ``None``)
        and takes ``images``, ``M block`` when the caller has it."""
        m = W.shape[0]
        if m < max(2, 2 * min_size):
            return None, None, None
        if not (d > 0).all():  # rare: nodes with no edges inside this block; the reference solver handles them
            split = spectral.bipartition(W, min_size=min_size, seed=seed, start=start, tol=self.reference_tol)
            return split, None, None
        if sp.issparse(W) and m > _d.DENSE_MAX_NODES:
            y = self._shift_invert_vector(W, d, seed=seed, start=start)
            return _with_sweep(W, d, y, min_size), None, None
        if not recycle:
            y = spectral.fiedler_vector(W, d, seed=seed, start=start, tol=self.reference_tol)
            return _with_sweep(W, d, y, min_size), None, None
        if sp.issparse(W):  # a small sparse block handed to bipartition(recycle=True)
            W = W.toarray()
        sqrt_d = np.sqrt(d)
        u = sqrt_d / np.linalg.norm(sqrt_d)
        if m <= _d.DENSE_MAX_NODES:
            v, ritz, extra = _dense_vector(W, sqrt_d, u), None, None
        else:
            v, ritz, extra = self._recycled_lanczos(W, d, sqrt_d, u, seed=seed, block=block, start=start,
                                                    images=images)
        y = krylov.fix_sign(v / sqrt_d)
        split = _with_sweep(W, d, y, min_size, sweep_ncut_dense)
        return (None, None, None) if split is None else (split, ritz, extra)

    def _shift_invert_vector(self, W, d, *, seed, start) -> np.ndarray:
        m = W.shape[0]
        y, ok = sparse.shift_invert_fiedler(W, d, seed=seed, start=start, max_steps=self.shift_invert_max_steps)
        if not ok:
            logger.info("shift-invert Lanczos did not converge on %d nodes; using the reference solver", m)
            y = spectral.fiedler_vector(W, d, seed=seed, start=y, tol=self.reference_tol)
        return krylov.fix_sign(y)

    def _recycled_lanczos(self, W, d, sqrt_d, u, *, seed, block, start, images=None):
        """``(v, ritz, M ritz)``: the top eigenvector of ``M - u u^T`` (symmetric form), the top
        Ritz vectors for the children and their images under ``M``.

        Lanczos runs from the best vector of one Rayleigh-Ritz step on the start block (``images``,
        ``M block``, saves its products when the caller has it). The Ritz vectors handed on come from
        the start block and the Lanczos Ritz vectors together, whose images are known without a product
        (the Lanczos relation), so a node that converged in a few steps still hands its children a
        full block."""
        m = W.shape[0]
        rng = np.random.default_rng(seed)
        op = _Operator(W, 1.0 / sqrt_d)
        tol = self.tol if sp.issparse(W) or W.dtype == np.float64 else self.tol_f32
        k = min(self.block_size, max(2, (m - 1) // 4))
        cols, imgs = [], []
        if start is not None and np.shape(start) == (m,) and np.isfinite(start).all():
            c = (np.asarray(start, dtype=np.float64) * sqrt_d)[:, None]
            cols.append(c)
            imgs.append(op(c))
        if block is not None and block.shape[0] == m and np.isfinite(block).all():
            take = max(0, k - self.random_columns)
            B = np.asarray(block[:, :take], dtype=np.float64)
            if B.shape[1]:
                cols.append(B)
                ok_images = images is not None and images.shape == block.shape and np.isfinite(images).all()
                imgs.append(np.asarray(images[:, :take], dtype=np.float64) if ok_images else op(B))
        v0 = rng.uniform(-1.0, 1.0, m)
        Q = MQ = None
        if cols:  # one Rayleigh-Ritz step on the recycled vectors: the best start they hold
            X = np.hstack(cols)
            ux = u @ X
            Q, MQ = _orthonormal_pair(X - np.outer(u, ux), np.hstack(imgs) - np.outer(u, ux))  # M u = u
            if Q.shape[1]:
                G = Q.T @ MQ
                best = Q @ np.linalg.eigh((G + G.T) * 0.5)[1][:, -1]
                v0 = best + 1e-3 / np.sqrt(m) * v0  # keep every direction present
        # On a large node a product costs far more than the tridiagonal solve of a convergence check.
        check = 1 if m >= _d.LANCZOS_CHECK_EVERY_STEP_NODES else _d.LANCZOS_CHECK
        v, ritz, ok, (V, MV) = krylov.lanczos_fiedler(op, u, v0, tol=tol, max_steps=self.max_steps, n_ritz=k,
                                                      check=check, basis=True, fold_u=True)
        if Q is not None and Q.shape[1]:
            V, MV = np.hstack([Q, V]), np.hstack([MQ, MV])
        Z, MZ = _orthonormal_pair(V, MV)
        G = Z.T @ MZ
        S = np.linalg.eigh((G + G.T) * 0.5)[1][:, ::-1][:, :k]  # descending Ritz values
        ritz, ritz_images = Z @ S, MZ @ S
        if not ok:
            logger.info("Lanczos did not converge on %d nodes; using the reference solver", m)
            v = spectral.fiedler_vector(W, d, seed=seed, start=v / sqrt_d, tol=self.reference_tol) * sqrt_d
        return v, ritz, ritz_images


def node_solver(method="fast", *, solver: str = "auto") -> NodeSolver:
    """The node solver of a cut, chosen once.

    ``method`` is ``"fast"`` or ``"reference"``, or a node solver instance (e.g.
    ``FastNodeSolver(tol=1e-6)``) used as it is. A ``solver`` other than ``"auto"`` names the
    reference solver's first eigensolver and so selects :class:`ReferenceNodeSolver` for either
    method name (the graph is still built the ``method``'s way).
    """
    if isinstance(method, NodeSolver):
        if solver != "auto":
            raise ValueError(f"solver={solver!r} applies to a method name; with a node solver instance "
                             f"give it to ReferenceNodeSolver(solver=...) instead")
        return method
    if not isinstance(method, str) or method not in _d.METHODS:
        raise ValueError(f"method must be one of {_d.METHODS} or a node solver, got {method!r}")
    if method == "fast" and solver == "auto":
        return FastNodeSolver()
    return ReferenceNodeSolver(solver=solver)
