"""Known-answer and invariance tests of walkcut.eval.metrics (hand-computed cases in comments)."""

import math
import os
from pathlib import Path

import numpy as np
import pytest

from walkcut.eval import metrics as M

# seg = [[0, 0],      gt = [[0, 1],
#        [1, 1]]            [0, 1]]
# Table [[1, 1], [1, 1]]. Of the 6 pixel pairs only the two diagonal ones are "different/different";
# the other four disagree -> RI = 2/6. H(seg) = H(gt) = 1 bit, I = 0 -> VoI = 2 bits. Each gt region
# (2 px) overlaps each segment in 1 px, union 3 -> covering = 1/3.
SEG_A = np.array([[0, 0], [1, 1]])
GT_A = np.array([[0, 1], [0, 1]])

# One segment against gt = [[0, 0], [0, 1]] (3 + 1 pixels):
# pairs inside the 3-pixel region agree (3), the 3 pairs across disagree -> RI = 1/2;
# VoI = H(gt) = -(3/4 log2 3/4 + 1/4 log2 1/4) = 0.811278...; covering = (3 * 3/4 + 1 * 1/4) / 4 = 0.625.
SEG_ONE = np.zeros((2, 2), dtype=int)
GT_B = np.array([[0, 0], [0, 1]])


def test_contingency_table_counts_and_ignore():
    t = M.contingency_table(SEG_A, GT_A)
    np.testing.assert_array_equal(t, [[1, 1], [1, 1]])
    gt = np.array([[0, 255], [1, 1]])
    t = M.contingency_table(SEG_A, gt, ignore_label=255)
    np.testing.assert_array_equal(t, [[1, 0], [0, 2]])  # seg 0 -> gt 0 once; seg 1 -> gt 1 twice
    with pytest.raises(ValueError, match="same shape"):
        M.contingency_table(SEG_A, np.zeros((3, 2), int))
    with pytest.raises(TypeError, match="integer"):
        M.contingency_table(SEG_A + 0.5, GT_A)


def test_hand_computed_2x2():
    t = M.contingency_table(SEG_A, GT_A)
    assert M.rand_index(t) == pytest.approx(1 / 3)
    assert M.variation_of_information(t) == pytest.approx(2.0)
    assert M.variation_of_information(t, base=math.e) == pytest.approx(2 * math.log(2))
    assert M.segmentation_covering(SEG_A, GT_A) == pytest.approx(1 / 3)


def test_all_one_segment():
    t = M.contingency_table(SEG_ONE, GT_B)
    assert M.rand_index(t) == pytest.approx(0.5)
    h = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert M.variation_of_information(t) == pytest.approx(h)
    assert M.segmentation_covering(SEG_ONE, GT_B) == pytest.approx(0.625)
    # The other direction: the one-region gt is covered by its best segment (IoU 3/4).
    assert M.segmentation_covering(GT_B, SEG_ONE) == pytest.approx(0.75)


def test_identical_maps_are_perfect():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(17, 13))
    t = M.contingency_table(a, a)
    assert M.rand_index(t) == 1.0
    assert M.variation_of_information(t) == pytest.approx(0.0, abs=1e-12)
    assert M.segmentation_covering(a, a) == pytest.approx(1.0)
    s = M.score_regions(a, [a, a])
    assert (s.covering, s.pri, s.voi) == (pytest.approx(1.0), 1.0, pytest.approx(0.0, abs=1e-12))


def test_label_permutation_and_offset_invariance():
    rng = np.random.default_rng(1)
    seg = rng.integers(0, 6, size=(20, 30))
    gt = rng.integers(1, 4, size=(20, 30))
    perm = rng.permutation(6) * 7 + 1000  # permuted and far from 0..5
    ref = M.score_regions(seg, [gt])
    got = M.score_regions(perm[seg], [gt])
    assert got.covering == pytest.approx(ref.covering)
    assert got.pri == pytest.approx(ref.pri)
    assert got.voi == pytest.approx(ref.voi)
    # RI and VoI are symmetric in their arguments.
    t1, t2 = M.contingency_table(seg, gt), M.contingency_table(gt, seg)
    assert M.rand_index(t1) == pytest.approx(M.rand_index(t2))
    assert M.variation_of_information(t1) == pytest.approx(M.variation_of_information(t2))


def test_rand_index_matches_pair_counting():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 3, size=30)
    b = rng.integers(0, 4, size=30)
    same_a = a[:, None] == a[None, :]
    same_b = b[:, None] == b[None, :]
    iu = np.triu_indices(30, 1)
    brute = np.mean((same_a == same_b)[iu])
    assert M.rand_index(M.contingency_table(a, b)) == pytest.approx(brute)


def test_score_regions_averages_over_annotators():
    # Against [GT_B, GT_B-identical-to-seg]: covering counts pool (2.5 + 4) / 8, PRI and VoI average.
    s = M.score_regions(SEG_ONE, [GT_B, np.zeros((2, 2), int)])
    assert s.covering_num == pytest.approx(2.5 + 4.0)
    assert s.covering_den == pytest.approx(8.0)
    assert s.covering == pytest.approx(6.5 / 8)
    assert s.pri == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(ValueError, match="at least one"):
        M.score_regions(SEG_ONE, [])


def test_ods_ois_aggregation_hand_computed():
    R = M.RegionScore
    # image A (den 4): covering 3/4 then 2/4; image B (den 8): 2/8 then 6/8.
    # ODS covering = max((3+2)/12, (2+6)/12) = 2/3; OIS = A@t0 + B@t1 = (3+6)/12 = 0.75.
    # PRI: A [0.8, 0.6], B [0.5, 0.9] -> ODS max(0.65, 0.75) = 0.75, OIS mean(0.8, 0.9) = 0.85.
    # VoI: A [1, 2], B [3, 1] -> ODS min(2.0, 1.5) = 1.5, OIS mean(1, 1) = 1.0.
    scores = [[R(3, 4, 0.8, 1.0), R(2, 4, 0.6, 2.0)],
              [R(2, 8, 0.5, 3.0), R(6, 8, 0.9, 1.0)]]
    s = M.summarize_region_sweep(scores)
    assert s.covering_ods == pytest.approx(2 / 3)
    assert s.covering_ois == pytest.approx(0.75)
    assert s.pri_ods == pytest.approx(0.75)
    assert s.pri_ois == pytest.approx(0.85)
    assert s.voi_ods == pytest.approx(1.5)
    assert s.voi_ois == pytest.approx(1.0)
    assert s.ods_index == {"covering": 1, "pri": 1, "voi": 1}
    np.testing.assert_array_equal(s.ois_index["covering"], [0, 1])
    with pytest.raises(ValueError, match="same"):
        M.summarize_region_sweep([[R(1, 1, 1, 0)], []])


def test_ois_ties_take_the_last_parameter():
    R = M.RegionScore
    s = M.summarize_region_sweep([[R(1, 2, 0.5, 1.0), R(1, 2, 0.5, 1.0)]])
    assert s.ois_index["covering"][0] == 1
    assert s.ois_index["voi"][0] == 1


# Semantic protocol.
# seg = [[0, 0, 1],   gt = [[0, 0, 1],
#        [2, 2, 1]]         [0, 1, 1]]
# Overlaps: seg0 -> class0: 2; seg1 -> class1: 2; seg2 -> class0: 1, class1: 1.
# Only classes 0 and 1 occur, so seg2 stays unmatched: TP = [2, 2, 0], FN = [1, 1, 0], FP = 0.
# IoU = [2/3, 2/3, nan] -> mIoU 2/3; accuracy 4/6.
SEM_SEG = np.array([[0, 0, 1], [2, 2, 1]])
SEM_GT = np.array([[0, 0, 1], [0, 1, 1]])


def test_semantic_hand_computed():
    assert M.hungarian_match(SEM_SEG, SEM_GT, num_classes=3) == {0: 0, 1: 1}
    c = M.semantic_counts(SEM_SEG, SEM_GT, num_classes=3)
    np.testing.assert_array_equal(c.tp, [2, 2, 0])
    np.testing.assert_array_equal(c.fn, [1, 1, 0])
    np.testing.assert_array_equal(c.fp, [0, 0, 0])
    assert c.miou == pytest.approx(2 / 3)
    assert c.pixel_accuracy == pytest.approx(4 / 6)


def test_semantic_ignore_and_false_positives():
    # gt ignores the left column; seg = one segment over everything else, gt = [1, 1 | 2, 2].
    seg = np.array([[5, 5, 5], [5, 5, 5]])
    gt = np.array([[255, 1, 1], [255, 2, 2]])
    # The segment matches class 1 (tie 2/2 broken by the solver); the other class' 2 pixels are
    # FP of the matched class and FN of their own.
    c = M.semantic_counts(seg, gt, num_classes=3, ignore_label=255)
    assert c.pixels == 4
    assert c.tp.sum() == 2 and c.fp.sum() == 2 and c.fn.sum() == 2
    assert c.miou == pytest.approx((2 / 4 + 0) / 2)
    with pytest.raises(ValueError, match="outside"):
        M.semantic_counts(seg, np.full((2, 3), 7), num_classes=3)


def test_semantic_accumulates_and_permutation_invariant():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 4, size=(10, 10))
    seg = gt.copy()
    seg[rng.random((10, 10)) < 0.2] = 9
    a = M.semantic_counts(seg, gt, num_classes=4)
    b = M.semantic_counts(rng.permutation(10)[seg] + 50, gt, num_classes=4)
    np.testing.assert_array_equal(a.tp, b.tp)
    total = M.SemanticCounts(4)
    total += a
    total += b
    assert total.pixels == 200
    assert total.miou == pytest.approx(a.miou)
    perfect = M.semantic_counts(gt + 3, gt, num_classes=4)
    assert perfect.miou == 1.0 and perfect.pixel_accuracy == 1.0
    with pytest.raises(ValueError, match="num_classes"):
        M.SemanticCounts(0)


DATA = Path(os.environ.get("WALKCUT_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.mark.data
@pytest.mark.skipif(not (DATA / "bsds500").is_dir(), reason="../shared/data/bsds500 is absent")
def test_human_consistency_near_published_figures():
    # Each annotation scored against the others (bench/human_consistency.py does all 100 images:
    # 0.728 / 0.867 / 1.161 bits); published human BSDS500 figures are about 0.72 / 0.88 / 1.17.
    from walkcut.eval.datasets import load_dataset

    num = den = 0.0
    pri, voi = [], []
    for s in load_dataset("bsds500", DATA / "bsds500", limit=15):
        for k in range(len(s.gt)):
            r = M.score_regions(s.gt[k], [g for j, g in enumerate(s.gt) if j != k])
            num, den = num + r.covering_num, den + r.covering_den
            pri.append(r.pri)
            voi.append(r.voi)
    assert 0.62 < num / den < 0.82
    assert 0.80 < np.mean(pri) < 0.94
    assert 0.8 < np.mean(voi) < 1.6  # in nats it would be ~0.8: the base matters
