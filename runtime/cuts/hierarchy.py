"""Recursive Normalized Cuts: build the binary hierarchy once, prune it with a stopping rule.

The hierarchy is grown best-first: the leaf whose best split has the lowest NCut is split next (costs
below ``COST_FLOOR`` count as equal, the larger leaf first), until
``max_segments`` leaves exist or no leaf has a split with NCut below ``EXPAND_LIMIT``. Every node
records its members, the NCut of its best split, the cut weight and its volume. A stopping rule then
prunes the tree: a node is split if its parent was and its cost is below the threshold; the flat
segmentation is the leaves of the pruned tree. Because growth is best-first, pruning the stored tree
at any threshold up to the lowest cost left unexpanded gives exactly the tree a full recursion would
give; above that the segmentation is capped at ``max_segments`` leaves.

Stopping rules (``threshold``):

float ``tau``
    Split while the node's NCut is below ``tau`` (DiffCut uses 0.5 on cosine^10 affinities).
``"auto-ncut"``
    Parameter-free: ``tau`` is chosen per image from the tree's own NCut values with Otsu's
    method on ``log(max(NCut, 1e-3))``, each split weighted by the number of nodes it divides — the threshold
    that best separates the split costs into a low-cost group (real boundaries) and a high-cost group
    (cuts through coherent regions). Weighting by size lets the large, consequential splits decide
    the threshold rather than the many small splits near the leaves; the floor stops near-zero costs
    of almost disconnected regions from dominating (both measured on BSDS500 val: bench/RESULTS.md).
``"auto-mincut"``
    The same rule applied to the scaled min-cut ``cut(A, B) / vol(A u B)`` — for ``mode="walk"``, the
    probability that one stationary step of the walk inside the node crosses the cut — instead of
    the NCut.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController
from walkcut.runtime.cuts import fast
from walkcut.runtime.cuts.graph import affinity_and_stationary, zero_degree_nodes
from walkcut.runtime.cuts.spectral import bipartition
from walkcut.runtime import defaults as _d

logger = logging.getLogger(__name__)

AUTO_RULES = ("auto-ncut", "auto-mincut")
#: ``fast``: recycled block eigen-solves and single-precision graph building (:mod:`.fast`);
#: ``exact``: the reference algorithm, every node solved from scratch.
ENGINES = _d.ENGINES
#: Splits whose NCut is at least this are never grown (a random cut of a structureless graph
#: scores about 1: the walk leaves each half with probability 1/2).
EXPAND_LIMIT = _d.EXPAND_LIMIT
#: Sparse subgraphs up to this many nodes are cut as dense arrays (8 MB at 1024 nodes); measured
#: faster on pixel graphs (bench/bench_cuts.py).
DENSE_SUBGRAPH_MAX_NODES = _d.DENSE_SUBGRAPH_MAX_NODES
#: Tree costs each rule reads.
RULE_COST = {"auto-ncut": "ncut", "auto-mincut": "scaled_mincut"}
#: The automatic rules treat split costs below this as equal: a boundary that the walk crosses less
#: than once in a thousand steps is certain, and the exact size of such tiny costs (often rounding
#: noise around 1e-10 on nearly disconnected regions) must not drag the threshold down.
COST_FLOOR = _d.COST_FLOOR
#: When a tree has fewer than two split costs the automatic rules have no evidence to separate;
#: they fall back to these constants.
FALLBACK_THRESHOLD = {"ncut": _d.FALLBACK_NCUT, "scaled_mincut": _d.FALLBACK_SCALED_MINCUT}


@dataclass(frozen=True, eq=False)
class HierarchyNode:
    """One node of the cut hierarchy.

    ``ncut``/``mincut``/``scaled_mincut`` describe this node's best split (``inf`` when it cannot be
    split: fewer than ``2 * min_size`` members); ``children`` is empty unless the split was grown.
    """

    id: int
    parent: int  # -1 for the root
    depth: int
    members: np.ndarray  # (m,) sorted node indices
    volume: float
    ncut: float
    mincut: float
    scaled_mincut: float
    children: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        return int(self.members.size)


@dataclass(frozen=True, eq=False)
class Hierarchy:
    """Binary cut hierarchy over ``n`` nodes; ``isolated`` nodes (no edges) sit outside it."""

    n: int
    nodes: tuple[HierarchyNode, ...]
    isolated: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: The root's Fiedler vector (over the root's members), a warm start for a similar next graph.
    root_vector: np.ndarray | None = None
    #: The root's Ritz block (fast engine), the stationary distribution the graph was built from
    #: (``walk`` mode): the other parts of a warm start for the next graph of a sequence.
    root_block: np.ndarray | None = None
    stationary: np.ndarray | None = None

    @property
    def root(self) -> HierarchyNode:
        return self.nodes[0]

    def costs(self, cost: str = "ncut", *, with_sizes: bool = False):
        """Finite split costs of all nodes whose split was computed (and the nodes' sizes)."""
        values = np.array([getattr(node, cost) for node in self.nodes], dtype=np.float64)
        keep = np.isfinite(values)
        if with_sizes:
            sizes = np.array([node.size for node in self.nodes], dtype=np.float64)
            return values[keep], sizes[keep]
        return values[keep]

    def leaves(self, threshold: float, *, cost: str = "ncut") -> list[HierarchyNode]:
        """Leaves of the tree pruned at ``threshold``: a node splits if its parent did and
        its ``cost`` is below ``threshold``."""
        out, stack = [], [self.root]
        while stack:
            node = stack.pop()
            if node.children and getattr(node, cost) < threshold:
                stack.extend(self.nodes[c] for c in reversed(node.children))
            else:
                out.append(node)
        return out

    def labels(self, threshold: float, *, cost: str = "ncut") -> np.ndarray:
        """Flat labels ``(n,)`` at ``threshold``: segments numbered by their smallest member;
        isolated nodes, if any, form the last label."""
        leaves = sorted(self.leaves(threshold, cost=cost), key=lambda node: int(node.members[0]))
        labels = np.empty(self.n, dtype=np.int64)
        for k, node in enumerate(leaves):
            labels[node.members] = k
        if self.isolated.size:
            labels[self.isolated] = len(leaves)
        return labels


def otsu_threshold(values: np.ndarray, weights: np.ndarray | None = None, *, floor: float = 0.0) -> float:
    """Otsu's threshold (Otsu 1979) on ``log(max(values, floor))``, optionally weighted.

    Sorts the values, evaluates the weighted between-group variance of every split into a low and a
    high group, and returns the geometric midpoint of the two values at the best split.
    """
    values = np.maximum(np.asarray(values, dtype=np.float64), max(floor, 1e-300))
    w = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    x = np.log(values[order])
    w = w[order]
    cw = np.cumsum(w)
    cx = np.cumsum(w * x)
    w_lo = cw[:-1]
    w_hi = cw[-1] - w_lo
    between = w_lo * w_hi * (cx[:-1] / w_lo - (cx[-1] - cx[:-1]) / w_hi) ** 2
    between[x[1:] == x[:-1]] = -np.inf  # never cut between equal values
    b = int(np.argmax(between))
    return float(math.exp(0.5 * (x[b] + x[b + 1])))


def resolve_threshold(hierarchy: Hierarchy, threshold) -> tuple[str, float]:
    """``(cost name, numeric threshold)`` for a float or an automatic rule name."""
    if isinstance(threshold, str):
        if threshold not in AUTO_RULES:
            raise ValueError(f"threshold must be a number or one of {AUTO_RULES}, got {threshold!r}")
        cost = RULE_COST[threshold]
        values, sizes = hierarchy.costs(cost, with_sizes=True)
        if values.size < 2 or np.ptp(np.maximum(values, COST_FLOOR)) == 0:
            logger.info("%s: only %d distinct split costs; using %s < %g", threshold, values.size,
                        cost, FALLBACK_THRESHOLD[cost])
            return cost, FALLBACK_THRESHOLD[cost]
        return cost, otsu_threshold(values, sizes, floor=COST_FLOOR)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)):
        raise TypeError(f"threshold must be a number or one of {AUTO_RULES}, got {threshold!r}")
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    return "ncut", float(threshold)


@dataclass
class _Growing:
    members: np.ndarray
    parent: int
    depth: int
    volume: float = 0.0
    ncut: float = math.inf
    mincut: float = math.inf
    scaled: float = math.inf
    sides: tuple[np.ndarray, np.ndarray] | None = None
    children: tuple[int, ...] = ()
    # fast engine only, dropped once the children exist: the node's own affinity block, its split in
    # local indices, and the Ritz block its children start from.
    block: object = None
    local_sides: tuple[np.ndarray, np.ndarray] | None = None
    ritz: np.ndarray | None = None


def _warm_parts(warm_start):
    """``(root vector, root Ritz block, stationary)`` from a warm start: an array (the root vector),
    a :class:`Hierarchy` or a :class:`CutResult` of a similar previous graph, or ``None``."""
    if warm_start is None:
        return None, None, None
    if isinstance(warm_start, CutResult):
        warm_start = warm_start.hierarchy
    if isinstance(warm_start, Hierarchy):
        return warm_start.root_vector, warm_start.root_block, warm_start.stationary
    return np.asarray(warm_start, dtype=np.float64).ravel(), None, None


def build_hierarchy(
    W, *, min_size: int, max_segments: int, solver: str = "auto", seed: int = 0, warm_start=None,
    engine: str = _d.ENGINE,
) -> Hierarchy:
    """Grow the cut hierarchy of a symmetric affinity ``W`` best-first (see module docstring).

    ``engine="exact"`` solves every node from scratch on a copy gathered from ``W`` (the reference
    path); ``"fast"`` recycles each parent's Ritz block and affinity block (:mod:`.fast`). Both grow
    the same tree from the same splits; they differ only in how each Fiedler vector is computed.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    n = W.shape[0]
    isolated = zero_degree_nodes(W)
    active = np.setdiff1d(np.arange(n), isolated)
    dense = not sp.issparse(W)
    Wc = W if dense else sp.csr_matrix(W)
    nodes: list[_Growing] = []
    warm_vector, warm_block, _ = _warm_parts(warm_start)
    fast_path = engine == "fast" and solver == "auto"
    if fast_path and dense and Wc.dtype != np.float32:
        # The dense products are memory-bound: one single-precision copy halves every later read
        # (walks from cut_transition_matrix are float32 already; this serves cut_affinity's callers).
        Wc = np.asarray(Wc, dtype=np.float32)

    root_vector = None
    root_block = None

    def add(members: np.ndarray, parent: int, depth: int, local: np.ndarray | None = None) -> int:
        nonlocal root_vector, root_block
        node = _Growing(members=members, parent=parent, depth=depth)
        start = warm_vector if parent < 0 else None
        if fast_path:
            if parent < 0:
                # A dense W is used as it is (no copy of the full matrix); a sparse one becomes a dense
                # float32 block up to DENSE_SUBGRAPH_MAX_NODES, as every other node does.
                sub = Wc if dense and members.size == n else fast.sub_block(Wc, members)
                block = warm_block if warm_block is not None and warm_block.shape[0] == members.size else None
            else:
                up = nodes[parent]
                sub = fast.sub_block(up.block, local)
                block = None if up.ritz is None else up.ritz[local]
            node.volume = float(sub.sum(dtype=np.float64))
            split, ritz = fast.bipartition_fast(sub, min_size=min_size, seed=seed, block=block, start=start,
                                                recycle=dense)
            if split is not None:
                node.block, node.ritz = sub, ritz
                node.local_sides = (np.flatnonzero(split.side), np.flatnonzero(~split.side))
            if parent < 0:
                root_block = ritz
        else:
            if dense:
                sub = Wc[np.ix_(members, members)]
            else:
                sub = Wc[members][:, members]
                if members.size <= DENSE_SUBGRAPH_MAX_NODES:
                    # Small subgraphs: dense single-precision kernels beat sparse-call overhead.
                    sub = sub.toarray().astype(np.float32)
            node.volume = float(sub.sum(dtype=np.float64))
            split = bipartition(sub, min_size=min_size, solver=solver, seed=seed, start=start)
        if parent < 0 and split is not None:
            root_vector = split.vector
        if split is not None:
            node.ncut, node.mincut = split.ncut, split.cut
            node.scaled = split.cut / split.volume if split.volume > 0 else math.inf
            node.sides = (members[split.side], members[~split.side])
        nodes.append(node)
        return len(nodes) - 1

    def growth_key(i: int) -> tuple[float, int, int]:
        # Costs below COST_FLOOR are equally certain boundaries: among them the larger node grows
        # first, so rounding noise in near-zero costs cannot change which nodes get grown.
        return (max(nodes[i].ncut, COST_FLOOR), -nodes[i].members.size, i)

    heap: list[tuple[float, int, int]] = []
    if active.size:
        add(active, -1, 0)
        heapq.heappush(heap, growth_key(0))
    n_leaves = 1
    while heap and n_leaves < max_segments:
        cost, _, i = heapq.heappop(heap)
        if not cost < EXPAND_LIMIT:
            break
        a, b = nodes[i].sides
        la, lb = nodes[i].local_sides if nodes[i].local_sides is not None else (None, None)
        if a[0] > b[0]:
            a, b, la, lb = b, a, lb, la
        kids = (add(a, i, nodes[i].depth + 1, la), add(b, i, nodes[i].depth + 1, lb))
        nodes[i].children = kids
        nodes[i].block = nodes[i].ritz = None  # the children hold their own blocks now
        for k in kids:
            heapq.heappush(heap, growth_key(k))
        n_leaves += 1
    frozen = tuple(
        HierarchyNode(
            id=i, parent=g.parent, depth=g.depth, members=g.members, volume=g.volume,
            ncut=g.ncut, mincut=g.mincut, scaled_mincut=g.scaled, children=g.children,
        )
        for i, g in enumerate(nodes)
    )
    if not frozen:  # every node isolated: a single root holding nothing
        frozen = (HierarchyNode(0, -1, 0, np.zeros(0, np.int64), 0.0, math.inf, math.inf, math.inf),)
    return Hierarchy(n=n, nodes=frozen, isolated=isolated, root_vector=root_vector, root_block=root_block)


@dataclass(frozen=True, eq=False)
class CutResult:
    """Outcome of :func:`cut_transition_matrix`.

    Attributes
    ----------
    labels : (n,) int64
        Segment of each node, ``0 .. n_segments - 1``.
    hierarchy : Hierarchy
        The whole cut tree; ``with_threshold`` re-prunes it without a new eigen-solve.
    threshold : float
        Numeric threshold that was applied to ``cost``.
    rule : str or float
        What the caller asked for (a number, ``"auto-ncut"`` or ``"auto-mincut"``).
    cost : str
        Node attribute compared with ``threshold`` (``"ncut"`` or ``"scaled_mincut"``).
    """

    labels: np.ndarray
    hierarchy: Hierarchy
    threshold: float
    rule: object
    cost: str

    @property
    def n_segments(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.size else 0

    def with_threshold(self, threshold) -> CutResult:
        """The same hierarchy pruned with another stopping rule (no eigen-solve)."""
        cost, tau = resolve_threshold(self.hierarchy, threshold)
        return CutResult(self.hierarchy.labels(tau, cost=cost), self.hierarchy, tau, threshold, cost)


_THREADPOOLS: ThreadpoolController | None = None


def _blas_limit(threads: int | None):
    """Context limiting BLAS threads (``None``: leave them alone).

    The cuts run many small dense products: one BLAS thread is as fast as two on an idle 2-core CPU,
    and ten times faster when other processes compete for the cores (spinning BLAS threads;
    bench/RESULTS.md), which is the normal case on a robot or in the video pipeline.
    """
    global _THREADPOOLS
    if threads is None:
        return contextlib.nullcontext()
    if _THREADPOOLS is None:  # created late: it only sees BLAS libraries already loaded
        _THREADPOOLS = ThreadpoolController()
    return _THREADPOOLS.limit(limits=threads, user_api="blas")


def default_min_size(n: int) -> int:
    """Smallest segment: 1/256 of the nodes (4 patches on a 32 x 32 grid), at least 1."""
    return max(1, n // _d.MIN_SIZE_DIVISOR)


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def cut_affinity(
    W, *, threshold=_d.THRESHOLD, min_size: int | None = None, max_segments: int = _d.MAX_SEGMENTS,
    solver: str = "auto", seed: int = 0, blas_threads: int | None = 1, warm_start=None,
    engine: str = _d.ENGINE, stationary: np.ndarray | None = None,
) -> CutResult:
    """Recursive Normalized Cut of a symmetric non-negative affinity ``W`` (dense or sparse).

    See :func:`cut_transition_matrix` for the options; this entry point skips the graph building.
    ``stationary`` is only recorded in the hierarchy (a warm start for the next graph).
    """
    n = W.shape[0]
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be square, got shape {W.shape}")
    min_size = default_min_size(n) if min_size is None else _check_int("min_size", min_size, 1)
    max_segments = _check_int("max_segments", max_segments, 1)
    if isinstance(threshold, str) and threshold not in AUTO_RULES:
        raise ValueError(f"threshold must be a number or one of {AUTO_RULES}, got {threshold!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    with _blas_limit(blas_threads):
        tree = build_hierarchy(W, min_size=min_size, max_segments=max_segments, solver=solver, seed=seed,
                               warm_start=warm_start, engine=engine)
    if stationary is not None:
        tree = dataclasses.replace(tree, stationary=stationary)
    cost, tau = resolve_threshold(tree, threshold)
    return CutResult(tree.labels(tau, cost=cost), tree, tau, threshold, cost)


def cut_transition_matrix(
    P,
    *,
    mode: str = _d.MODE,
    power: int = _d.POWER,
    threshold=_d.THRESHOLD,
    min_size: int | None = None,
    max_segments: int = _d.MAX_SEGMENTS,
    exponent: float = 1.0,
    stationary=None,
    solver: str = "auto",
    seed: int = 0,
    blas_threads: int | None = 1,
    warm_start=None,
    engine: str = _d.ENGINE,
) -> CutResult:
    """Segment the nodes of a random walk by recursive Normalized Cuts.

    Parameters
    ----------
    P : (n, n) ndarray or scipy sparse matrix
        Row-stochastic transition matrix (rows sum to 1; NaN/Inf rejected).
    mode : {"walk", "dot", "cosine"}, default "walk"
        Graph built from ``P`` (see :mod:`walkcut.runtime.cuts.graph`).
    power : int, default 1
        Walk length t (``P^t``).
    threshold : float or {"auto-ncut", "auto-mincut"}, default "auto-ncut"
        Stopping rule (see module docstring).
    min_size : int, optional
        Smallest segment in nodes; default ``n // 256`` (at least 1).
    max_segments : int, default 32
        Most leaves the hierarchy grows to.
    exponent : float, default 1.0
        Sharpening exponent of ``cosine`` affinities.
    stationary : (n,) array, optional
        Stationary distribution of ``P`` if known (``walk`` mode).
    solver : {"auto", "arpack", "lobpcg", "dense"}, default "auto"
        Eigensolver; failures fall back ``arpack -> lobpcg -> dense`` with a warning.
    seed : int, default 0
        Seeds the eigensolver start vectors: the same input gives the same labels.
    blas_threads : int or None, default 1
        BLAS threads while cutting (``None``: unchanged). One is fastest for these small products
        and robust when other processes share the cores.
    warm_start : (m,) array, Hierarchy or CutResult, optional
        The previous graph of a sequence (a video frame): its ``hierarchy`` (or the result itself)
        starts the stationary solve from its ``pi``, and the root eigen-solve from its root vector
        and, with the fast engine, its root Ritz block; a plain array is the root vector alone
        (parts whose length differs are ignored). Fewer products on similar graphs; where the top
        eigenvalues nearly coincide it also keeps the choice of the previous frame.
    engine : {"fast", "exact"}, default "fast"
        ``fast`` (:mod:`walkcut.runtime.cuts.fast`): single-precision ``pi``, in-place graph, per-node
        blocks, chunked sweeps and (dense graphs) Lanczos started from the parent's recycled Ritz vectors. ``exact``: the reference algorithm (every node
        solved from scratch by ARPACK). They give the same partitions up to eigensolver tolerance
        (tests/test_cuts_engine.py). ``solver`` other than ``"auto"`` selects the exact node solver.

    Returns
    -------
    CutResult
        ``labels`` (n,), the ``hierarchy``, and the applied threshold.

    Notes
    -----
    With ``mode="walk"`` the NCut of a segment pair is the probability that one stationary step of
    the walk leaves its segment, so thresholds read as probabilities: 0.1 means a boundary that the
    walk crosses one step in ten.

    References
    ----------
    Shi & Malik, TPAMI 2000; Meila & Shi, AISTATS 2001; Couairon et al. (DiffCut), NeurIPS 2024.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    _, _, warm_pi = _warm_parts(warm_start)
    with _blas_limit(blas_threads):
        W, stationary = affinity_and_stationary(
            P, mode=mode, power=_check_int("power", power, 1), stationary=stationary, exponent=exponent,
            engine=engine, stationary_start=warm_pi,
        )
    return cut_affinity(
        W, threshold=threshold, min_size=min_size, max_segments=max_segments, solver=solver, seed=seed,
        blas_threads=blas_threads, warm_start=warm_start, engine=engine, stationary=stationary,
    )
