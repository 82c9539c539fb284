"""The fast cut method against the reference method: same partitions, same graph, same sweep."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import planted_walk, same_partition
from walkcut.runtime import cut_transition_matrix
from walkcut.runtime.cuts import krylov, nodes, sweep
from walkcut.runtime.cuts.graph import affinity, check_transition_matrix, walk_affinity_inplace
from walkcut.runtime.cuts.nodes import FastNodeSolver, ReferenceNodeSolver
from walkcut.runtime.cuts.stationary import stationary_distribution, stationary_distribution_fast

from walkcut.eval.metrics import adjusted_rand_index, contingency_table
from walkcut.eval.reference import synthetic_attention


def ari(a, b) -> float:
    return adjusted_rand_index(contingency_table(a, b))


def test_adjusted_rand_index_known_values():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert ari(a, a) == pytest.approx(1.0)
    assert ari(a, 5 - a) == pytest.approx(1.0)  # renaming does not matter
    # Hubert & Arabie's formula by hand: 2 pairs together in both, sum C(a_i, 2) = 3,
    # sum C(b_j, 2) = 6, C(6, 2) = 15: (2 - 1.2) / (4.5 - 1.2).
    b = np.array([0, 0, 0, 1, 1, 1])
    expected = (2 - 3 * 6 / 15) / (0.5 * (3 + 6) - 3 * 6 / 15)
    assert ari(a, b) == pytest.approx(expected)
    assert ari(np.zeros(4), np.zeros(4)) == 1.0


@pytest.mark.parametrize("sparse", [False, True])
def test_planted_partition_same_in_both_methods(sparse):
    P, truth = planted_walk([120, 90, 60, 110], seed=4)  # 380 nodes: Lanczos / shift-invert at the root
    P = sp.csr_matrix(P) if sparse else P
    for method in ("fast", "reference"):
        assert same_partition(cut_transition_matrix(P, method=method).labels, truth), method


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_agrees_with_reference_on_attention_like_walks(seed):
    P = synthetic_attention(24, k=10, seed=seed)  # 576 nodes, dense, eigen-gaps of real attention
    ref = cut_transition_matrix(P, method="reference")
    quick = cut_transition_matrix(P, method="fast")
    assert ari(ref.labels, quick.labels) >= 0.97
    assert quick.n_segments >= 5


def test_method_and_node_solver_options_are_validated(planted):
    P, _ = planted
    with pytest.raises(ValueError, match="method must be one of"):
        cut_transition_matrix(P, method="exact")  # the v0.2 name: an error that names the choices
    with pytest.raises(ValueError, match="solver must be one of"):
        cut_transition_matrix(P, solver="magic")
    with pytest.raises(ValueError, match="solver='dense' applies to a method name"):
        cut_transition_matrix(P, method=FastNodeSolver(), solver="dense")
    with pytest.raises(ValueError, match="random_columns"):
        FastNodeSolver(random_columns=17)
    with pytest.raises(ValueError, match="tol"):
        FastNodeSolver(tol=0.0)
    with pytest.raises(ValueError, match="solver must be one of"):
        ReferenceNodeSolver(solver="lanczos")


def test_node_solvers_are_chosen_once_by_method_and_solver():
    assert isinstance(nodes.node_solver("fast"), FastNodeSolver)
    assert isinstance(nodes.node_solver("reference"), ReferenceNodeSolver)
    # A named eigensolver is the reference solver's, whatever the method.
    assert nodes.node_solver("fast", solver="lobpcg") == ReferenceNodeSolver(solver="lobpcg")
    tuned = FastNodeSolver(tol=1e-7)
    assert nodes.node_solver(tuned) is tuned
    assert isinstance(tuned, nodes.NodeSolver) and isinstance(ReferenceNodeSolver(), nodes.NodeSolver)


def test_reference_method_builds_the_reference_graph(planted):
    """A node solver instance builds the graph its method's way: the reference solver instance gives
    the same tree as the name "reference" (double-precision pi), bit for bit."""
    P, _ = planted
    by_name = cut_transition_matrix(P, method="reference").hierarchy
    by_instance = cut_transition_matrix(P, method=ReferenceNodeSolver()).hierarchy
    assert [n.ncut for n in by_name.nodes] == [n.ncut for n in by_instance.nodes]


def test_single_precision_stationary_matches_double():
    P = check_transition_matrix(synthetic_attention(16, seed=3))
    assert P.dtype == np.float32
    pi = stationary_distribution_fast(P)
    ref = stationary_distribution(P.astype(np.float64), tol=1e-12)
    assert pi.dtype == np.float64 and pi.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(pi, ref, rtol=2e-3, atol=1e-7)
    # A warm start from the answer converges at once to the same vector.
    np.testing.assert_allclose(stationary_distribution_fast(P, start=ref), ref, rtol=2e-3, atol=1e-7)


@pytest.mark.parametrize("tile", [64, 512])
def test_inplace_walk_graph_equals_reference(tile):
    P = check_transition_matrix(synthetic_attention(19, seed=1))  # 361 nodes: not a multiple of the tile
    pi = stationary_distribution(P)
    ref = affinity(P, mode="walk", stationary=pi)
    W = walk_affinity_inplace(P.copy(), pi, tile=tile)  # 64: off-diagonal tiles and a ragged edge
    np.testing.assert_allclose(W, ref, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(W, W.T)


@pytest.mark.parametrize("sparse", [False, True])
def test_chunked_sweep_equals_reference_sweep(sparse):
    P, _ = planted_walk([30, 50, 20], seed=2)
    W = affinity(P, mode="walk")
    W = sp.csr_matrix(W) if sparse else W
    d = np.asarray(W.sum(axis=1)).ravel().astype(np.float64)
    y = np.random.default_rng(0).standard_normal(W.shape[0])
    a = sweep.sweep_ncut(W, d, y, min_size=3)
    b = sweep.sweep_ncut_chunked(W, d, y, min_size=3, chunk_elements=1000)  # several chunks on a small graph
    np.testing.assert_array_equal(a.side, b.side)
    assert b.ncut == pytest.approx(a.ncut, rel=1e-5)


def test_lanczos_finds_the_fiedler_vector():
    P, _ = planted_walk([100, 80, 70], p_out=0.05, seed=5)
    W = affinity(P, mode="walk").astype(np.float64)
    d = W.sum(axis=1)
    s = 1 / np.sqrt(d)
    u = np.sqrt(d) / np.linalg.norm(np.sqrt(d))
    M = s[:, None] * W * s[None, :] - np.outer(u, u)
    ref = np.linalg.eigh(M)[1][:, -1]
    op = nodes._Operator(W, s)
    start = np.random.default_rng(0).standard_normal((W.shape[0], 8))
    _, X, ok = krylov.lanczos_fiedler(op, u, start[:, 0], tol=1e-8, max_steps=200, n_ritz=8)
    assert ok
    assert abs(X[:, 0] @ ref) > 1 - 1e-6
    assert np.abs(X.T @ u).max() < 1e-8  # the trivial eigenvector stays deflated


def test_children_reuse_the_parent_block(monkeypatch):
    """The recycled start needs fewer products than a cold start."""
    P = synthetic_attention(20, k=8, seed=0)
    products = []
    real = nodes._Operator.__call__

    def counting(self, X):
        products.append(X.shape[1])
        return real(self, X)

    monkeypatch.setattr(nodes._Operator, "__call__", counting)
    ref = cut_transition_matrix(P, method="reference").labels
    cut_transition_matrix(P)
    recycled = sum(products)
    products.clear()
    cold = FastNodeSolver(random_columns=FastNodeSolver().block_size)  # every start random: no recycling
    labels = cut_transition_matrix(P, method=cold).labels
    assert recycled < sum(products)
    assert ari(labels, ref) >= 0.97


def test_warm_start_from_previous_hierarchy():
    P = synthetic_attention(20, k=8, seed=0)
    cold = cut_transition_matrix(P)
    tree = cold.hierarchy
    assert tree.stationary is not None and tree.root_block is not None
    warm = cut_transition_matrix(P, warm_start=tree)
    assert ari(warm.labels, cold.labels) >= 0.97
    warm2 = cut_transition_matrix(P, warm_start=cold)  # a CutResult works too
    assert ari(warm2.labels, cold.labels) >= 0.97
    # Parts of the wrong size (another grid) are ignored.
    other = cut_transition_matrix(synthetic_attention(16, seed=0)).hierarchy
    assert ari(cut_transition_matrix(P, warm_start=other).labels, cold.labels) >= 0.97


def test_fast_path_does_not_copy_the_full_graph(monkeypatch):
    """The root solves on W itself: no gathered copy of the whole matrix."""
    P = synthetic_attention(20, seed=2)
    sizes = []
    real = nodes.gather_block

    def spy(W, idx, other=None):
        sizes.append(idx.size)
        return real(W, idx, other)

    monkeypatch.setattr(nodes, "gather_block", spy)
    cut_transition_matrix(P)
    assert sizes and max(sizes) < P.shape[0]


def test_lanczos_that_does_not_converge_falls_back_to_arpack(monkeypatch, caplog):
    import logging

    P, truth = planted_walk([120, 90, 60, 110], seed=4)
    calls = []
    real = nodes.spectral.fiedler_vector

    def spy(*args, **kwargs):
        calls.append(kwargs.get("start") is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(nodes.spectral, "fiedler_vector", spy)
    with caplog.at_level(logging.INFO, logger="walkcut.runtime.cuts.nodes"):
        result = cut_transition_matrix(P, method=FastNodeSolver(max_steps=2))
    assert "did not converge" in caplog.text
    assert calls and all(calls)  # the reference solver took over, started from the Lanczos vector
    assert same_partition(result.labels, truth)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_path_leaves_the_callers_matrix_alone(dtype):
    P = synthetic_attention(12, seed=4).astype(dtype)
    before = P.copy()
    cut_transition_matrix(P)
    np.testing.assert_array_equal(P, before)
