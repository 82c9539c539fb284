"""Known answers, invariances and failure handling of the recursive cuts."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import planted_walk, same_partition
from walkcut.runtime import cut_affinity, cut_transition_matrix, defaults
from walkcut.runtime.cuts import spectral
from walkcut.runtime.cuts.graph import DisconnectedGraphWarning, affinity
from walkcut.runtime.cuts.stationary import stationary_distribution
from walkcut.runtime.cuts.hierarchy import Hierarchy, otsu_threshold


@pytest.mark.parametrize("mode", ["walk", "dot", "cosine"])
@pytest.mark.parametrize("threshold", ["auto-ncut", "auto-mincut", 0.3])
def test_planted_partition_is_recovered(planted, mode, threshold):
    P, truth = planted
    result = cut_transition_matrix(P, mode=mode, threshold=threshold)
    assert same_partition(result.labels, truth), (mode, threshold, result.n_segments)


@pytest.mark.parametrize("power", [2, 4])
def test_power_walk_keeps_planted_partition(planted, power):
    P, truth = planted
    assert same_partition(cut_transition_matrix(P, power=power).labels, truth)


def test_walk_ncut_is_escape_probability():
    """For mode="walk" the root split's NCut equals Pr(A->B|A) + Pr(B->A|B) of the walk."""
    P, truth = planted_walk([50, 70], p_out=0.05, seed=3)
    pi = stationary_distribution(P)
    root = cut_transition_matrix(P, threshold=0.0).hierarchy.root
    A = truth == 0
    expected = (pi[A] @ P[np.ix_(A, ~A)]).sum() / pi[A].sum() + (pi[~A] @ P[np.ix_(~A, A)]).sum() / pi[~A].sum()
    assert root.ncut == pytest.approx(expected, rel=1e-6)


def test_walk_affinity_volumes_are_stationary_mass(planted):
    P, _ = planted
    W = affinity(P, mode="walk")
    assert W.dtype == np.float32  # dense graphs are single precision (memory-bound kernels)
    np.testing.assert_allclose(W, W.T)
    np.testing.assert_allclose(W.sum(axis=1, dtype=np.float64), stationary_distribution(P), rtol=1e-5)


def test_permutation_invariance(planted):
    P, _ = planted
    perm = np.random.default_rng(1).permutation(P.shape[0])
    base = cut_transition_matrix(P).labels
    permuted = cut_transition_matrix(P[np.ix_(perm, perm)]).labels
    assert same_partition(permuted, base[perm])


def test_float32_and_float64_agree(planted):
    P, _ = planted
    a = cut_transition_matrix(P.astype(np.float64)).labels
    b = cut_transition_matrix(P.astype(np.float32)).labels
    assert same_partition(a, b)


def test_sparse_and_dense_agree(planted):
    P, truth = planted
    assert same_partition(cut_transition_matrix(sp.csr_matrix(P)).labels, truth)


def test_threshold_zero_gives_one_segment_and_reprune_is_consistent(planted):
    P, _ = planted
    result = cut_transition_matrix(P, threshold="auto-ncut")
    assert result.with_threshold(0.0).n_segments == 1
    again = result.with_threshold(result.threshold)
    np.testing.assert_array_equal(again.labels, result.labels)
    # More permissive thresholds never give fewer segments (the tree is nested).
    counts = [result.with_threshold(t).n_segments for t in (0.0, 0.05, 0.2, 0.5, 0.9)]
    assert counts == sorted(counts)


def test_pruning_rule_needs_parent_split():
    """A cheap split below an expensive one is not taken: a node splits only if its parent did."""
    P, _ = planted_walk([60, 60], p_out=0.3, seed=4)
    tree = cut_transition_matrix(P, threshold=0.0, max_segments=8).hierarchy
    root = tree.root
    assert root.children
    tau = root.ncut * 0.99  # below the root's cost: nothing may split, whatever the children cost
    assert len(tree.leaves(tau)) == 1


def test_hierarchy_records_members_and_costs(planted):
    P, _ = planted
    tree = cut_transition_matrix(P).hierarchy
    n = P.shape[0]
    assert tree.root.size == n
    for node in tree.nodes:
        if node.children:
            a, b = (tree.nodes[c] for c in node.children)
            np.testing.assert_array_equal(np.sort(np.concatenate([a.members, b.members])), node.members)
            assert a.parent == b.parent == node.id
            assert 0 <= node.mincut <= node.volume
            assert node.scaled_mincut == pytest.approx(node.mincut / node.volume)
            assert 0 <= node.ncut <= 2


def test_min_size_is_respected(planted):
    P, _ = planted
    result = cut_transition_matrix(P, threshold=1.0, min_size=15, max_segments=64)
    assert np.bincount(result.labels).min() >= 15


def test_max_segments_caps_leaves(planted):
    P, _ = planted
    assert cut_transition_matrix(P, threshold=2.0, max_segments=3).n_segments <= 3


def test_disconnected_components_are_separated():
    P, truth = planted_walk([30, 30, 30], p_out=0.0, seed=2)
    assert same_partition(cut_transition_matrix(P, threshold=0.5).labels, truth)


def test_identical_components_repeated_eigenvalue():
    """Three identical disconnected blocks: the deflated top eigenvalue is 1 twice; the dense
    solver must still return a vector (regression: LAPACK evr returned none)."""
    block = np.full((20, 20), 1.0 / 20)
    P = np.kron(np.eye(3), block)
    truth = np.repeat(np.arange(3), 20)
    for solver in ("dense", "auto"):
        assert same_partition(cut_transition_matrix(P, threshold=0.5, solver=solver).labels, truth)


def test_zero_degree_nodes_warn_and_form_their_own_segment():
    P, truth = planted_walk([30, 30], seed=5)
    P = np.pad(P, ((0, 3), (0, 3)))  # three nodes with no edges at all
    with pytest.warns(DisconnectedGraphWarning, match="3 of 63 nodes have no edges"):
        result = cut_transition_matrix(P, threshold=0.5)
    assert len(set(result.labels[-3:])) == 1
    assert result.labels[-1] not in set(result.labels[:-3])
    assert same_partition(result.labels[:-3], truth)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_rejected(planted, bad):
    P, _ = planted
    P = P.copy()
    P[3, 4] = bad
    with pytest.raises(ValueError, match="NaN/Inf"):
        cut_transition_matrix(P)


def test_bad_inputs_have_clear_errors(planted):
    P, _ = planted
    with pytest.raises(ValueError, match="square"):
        cut_transition_matrix(P[:5])
    with pytest.raises(ValueError, match="sum to 1"):
        cut_transition_matrix(P * 2)
    with pytest.raises(ValueError, match="negative"):
        cut_transition_matrix(P - 0.5)
    with pytest.raises(ValueError, match="mode must be one of"):
        cut_transition_matrix(P, mode="euclid")
    with pytest.raises(ValueError, match="threshold must be"):
        cut_transition_matrix(P, threshold="auto")
    with pytest.raises(ValueError, match="power must be an integer"):
        cut_transition_matrix(P, power=0)
    with pytest.raises(ValueError, match="min_size"):
        cut_transition_matrix(P, min_size=0)
    with pytest.raises(TypeError, match="threshold must be"):
        cut_transition_matrix(P, threshold=[0.5])


def test_forced_solver_failure_falls_back_without_looping(planted, monkeypatch, caplog):
    P, truth = planted
    calls = {"arpack": 0, "lobpcg": 0}

    def broken(name):
        def solve(*args, **kwargs):
            calls[name] += 1
            raise spectral.ArpackError(-9999)

        return solve

    monkeypatch.setitem(spectral._SOLVER_FUNCS, "arpack", broken("arpack"))
    monkeypatch.setitem(spectral._SOLVER_FUNCS, "lobpcg", broken("lobpcg"))
    with caplog.at_level(logging.WARNING, logger="walkcut.runtime.cuts.spectral"):
        # ARPACK first on every node above ITERATIVE_MIN_NODES; the fast method's fallbacks are
        # tested in test_cuts_methods.py and test_cuts_sparse.py.
        result = cut_transition_matrix(P, method="reference", solver="arpack")
    assert same_partition(result.labels, truth)
    assert "falling back" in caplog.text
    small = defaults.ITERATIVE_MIN_NODES
    n_solves = sum(1 for node in result.hierarchy.nodes if math.isfinite(node.ncut) and node.size > small)
    assert n_solves > 0
    assert calls["arpack"] == calls["lobpcg"] == n_solves  # each tried once per solve, no retry loop


def test_all_solvers_failing_raises(planted, monkeypatch):
    P, _ = planted

    def broken(*args, **kwargs):
        raise spectral.ArpackError(-9999)

    monkeypatch.setattr(defaults, "DENSE_FALLBACK_MAX_NODES", 8)  # the last resort refuses too
    monkeypatch.setitem(spectral._SOLVER_FUNCS, "arpack", broken)
    monkeypatch.setitem(spectral._SOLVER_FUNCS, "lobpcg", broken)
    with pytest.raises(spectral.SolverError, match="all eigensolvers failed.*dense eigh refused"):
        cut_transition_matrix(P, method="reference", solver="arpack")


@pytest.mark.parametrize("solver", ["arpack", "lobpcg", "dense"])
def test_each_solver_recovers_partition(planted, solver):
    P, truth = planted
    assert same_partition(cut_transition_matrix(P, solver=solver).labels, truth)


def test_sweep_is_exact_ncut_minimum():
    """The sweep's NCut equals a brute-force evaluation over all prefix splits of the sorted vector."""
    rng = np.random.default_rng(7)
    A = rng.uniform(0, 1, (25, 25))
    W = (A + A.T) / 2
    d = W.sum(axis=1)
    y = rng.standard_normal(25)
    best = spectral.sweep_ncut(W, d, y)
    order = np.argsort(y, kind="stable")
    brute = []
    for k in range(1, 25):
        a = np.zeros(25, bool)
        a[order[:k]] = True
        cut = W[np.ix_(a, ~a)].sum()
        brute.append(cut / d[a].sum() + cut / d[~a].sum())
    assert best.ncut == pytest.approx(min(brute))


def test_otsu_separates_two_groups():
    tau = otsu_threshold(np.array([0.01, 0.02, 0.015, 0.4, 0.5, 0.45]))
    assert 0.02 < tau < 0.4


def test_cut_affinity_accepts_symmetric_graph():
    _, truth = planted_walk([20, 20])
    W = np.where(truth[:, None] == truth[None, :], 1.0, 0.01)
    assert same_partition(cut_affinity(W, threshold=0.5).labels, truth)


def test_hierarchy_is_frozen(planted):
    P, _ = planted
    tree: Hierarchy = cut_transition_matrix(P).hierarchy
    with pytest.raises(AttributeError):
        tree.root.ncut = 0.0  # type: ignore[misc]


def test_warm_start_gives_the_same_partition_and_exposes_root_vector(planted):
    P, truth = planted
    cold = cut_transition_matrix(P)
    vec = cold.hierarchy.root_vector
    assert vec is not None and vec.shape == (P.shape[0],)
    warm = cut_transition_matrix(P, warm_start=vec)
    assert same_partition(warm.labels, truth)
    # A hint of the wrong length is ignored, not an error.
    assert same_partition(cut_transition_matrix(P, warm_start=np.ones(3)).labels, truth)
