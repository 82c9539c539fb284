"""Intervening contours in the weight-free pixel source (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from walkcut.runtime.segmenter import Segmenter
from walkcut.runtime.defaults import PRESETS
from walkcut.runtime.sources.pixels import PixelSource, edge_map, intervening_contours


def line_image(h=128, w=128, col=64, width=2):
    """Grey everywhere with a thin dark vertical line: both sides have the same colour."""
    img = np.full((h, w, 3), 150, np.uint8)
    img[:, col - width // 2 : col - width // 2 + width] = 20
    return img


def test_intervening_contours_known_answer():
    grid, s = 4, 8
    edges = np.zeros((grid * s, grid * s), np.float32)
    edges[:, 16] = 5.0  # the border between cell columns 1 and 2
    i = np.arange(grid * grid)
    yy, xx = np.divmod(i, grid)
    right = xx < grid - 1
    got = intervening_contours(edges, grid, i[right], 0, 1)  # each cell to its right neighbour
    crossing = xx[right] == 1
    np.testing.assert_array_equal(got[crossing], 5.0)
    np.testing.assert_array_equal(got[~crossing], 0.0)
    down = yy < grid - 1
    np.testing.assert_array_equal(intervening_contours(edges, grid, i[down], 1, 0), 0.0)  # parallel to the edge
    diag = (xx < grid - 2) & (yy < grid - 1)
    got = intervening_contours(edges, grid, i[diag], 1, 2)  # two columns over: always crosses column 16
    np.testing.assert_array_equal(got[xx[diag] >= 1], 5.0)


def test_edge_map_peaks_on_the_line():
    e = edge_map(line_image(), 16)
    assert e.shape == (256, 256)
    cols = e.max(axis=0)
    assert np.argmax(cols) in range(120, 137)  # the line sits at column 64 of 128 -> 128 of 256
    assert cols[:100].max() < 1e-3 * cols.max()  # flat grey: no edge


@pytest.mark.parametrize("contour_scale", [None, 2.0])
def test_transition_stays_stochastic_and_reversible(contour_scale):
    rng = np.random.default_rng(1)
    img = (line_image() + rng.integers(0, 20, (128, 128, 3))).astype(np.uint8)
    tr = PixelSource(grid=16, contour_scale=contour_scale).transition(img)
    P = tr.P
    assert sp.issparse(P) and np.isfinite(P.data).all()
    np.testing.assert_allclose(np.asarray(P.sum(axis=1)).ravel(), 1.0)
    flow = sp.diags(tr.stationary) @ P
    np.testing.assert_allclose((flow - flow.T).toarray(), 0.0, atol=1e-12)
    np.testing.assert_allclose(tr.stationary @ P, tr.stationary, atol=1e-12)


def test_contours_cut_the_walk_across_a_thin_line():
    """Same colour on both sides: only the line between the cells tells them apart."""
    img = line_image()
    grid = 16
    i = np.arange(grid * grid)
    left = (i % grid) < grid // 2 - 1  # cells clear of the line
    right = (i % grid) > grid // 2
    crossing = {}
    for cs in (None, 2.0):
        P = PixelSource(grid=grid, radius=3, contour_scale=cs).transition(img).P
        crossing[cs] = P[left][:, right].sum() / left.sum()  # probability of jumping the line in one step
    assert crossing[2.0] < 0.01 * crossing[None]
    labels = Segmenter(PixelSource(grid=grid, contour_scale=2.0)).set_image(img).segment(threshold=0.05).labels
    assert len(np.unique(labels[:, :56])) == 1 and len(np.unique(labels[:, 72:])) == 1
    assert labels[0, 0] != labels[0, -1]


def test_flat_image_has_finite_weights():
    tr = PixelSource(grid=8, contour_scale=2.0).transition(np.full((40, 40, 3), 77, np.uint8))
    assert np.isfinite(tr.P.data).all()
    np.testing.assert_allclose(np.asarray(tr.P.sum(axis=1)).ravel(), 1.0)


def test_bad_contour_scale():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="contour_scale"):
            PixelSource(contour_scale=bad)


def test_presets_build_sources():
    for name, preset in PRESETS.items():
        source = PixelSource(**preset["source"])
        assert source.grid == preset["source"]["grid"], name
        assert set(preset["cuts"]) <= {"threshold", "max_segments", "min_size", "mode", "power"}
