"""Recursive Normalized Cuts: build the binary hierarchy once, prune it with a stopping rule.

The entry points :func:`cut_transition_matrix` (graph building, :mod:`.graph`, then the tree) and
:func:`cut_affinity` (the tree of a given affinity) choose a node solver once from ``method``
(:func:`walkcut.runtime.cuts.nodes.node_solver`); the tree builder asks it for every node's split
and is the same for every method.

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
``"auto-ncut-unweighted"``
    Otsu's method on the same log NCut costs with every split counted once. On dense attention
    walks (a ViT's patch-to-patch attention) the size weighting lets the few large splits near the
    root decide and stops at 4-6 segments; counted once, the many splits of mid-sized regions have
    their say (BSDS500 and CamVid val under real ViT attention: bench/ABLATION.md, "Real attention").
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import logging
import math
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import ThreadpoolController
from walkcut.runtime import defaults as _d
from walkcut.runtime.cuts.graph import build_graph, zero_degree_nodes
from walkcut.runtime.cuts.nodes import NodeCut, NodeSolver, node_solver

logger = logging.getLogger(__name__)

AUTO_RULES = ("auto-ncut", "auto-mincut", "auto-ncut-unweighted")
#: Tree costs each rule reads.
RULE_COST = {"auto-ncut": "ncut", "auto-mincut": "scaled_mincut", "auto-ncut-unweighted": "ncut"}
#: Rules whose Otsu split weights each tree split by the number of nodes it divides.
SIZE_WEIGHTED_RULES = ("auto-ncut", "auto-mincut")


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
    #: The root's Ritz block (fast method), the stationary distribution the graph was built from
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
        if values.size < 2 or np.ptp(np.maximum(values, _d.COST_FLOOR)) == 0:
            # No evidence to separate: fall back to the rule's constant.
            fallback = _d.FALLBACK_NCUT if cost == "ncut" else _d.FALLBACK_SCALED_MINCUT
            logger.info("%s: only %d distinct split costs; using %s < %g", threshold, values.size, cost, fallback)
            return cost, fallback
        weights = sizes if threshold in SIZE_WEIGHTED_RULES else None
        return cost, otsu_threshold(values, weights, floor=_d.COST_FLOOR)
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
    # Dropped once the children exist: the node solver's result (what the children start from) and
    # the split in positions among this node's members.
    cut: NodeCut | None = None
    local_sides: tuple[np.ndarray, np.ndarray] | None = None


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


def build_hierarchy(W, *, min_size: int, max_segments: int, nodes: NodeSolver, seed: int = 0,
                    warm_start=None, degrees: np.ndarray | None = None) -> Hierarchy:
    """Grow the cut hierarchy of a symmetric affinity ``W`` best-first (see module docstring).

    Every node's split comes from the node solver ``nodes`` (:func:`~walkcut.runtime.cuts.nodes.node_solver`):
    the tree is the same whichever solver computes the Fiedler vectors. ``degrees``: the row sums
    of ``W`` when the caller has them (a pass over a dense ``W`` saved).
    """
    n = W.shape[0]
    isolated, degrees = zero_degree_nodes(W, degrees=True, known=degrees)
    active = np.setdiff1d(np.arange(n), isolated)
    graph = nodes.prepare(W)
    if graph is not W:  # converted (e.g. to float32): its row sums are not the ones read above
        degrees = None
    grown: list[_Growing] = []
    warm_vector, warm_block, _ = _warm_parts(warm_start)
    root_vector = None
    root_block = None

    def add(members: np.ndarray, parent: int, depth: int, local: np.ndarray | None = None) -> int:
        nonlocal root_vector, root_block
        node = _Growing(members=members, parent=parent, depth=depth)
        if parent < 0:
            cut = nodes.root(graph, members, min_size=min_size, seed=seed, start=warm_vector, block=warm_block,
                             degrees=degrees if members.size == n else None)
            root_block = cut.ritz
            root_vector = None if cut.split is None else cut.split.vector
        else:
            cut = nodes.child(graph, grown[parent].cut, members, local, min_size=min_size, seed=seed)
        node.volume = cut.volume
        split = cut.split
        if split is not None:
            node.ncut, node.mincut = split.ncut, split.cut
            node.scaled = split.cut / split.volume if split.volume > 0 else math.inf
            node.sides = (members[split.side], members[~split.side])
            node.local_sides = (np.flatnonzero(split.side), np.flatnonzero(~split.side))
            node.cut = cut
        grown.append(node)
        return len(grown) - 1

    def growth_key(i: int) -> tuple[float, int, int]:
        # Costs below COST_FLOOR are equally certain boundaries: among them the larger node grows
        # first, so rounding noise in near-zero costs cannot change which nodes get grown.
        return (max(grown[i].ncut, _d.COST_FLOOR), -grown[i].members.size, i)

    heap: list[tuple[float, int, int]] = []
    if active.size:
        add(active, -1, 0)
        heapq.heappush(heap, growth_key(0))
    n_leaves = 1
    while heap and n_leaves < max_segments:
        cost, _, i = heapq.heappop(heap)
        if not cost < _d.EXPAND_LIMIT:
            break
        a, b = grown[i].sides
        la, lb = grown[i].local_sides
        if a[0] > b[0]:
            a, b, la, lb = b, a, lb, la
        kids = (add(a, i, grown[i].depth + 1, la), add(b, i, grown[i].depth + 1, lb))
        grown[i].children = kids
        grown[i].cut = grown[i].local_sides = None  # the children hold their own blocks now
        for k in kids:
            heapq.heappush(heap, growth_key(k))
        n_leaves += 1
    frozen = tuple(
        HierarchyNode(
            id=i, parent=g.parent, depth=g.depth, members=g.members, volume=g.volume,
            ncut=g.ncut, mincut=g.mincut, scaled_mincut=g.scaled, children=g.children,
        )
        for i, g in enumerate(grown)
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
    method=_d.METHOD, stationary: np.ndarray | None = None,
) -> CutResult:
    """Recursive Normalized Cut of a symmetric non-negative affinity ``W`` (dense or sparse).

    See :func:`cut_transition_matrix` for the options; this entry point skips the graph building.
    ``stationary`` is only recorded in the hierarchy (a warm start for the next graph).
    """
    return _cut(W, node_solver(method, solver=solver), threshold=threshold, min_size=min_size,
                max_segments=max_segments, seed=seed, blas_threads=blas_threads, warm_start=warm_start,
                stationary=stationary)


def _cut(W, nodes: NodeSolver, *, threshold, min_size, max_segments, seed, blas_threads, warm_start,
         stationary, degrees=None) -> CutResult:
    n = W.shape[0]
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be square, got shape {W.shape}")
    min_size = default_min_size(n) if min_size is None else _check_int("min_size", min_size, 1)
    max_segments = _check_int("max_segments", max_segments, 1)
    if isinstance(threshold, str) and threshold not in AUTO_RULES:
        raise ValueError(f"threshold must be a number or one of {AUTO_RULES}, got {threshold!r}")
    with _blas_limit(blas_threads):
        tree = build_hierarchy(W, min_size=min_size, max_segments=max_segments, nodes=nodes, seed=seed,
                               warm_start=warm_start, degrees=degrees)
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
    method=_d.METHOD,
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
        The reference node solver's first eigensolver; anything but ``"auto"`` selects that solver
        for every node (whatever the ``method``). Failures fall back ``arpack -> lobpcg -> dense``
        with a warning.
    seed : int, default 0
        Seeds the eigensolver start vectors: the same input gives the same labels.
    blas_threads : int or None, default 1
        BLAS threads while cutting (``None``: unchanged). One is fastest for these small products
        and robust when other processes share the cores.
    warm_start : (m,) array, Hierarchy or CutResult, optional
        The previous graph of a sequence (a video frame): its ``hierarchy`` (or the result itself)
        starts the stationary solve from its ``pi``, and the root eigen-solve from its root vector
        and, with the fast method, its root Ritz block; a plain array is the root vector alone
        (parts whose length differs are ignored). Fewer products on similar graphs; where the top
        eigenvalues nearly coincide it also keeps the choice of the previous frame.
    method : {"fast", "reference"} or a node solver, default "fast"
        The cut algorithm. ``fast``: single-precision ``pi`` and in-place walk graph, per-node
        blocks, chunked sweeps, Lanczos started from the parent's recycled Ritz vectors (dense
        graphs) and shift-invert Lanczos (sparse graphs); :class:`~walkcut.runtime.cuts.nodes.FastNodeSolver`.
        ``reference``: the v0.1 algorithm, every node solved from scratch by ``eigh``/ARPACK
        (:class:`~walkcut.runtime.cuts.nodes.ReferenceNodeSolver`). They give the same partitions up
        to eigensolver tolerance (tests/test_cuts_methods.py). A node solver instance (e.g.
        ``FastNodeSolver(tol=1e-6)``) sets its tuning; the graph is then built its ``name``'s way.

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
    nodes = node_solver(method, solver=solver)
    _, _, warm_pi = _warm_parts(warm_start)
    with _blas_limit(blas_threads):
        graph = build_graph(
            P, mode=mode, power=_check_int("power", power, 1), stationary=stationary, exponent=exponent,
            method=method if isinstance(method, str) else nodes.name, stationary_start=warm_pi,
        )
    if warm_start is None and graph.root_hint is not None:
        # No previous graph: the stationary solve's second left Ritz vector starts the root instead.
        warm_start = graph.root_hint
    return _cut(
        graph.W, nodes, threshold=threshold, min_size=min_size, max_segments=max_segments, seed=seed,
        blas_threads=blas_threads, warm_start=warm_start, stationary=graph.pi, degrees=graph.degrees,
    )
