"""The fast method on sparse graphs: shift-invert Lanczos per node and the CSR sub-block gather."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse as sp
from pathlib import Path

from conftest import planted_walk, same_partition
from walkcut.runtime import cut_transition_matrix
from walkcut.runtime.cuts import sparse, spectral
from walkcut.runtime.cuts.nodes import FastNodeSolver
from walkcut.runtime.cuts.sweep import sweep_ncut_chunked
from walkcut.runtime.imageio import read_image
from walkcut.runtime.sources.pixels import PixelSource

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def random_symmetric(n: int, density: float, seed: int) -> sp.csr_matrix:
    A = sp.random(n, n, density=density, random_state=seed, format="csr")
    return sp.csr_matrix(A + A.T)


def test_csr_sub_block_equals_scipy_indexing():
    W = random_symmetric(300, 0.03, seed=1)
    W = W.tolil()
    W[5, :] = 0  # an empty row inside the selection
    W[:, 5] = 0
    W = sp.csr_matrix(W)
    rng = np.random.default_rng(0)
    for size in (1, 17, 150, 300):
        idx = np.sort(rng.choice(300, size, replace=False))
        idx[0] = 5 if size > 1 else idx[0]
        idx = np.unique(idx)
        got = sparse.csr_sub_block(W, idx)
        ref = W[idx][:, idx]
        assert got.shape == ref.shape
        np.testing.assert_array_equal(got.toarray(), ref.toarray())
        assert got.has_sorted_indices or got.nnz == 0
        # the small nodes' dense float32 block: the same numbers without the sparse matrix between
        dense = sparse.dense_sub_block(W, idx)
        assert dense.dtype == np.float32
        np.testing.assert_array_equal(dense, ref.toarray().astype(np.float32))


def test_row_sums_are_scipys_bit_for_bit():
    W = random_symmetric(200, 0.05, seed=2).tolil()
    W[7, :] = 0  # an empty row
    W[:, 7] = 0
    W = sp.csr_matrix(W)
    got = sparse.row_sums(W)
    ref = np.asarray(W.sum(axis=1, dtype=np.float64)).ravel()
    assert got.dtype == np.float64 and got[7] == 0.0
    np.testing.assert_array_equal(got, ref)


def test_sparse_sweep_reads_the_diagonal_where_it_is_stored():
    # some self-weights present, some absent: the sweep of the sparse matrix equals the dense one
    W = random_symmetric(120, 0.08, seed=3).tolil()
    for i in range(0, 120, 3):
        W[i, i] = 0.5 + i / 240
    W = sp.csr_matrix(W)
    W.eliminate_zeros()
    d = np.asarray(W.sum(axis=1)).ravel()
    y = np.random.default_rng(4).standard_normal(120)
    a = sweep_ncut_chunked(W, d, y, min_size=3)
    b = sweep_ncut_chunked(W.toarray(), d, y, min_size=3)
    np.testing.assert_array_equal(a.side, b.side)
    assert a.ncut == pytest.approx(b.ncut, rel=1e-12) and a.cut == pytest.approx(b.cut, rel=1e-12)


def weakly_joined_chains(seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    """Three chains of nodes (a banded graph) joined by 1e-7 edges: lambda_2 and lambda_3 of its
    normalised Laplacian are both ~1e-8, the case where plain Lanczos on ``M`` stalls."""
    rng = np.random.default_rng(seed)
    sizes = [200, 150, 170]
    n = sum(sizes)
    rows, cols, vals = [], [], []
    for k in (1, 2, 3):
        i = np.arange(n - k)
        rows.append(i)
        cols.append(i + k)
        vals.append(rng.uniform(0.5, 1.0, i.size))
    W = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()
    truth = np.repeat(np.arange(3), sizes)
    # cut the chains apart, then join them by one very weak edge each
    coo = W.tocoo()
    keep = truth[coo.row] == truth[coo.col]
    W = sp.coo_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=(n, n)).tolil()
    W[199, 200] = 1e-7
    W[349, 350] = 1e-7
    W = sp.csr_matrix(W)
    W = W + W.T + sp.identity(n, format="csr")
    return sp.csr_matrix(W), truth


def dense_fiedler(W) -> np.ndarray:
    A = W.toarray()
    d = A.sum(axis=1)
    s = 1 / np.sqrt(d)
    vals, vecs = np.linalg.eigh(s[:, None] * A * s[None, :])
    return vecs[:, -2] * s, vals


@pytest.mark.parametrize("factor", ["banded", "superlu"])
def test_shift_invert_operator_equals_the_dense_inverse(factor):
    """The band is built from W's lower triangle and its diagonal (self-loops included): the operator
    must be the projected ``(L + sigma I)^-1`` of the whole symmetric matrix, whichever factor runs."""
    rng = np.random.default_rng(3)
    n, sigma = 120, 1e-3
    rows, cols = np.nonzero(np.triu(rng.uniform(size=(n, n)) < 0.2) & (np.subtract.outer(np.arange(n), np.arange(n)) > -9))
    W = sp.coo_matrix((rng.uniform(0.1, 1.0, rows.size), (rows, cols)), shape=(n, n)) + sp.eye(n, k=1) * 0.05
    W = sp.csr_matrix(W + sp.triu(W, k=1).T)  # symmetric, connected, band 8, random self-loops on the diagonal
    assert W.diagonal().any() and (W != W.T).nnz == 0
    d = np.asarray(W.sum(axis=1)).ravel()
    s = 1 / np.sqrt(d)
    u = np.sqrt(d) / np.linalg.norm(np.sqrt(d))
    op = sparse._ShiftInvert(W, s, u, sigma, banded_max_entries=1 << 20 if factor == "banded" else 0)
    assert (op.banded is not None) == (factor == "banded")
    L = np.eye(n) - s[:, None] * W.toarray() * s[None, :]
    Q = np.eye(n) - np.outer(u, u)
    X = rng.standard_normal((n, 3))
    np.testing.assert_allclose(op(X), Q @ np.linalg.solve(L + sigma * np.eye(n), Q @ X), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("factor", ["banded", "superlu"])
def test_shift_invert_finds_the_fiedler_vector_of_a_nearly_disconnected_graph(factor):
    W, _ = weakly_joined_chains()
    ref, vals = dense_fiedler(W)
    assert 1 - vals[-2] < 1e-6  # the hard case: lambda_2 tiny
    d = np.asarray(W.sum(axis=1)).ravel()
    band = {} if factor == "banded" else {"banded_max_entries": 0}  # no band fits: SuperLU
    y, ok = sparse.shift_invert_fiedler(W, d, seed=0, **band)
    assert ok
    cos = abs(y @ (d * ref)) / np.sqrt((y @ (d * y)) * (ref @ (d * ref)))  # D-inner product
    assert cos > 1 - 1e-8


def test_shift_invert_needs_few_solves_where_arpack_needs_many(monkeypatch):
    W, truth = weakly_joined_chains()
    d = np.asarray(W.sum(axis=1)).ravel()
    solves = []
    real = sparse._ShiftInvert.__call__

    def counting(self, X):
        solves.append(X.shape[1])
        return real(self, X)

    monkeypatch.setattr(sparse._ShiftInvert, "__call__", counting)
    y, ok = sparse.shift_invert_fiedler(W, d)
    assert ok and sum(solves) <= 20
    split = sweep_ncut_chunked(W, d, y, min_size=2)
    assert split.ncut < 1e-6  # it cut one of the weak joints
    assert same_partition(split.side, truth == 0) or same_partition(split.side, truth == 2)


def test_pixel_partitions_do_not_depend_on_the_seed():
    """Shift-invert converges to the eigenvector itself, so the start vector no longer picks among
    nearly equal eigenvalues (the reference method's ARPACK at 1e-5 can)."""
    image = read_image(EXAMPLES / "coffee.jpg")
    tr = PixelSource(grid=40).transition(image)
    labels = [cut_transition_matrix(tr.P, stationary=tr.stationary, seed=s).labels for s in (0, 1, 2)]
    assert same_partition(labels[0], labels[1]) and same_partition(labels[0], labels[2])


def test_both_methods_find_planted_blocks_on_a_sparse_walk():
    P, truth = planted_walk([120, 90, 60, 110], p_out=0.01, seed=7)
    keep = np.random.default_rng(0).uniform(size=P.shape) < 0.15  # a genuinely sparse walk
    keep |= keep.T
    P = sp.csr_matrix(np.where(keep, P, 0))
    P = sp.csr_matrix(sp.diags(1 / np.asarray(P.sum(axis=1)).ravel()) @ P)
    for method in ("fast", "reference"):  # shift-invert per node; ARPACK on dense float32 node copies
        assert same_partition(cut_transition_matrix(P, method=method).labels, truth), method


def test_failed_factorisation_falls_back_to_the_reference_solver(monkeypatch, caplog):
    def broken(self, *args, **kwargs):
        raise RuntimeError("Factor is exactly singular")

    monkeypatch.setattr(sparse._ShiftInvert, "__init__", broken)
    image = read_image(EXAMPLES / "coffee.jpg")
    # The graph without contours: on the contour graph (the default since issue 12) this image has
    # nearly coincident eigenvalues at one node, where the fallback (ARPACK on the sparse node) and the
    # reference method pick different vectors of the cluster (6 vs 7 leaves, 99.7% of node pairs agree).
    tr = PixelSource(grid=24, contour_scale=None).transition(image)
    with caplog.at_level(logging.INFO, logger="walkcut.runtime.cuts"):
        result = cut_transition_matrix(tr.P, stationary=tr.stationary)
    assert "factorisation failed" in caplog.text
    ref = cut_transition_matrix(tr.P, stationary=tr.stationary, method="reference")
    assert same_partition(result.labels, ref.labels)


def test_unconverged_shift_invert_falls_back(monkeypatch, caplog):
    W, truth = weakly_joined_chains()
    calls = []
    real = spectral.fiedler_vector

    def spy(*args, **kwargs):
        calls.append(kwargs.get("start") is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(spectral, "fiedler_vector", spy)
    with caplog.at_level(logging.INFO, logger="walkcut.runtime.cuts.nodes"):
        split, _ = FastNodeSolver(shift_invert_max_steps=1).bipartition(W, min_size=2, seed=0, recycle=False)
    assert "did not converge" in caplog.text
    assert calls == [True]  # the reference solver started from the shift-invert vector
    assert split.ncut < 1e-6
