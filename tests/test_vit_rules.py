"""The two additions tuned on real ViT attention: the ``auto-ncut-unweighted`` rule and ``snap`` upsampling."""

from __future__ import annotations

import numpy as np
import pytest
from walkcut.runtime.cuts.hierarchy import AUTO_RULES, cut_transition_matrix, otsu_threshold, resolve_threshold
from walkcut.runtime.segmenter import Segmenter
from walkcut.runtime.upsample import METHODS, snap_to_segments


def planted_walk(sizes, inside=1.0, across=0.02, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A dense row-stochastic walk with planted blocks of ``sizes`` (and the true labels)."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    W = np.where(truth[:, None] == truth[None, :], inside, across) * rng.uniform(0.8, 1.2, (truth.size,) * 2)
    W = (W + W.T) / 2
    return W / W.sum(axis=1, keepdims=True), truth


def test_unweighted_rule_is_otsu_on_split_costs_counted_once():
    P, _ = planted_walk([40, 30, 20, 10])
    result = cut_transition_matrix(P, threshold="auto-ncut-unweighted", max_segments=12)
    values = result.hierarchy.costs("ncut")
    cost, tau = resolve_threshold(result.hierarchy, "auto-ncut-unweighted")
    assert cost == "ncut" and tau == pytest.approx(otsu_threshold(values, None, floor=1e-3))
    _, weighted = resolve_threshold(result.hierarchy, "auto-ncut")
    values_w, sizes = result.hierarchy.costs("ncut", with_sizes=True)
    assert weighted == pytest.approx(otsu_threshold(values_w, sizes, floor=1e-3))


def test_unweighted_rule_recovers_planted_blocks():
    P, truth = planted_walk([40, 30, 20, 10])
    labels = cut_transition_matrix(P, threshold="auto-ncut-unweighted", max_segments=12).labels
    # every planted block is one segment and no two blocks share one
    assert all(np.unique(labels[truth == b]).size == 1 for b in range(4))
    assert np.unique(labels).size == 4
    assert "auto-ncut-unweighted" in AUTO_RULES


def test_unknown_rule_names_the_choices():
    P, _ = planted_walk([10, 10])
    with pytest.raises(ValueError, match="auto-ncut-unweighted"):
        cut_transition_matrix(P, threshold="auto-ncut-weighted")


def test_snap_known_answer():
    labels = np.zeros((4, 6), dtype=np.int64)
    labels[:, 3:] = 1  # coarse boundary between columns 2 and 3
    segments = np.repeat(np.array([[0, 0, 1, 1, 1, 2]]), 4, axis=0)  # fine boundaries at 2 and 5
    snapped = snap_to_segments(labels, segments)
    # segment 1 (columns 2-4) has 4 pixels of label 0 and 8 of label 1: the boundary moves to column 2
    np.testing.assert_array_equal(snapped[0], [0, 0, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="differ in shape"):
        snap_to_segments(labels, segments[:, :5])


class _Given:
    """A ready 8 x 8 grid walk: two halves (left, right), whatever the image."""

    def transition(self, image_rgb):
        from walkcut.runtime.sources.pixels import Transition

        P, _ = planted_walk([32, 32], seed=1)
        return Transition(P=P.astype(np.float32), grid_shape=(8, 8))


def test_segmenter_snap_follows_the_fine_segmentation():
    rng = np.random.default_rng(2)
    image = np.zeros((96, 128, 3), np.uint8)
    image[:, :70] = (200, 40, 40)  # the image's own edge sits off the grid's cell boundary (64)
    image[:, 70:] = (40, 40, 200)
    image = np.clip(image + rng.integers(0, 12, image.shape), 0, 255).astype(np.uint8)
    seg = Segmenter(_Given()).set_image(image)
    plain = seg.segment(threshold=0.5, upsample="joint-bilateral").labels
    snapped = seg.segment(threshold=0.5, upsample="snap").labels
    fine = seg._superpixels(image)
    assert all(np.unique(snapped[fine == f]).size == 1 for f in np.unique(fine))  # each fine segment one label
    assert snapped.max() <= plain.max()
    assert "snap" in METHODS


def test_cli_mirrors_match_the_runtime():
    from walkcut.cli import args

    assert args.AUTO_RULES == AUTO_RULES and args.UPSAMPLE_METHODS == METHODS
