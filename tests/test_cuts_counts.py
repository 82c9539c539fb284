"""Speed v3 of the fast cut method: counted work, and the pieces that save it (each against a direct
computation of the same quantity)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla
from walkcut.runtime import cut_transition_matrix
from walkcut.runtime.cuts import counts, krylov, nodes
from walkcut.runtime.cuts.graph import _dense_checked_copy, build_graph, check_transition_matrix, walk_affinity_inplace
from walkcut.runtime.cuts.stationary import stationary_and_second, stationary_distribution

from walkcut.eval.metrics import adjusted_rand_index, contingency_table
from walkcut.eval.reference import synthetic_attention


def test_counting_is_scoped_and_counts_the_products():
    P = synthetic_attention(20, seed=1).astype(np.float32)
    n = P.shape[0]
    counts.tally("eigen-solves", 1e9)  # outside a counting block: ignored
    seen = []
    real = nodes._Operator.__call__

    def spy(self, X):
        seen.append(X.shape[1] * self.W.nbytes)
        return real(self, X)

    nodes._Operator.__call__ = spy
    try:
        with counts.counting() as c:
            cut_transition_matrix(P)
    finally:
        nodes._Operator.__call__ = real
    units = c.units(n)
    assert c.bytes["eigen-solves"] >= sum(seen) > 0  # every product of a node's operator is counted
    assert units["validation"] == pytest.approx(2.0)  # float32 P read once, its copy written once
    assert units["graph W"] == pytest.approx(2.0)  # the tile pass: read and write
    assert c.calls["stationary pi"] == units["stationary pi"]  # one unit per product with P
    assert c.total_units(n) == pytest.approx(sum(units.values()))
    with counts.counting() as inner:
        pass
    assert not inner.bytes and not counts.active()


def test_stationary_arnoldi_matches_double_precision_and_finds_the_slow_mode():
    raw = synthetic_attention(16, k=2, seed=3)  # two planted regions: the second mode separates them
    P = check_transition_matrix(raw)
    ref = stationary_distribution(P.astype(np.float64), tol=1e-12)
    pi, phi = stationary_and_second(P)
    np.testing.assert_allclose(pi, ref, rtol=2e-3, atol=1e-7)
    # the second left eigenvector of P, exactly: its sign pattern is the planted split
    vals, left = sla.eig(P.astype(np.float64).T)
    exact = left[:, np.argsort(-vals.real)[1]].real
    assert abs(np.corrcoef(phi, exact)[0, 1]) > 0.99
    # Unscaled rows with their scale give the same answer as the normalised matrix.
    unscaled, scale = _dense_checked_copy(raw, "P", 1e-2)
    pi2, _ = stationary_and_second(unscaled, row_scale=scale)
    np.testing.assert_allclose(pi2, ref, rtol=2e-3, atol=1e-7)


def test_walk_graph_in_one_pass_with_row_scale_and_degrees():
    raw = synthetic_attention(19, seed=1)  # 361 nodes: not a multiple of the tile
    P = check_transition_matrix(raw)
    pi = stationary_distribution(P.astype(np.float64))
    expected = P * pi[:, None].astype(np.float32)
    expected = 0.5 * (expected + expected.T)
    unscaled, scale = _dense_checked_copy(raw, "P", 1e-2)
    degrees = np.empty(P.shape[0])
    W = walk_affinity_inplace(unscaled, pi * scale, tile=64, degrees=degrees)
    assert np.array_equal(W, W.T)
    np.testing.assert_allclose(W, expected, rtol=1e-5, atol=1e-12)
    # each tile's sums are float32 mat-vecs (single-precision accumulation over a tile)
    np.testing.assert_allclose(degrees, W.sum(axis=1, dtype=np.float64), rtol=1e-6)
    graph = build_graph(raw, method="fast")
    assert graph.degrees is not None and graph.root_hint is not None
    np.testing.assert_allclose(graph.degrees, graph.W.sum(axis=1, dtype=np.float64), rtol=1e-6)


def test_gather_block_matches_fancy_indexing():
    rng = np.random.default_rng(0)
    W = rng.random((300, 300), dtype=np.float32)
    idx = np.sort(rng.choice(300, 170, replace=False))
    other = np.setdiff1d(np.arange(300), idx)
    block, d, off = nodes.gather_block(W, idx, other)
    assert np.array_equal(block, W[np.ix_(idx, idx)])
    assert np.array_equal(off, W[np.ix_(idx, other)])
    # row sums as a float32 mat-vec: single-precision accumulation
    np.testing.assert_allclose(d, W[np.ix_(idx, idx)].sum(axis=1, dtype=np.float64), rtol=1e-6)
    assert nodes.gather_block(W, idx)[2] is None


def test_lanczos_ritz_images_follow_the_three_term_relation():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((200, 200))
    A = A + A.T
    u = np.ones(200) / np.sqrt(200)
    Q = np.eye(200) - np.outer(u, u)
    A = Q @ A @ Q + np.outer(u, u)  # u an exact eigenvector, as in M = D^-1/2 W D^-1/2
    _, ritz, _, (R, images) = krylov.lanczos_fiedler(lambda X: A @ X, u, rng.standard_normal(200), tol=1e-12,
                                                     max_steps=30, n_ritz=4, basis=True)
    assert R is ritz and R.shape == (200, 4)
    np.testing.assert_allclose(images, A @ R, atol=1e-8)


def test_lanczos_with_u_folded_into_the_basis_finds_the_same_pair():
    rng = np.random.default_rng(4)
    A = rng.standard_normal((150, 150))
    A = A + A.T
    u = np.ones(150) / np.sqrt(150)
    Q = np.eye(150) - np.outer(u, u)
    A = Q @ A @ Q + 100.0 * np.outer(u, u)  # u the top eigenvector, as in M = D^-1/2 W D^-1/2
    v0 = rng.standard_normal(150)
    runs = [krylov.lanczos_fiedler(lambda X: A @ X, u, v0, tol=1e-10, max_steps=149, n_ritz=2, basis=True,
                                   fold_u=fold) for fold in (False, True)]
    lam, vec = np.linalg.eigh(Q @ A @ Q)
    for v, _, converged, (R, images) in runs:
        assert converged and abs(v @ u) < 1e-10
        assert abs(abs(v @ vec[:, -1]) - 1.0) < 1e-8  # the top eigenvector of the deflated operator
        np.testing.assert_allclose(images, A @ R, atol=1e-7)


@pytest.mark.parametrize("m", [6, 40, 150, 700])
def test_dense_sweep_finds_the_reference_sweeps_split(m):
    """sweep_ncut_dense (row chunks in sweep order, one mat-vec each; 2-D prefix sums on small nodes)
    against the reference sweep's permuted lower triangle, for every allowed split size."""
    from walkcut.runtime.cuts.sweep import sweep_ncut, sweep_ncut_dense

    rng = np.random.default_rng(m)
    X = rng.random((m, 5))
    W = np.exp(-4.0 * ((X[:, None] - X[None]) ** 2).sum(-1)).astype(np.float32)  # symmetric, positive
    d = W.sum(axis=1, dtype=np.float64)
    y = X[:, 0] + 0.05 * rng.standard_normal(m)
    for min_size in (1, 2, m // 3):
        fast = sweep_ncut_dense(W, d, y, min_size=min_size, chunk_elements=64 * m // 3)  # several chunks
        ref = sweep_ncut(W, d, y, min_size=min_size)
        assert np.array_equal(fast.side, ref.side)
        assert fast.ncut == pytest.approx(ref.ncut, rel=1e-6) and fast.cut == pytest.approx(ref.cut, rel=1e-6)
        assert fast.volume == pytest.approx(ref.volume, rel=1e-12)
        assert min_size <= fast.side.sum() <= m - min_size
    assert sweep_ncut_dense(W, d, y, min_size=m // 2 + 1) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_node_eigenvector_matches_the_full_solve(dtype):
    rng = np.random.default_rng(5)
    for m in (2, 37, 160):
        A = rng.random((m, m)).astype(dtype)
        A = A + A.T
        v = krylov.top_eigenvector_small(A)
        ref = np.linalg.eigh(A.astype(np.float64))[1][:, -1]
        assert v.dtype == dtype and abs(abs(float(v @ ref)) - 1.0) < (1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_eigenvector_is_lapacks_subset_solve_bit_for_bit(dtype):
    rng = np.random.default_rng(3)
    for m in (2, 37, 160):
        A = rng.random((m, m)).astype(dtype)
        A = A + A.T
        _, vec = sla.eigh(A, subset_by_index=[m - 1, m - 1], driver="evx", check_finite=False)
        assert np.array_equal(krylov.top_eigenvector(A), vec[:, 0])


def test_fast_cut_keeps_the_reference_partition_on_attention_walks():
    for seed in range(2):
        P = synthetic_attention(32, seed=seed)
        fast = cut_transition_matrix(P).labels
        ref = cut_transition_matrix(P, method="reference").labels
        assert adjusted_rand_index(contingency_table(fast, ref)) == pytest.approx(1.0)


@pytest.mark.slow
def test_dense_4096_cut_reads_at_most_100_matvecs():
    """Issue 21's target: the whole n = 4096 dense cut in at most 100 counted float32 mat-vecs."""
    for seed in range(3):
        P = synthetic_attention(64, seed=seed)
        with counts.counting() as c:
            result = cut_transition_matrix(P)
        assert c.total_units(P.shape[0]) <= 100, (seed, dict(c.units(P.shape[0])))
        assert result.n_segments == 16
