"""Segmentation quality metrics: BSDS region metrics and the unsupervised semantic protocol.

Everything here works on label maps (integer arrays of the same shape) through their contingency
table, so one image costs a couple of ``np.bincount`` calls however many segments it has. numpy and
scipy only.

Two families:

* **Region metrics** (BSDS500): Segmentation Covering, Probabilistic Rand Index (PRI) and Variation
  of Information (VoI), scored against *all* human annotations of an image and aggregated over a
  parameter sweep into ODS (one parameter for the whole dataset) and OIS (best parameter per image).
* **Semantic protocol** (CamVid, COCO-Stuff-27, Cityscapes-27): per-image Hungarian matching of
  predicted segments to ground-truth classes, TP/FP/FN summed over the dataset, mIoU and pixel
  accuracy.

How the BSDS benchmark aggregates (our reading of its evaluation code, reproduced here)
--------------------------------------------------------------------------------------
For one image with annotations ``G_1..G_m`` and a segmentation ``S`` at parameter ``t``:

* Covering: every region ``R`` of every annotation gets its best overlap
  ``max_{R' in S} |R & R'| / |R | R'|``. The image keeps two counts, ``num(t) = sum over all
  annotations and regions of |R| * best overlap`` and ``den(t) = sum of |R|`` (``= m * N`` pixels).
  ``num/den`` is the mean over annotators of the covering of that annotation by ``S``.
* PRI: the mean over annotators of the Rand index of ``(S, G_k)``; this equals the probabilistic
  Rand index of Unnikrishnan et al., which is linear in the per-pair label agreement.
* VoI: the mean over annotators of ``H(S) + H(G_k) - 2 I(S, G_k)``, in bits (base-2 logarithms, as
  in the benchmark code).
* Dataset, Covering: ODS is ``max_t sum_i num_i(t) / sum_i den_i(t)`` (pixel-pooled, so an image
  with more annotators weighs more). OIS picks, per image, the parameter with the best
  ``num_i/den_i`` (the last one on ties) and pools the counts at those parameters:
  ``sum_i num_i(t_i) / sum_i den_i(t_i)``.
* Dataset, PRI and VoI: ODS is the best over ``t`` of the plain mean over images (max for PRI, min for
  VoI); OIS is the mean over images of each image's best value.

Label ``0`` has no special meaning here (the benchmark drops region 0 because its maps start at 1);
pass ``ignore_label`` to exclude pixels whose ground truth carries a given value.

References
----------
.. [1] P. Arbelaez, M. Maire, C. Fowlkes, J. Malik, "Contour Detection and Hierarchical Image
   Segmentation", IEEE TPAMI 33(5), 2011 (Covering, PRI, VoI; ODS/OIS; BSDS500 benchmark code).
.. [2] R. Unnikrishnan, C. Pantofaru, M. Hebert, "Toward Objective Evaluation of Image Segmentation
   Algorithms", IEEE TPAMI 29(6), 2007 (Probabilistic Rand Index).
.. [3] M. Meila, "Comparing clusterings: an information based distance", J. Multivariate Analysis
   98(5), 2007 (Variation of Information).
.. [4] J. Tian et al., "Diffuse, Attend, and Segment" (DiffSeg), CVPR 2024; P. Couairon et al.,
   "DiffCut", NeurIPS 2024 (per-image Hungarian matching, mIoU and pixel accuracy).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from walkcut.runtime.labels import count_pairs

__all__ = [
    "RegionScore",
    "RegionSweepSummary",
    "SemanticCounts",
    "adjusted_rand_index",
    "contingency_table",
    "covering_counts",
    "hungarian_match",
    "rand_index",
    "score_regions",
    "segmentation_covering",
    "semantic_counts",
    "summarize_region_sweep",
    "variation_of_information",
]


def _as_label_map(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 0:
        raise ValueError(f"{name} must be a label map (an array), got a scalar {a!r}")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.bool_)):
        if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integer labels, got dtype {a.dtype}")
    return a


def _compact(a: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel to 0..k-1 (k = number of distinct labels); cheap when labels are small non-negative."""
    flat = a.ravel()
    if flat.size == 0:
        return flat.astype(np.int64), 0
    lo, hi = int(flat.min()), int(flat.max())
    if lo >= 0 and hi < 4 * flat.size + 1024:
        present = np.bincount(flat, minlength=hi + 1) > 0
        lut = np.cumsum(present) - 1
        return lut[flat].astype(np.int64), int(present.sum())
    uniq, inv = np.unique(flat, return_inverse=True)
    return inv.astype(np.int64).ravel(), int(uniq.size)


def contingency_table(seg, gt, *, ignore_label: int | None = None) -> np.ndarray:
    """Pixel counts of every (segment, ground-truth label) pair.

    Parameters
    ----------
    seg, gt : array_like of int, same shape
        Two label maps; label values are arbitrary integers.
    ignore_label : int or None, keyword-only
        Pixels where ``gt == ignore_label`` are left out.

    Returns
    -------
    table : ndarray of int64, shape (k_seg, k_gt)
        ``table[i, j]`` = number of pixels with the i-th distinct label of ``seg`` and the j-th
        distinct label of ``gt`` (labels in increasing order; labels absent after ignoring are dropped).
    """
    s = _as_label_map(seg, "seg")
    g = _as_label_map(gt, "gt")
    if s.shape != g.shape:
        raise ValueError(f"seg and gt must have the same shape, got {s.shape} and {g.shape}")
    if ignore_label is not None:
        keep = g != ignore_label
        s, g = s[keep], g[keep]
    si, ks = _compact(s)
    gi, kg = _compact(g)
    if ks == 0:
        return np.zeros((0, 0), dtype=np.int64)
    return count_pairs(si, gi, ks, kg)


def _check_table(table) -> np.ndarray:
    t = np.asarray(table)
    if t.ndim != 2:
        raise ValueError(f"a contingency table must be 2-D, got shape {t.shape}")
    if t.size and t.min() < 0:
        raise ValueError("a contingency table holds counts; it has a negative entry")
    return t.astype(np.float64)


def rand_index(table) -> float:
    """Rand index of two label maps from their contingency table.

    ``RI = 1 - (sum_i a_i^2 / 2 + sum_j b_j^2 / 2 - sum_ij n_ij^2) / C(N, 2)`` with row sums ``a``,
    column sums ``b`` and ``N`` pixels: the fraction of pixel pairs on which the two maps agree
    (same/same or different/different). Exact, not sampled. 1.0 for a single pixel.

    References
    ----------
    .. [1] W. M. Rand, "Objective criteria for the evaluation of clustering methods", JASA 66, 1971.
    """
    n = _check_table(table)
    total = n.sum()
    if total < 2:
        return 1.0
    a = n.sum(axis=1)
    b = n.sum(axis=0)
    pairs = total * (total - 1) / 2.0
    disagree = (a @ a) / 2.0 + (b @ b) / 2.0 - (n * n).sum()
    return float(1.0 - disagree / pairs)


def adjusted_rand_index(table) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985) of two labelings from their contingency table.

    ``ARI = (sum_ij C(n_ij, 2) - E) / ((sum_i C(a_i, 2) + sum_j C(b_j, 2)) / 2 - E)`` with
    ``E = sum_i C(a_i, 2) sum_j C(b_j, 2) / C(N, 2)``: 1 for identical partitions, about 0 for
    independent ones. 1.0 when both labelings are a single segment (nothing to disagree on).

    References
    ----------
    .. [1] L. Hubert, P. Arabie, "Comparing partitions", J. Classification 2, 1985.
    """
    n = _check_table(table)
    total = n.sum()
    if total < 2:
        return 1.0
    comb = (n * (n - 1) / 2.0).sum()
    a = n.sum(axis=1)
    b = n.sum(axis=0)
    ca = (a * (a - 1) / 2.0).sum()
    cb = (b * (b - 1) / 2.0).sum()
    expected = ca * cb / (total * (total - 1) / 2.0)
    top = 0.5 * (ca + cb) - expected
    if top == 0:
        return 1.0
    return float((comb - expected) / top)


def variation_of_information(table, *, base: float = 2.0) -> float:
    """Variation of Information ``H(A) + H(B) - 2 I(A; B)`` from a contingency table.

    Parameters
    ----------
    table : array_like, shape (k_a, k_b)
        Pixel counts.
    base : float, keyword-only
        Logarithm base; 2 (bits) as in the BSDS benchmark code. Use ``np.e`` for nats.

    References
    ----------
    .. [1] M. Meila, "Comparing clusterings: an information based distance", JMVA 98(5), 2007.
    """
    if not (isinstance(base, (int, float)) and base > 1):
        raise ValueError(f"base must be a number > 1, got {base!r}")
    n = _check_table(table)
    total = n.sum()
    if total <= 0:
        return 0.0
    p = n / total
    pa = p.sum(axis=1)
    pb = p.sum(axis=0)
    nz = p > 0
    # VI = -sum p log(p/pa) - sum p log(p/pb) = H(A|B) + H(B|A)
    outer_a = np.broadcast_to(pa[:, None], p.shape)[nz]
    outer_b = np.broadcast_to(pb[None, :], p.shape)[nz]
    pn = p[nz]
    vi = -(pn * (np.log(pn / outer_a) + np.log(pn / outer_b))).sum() / np.log(base)
    return float(max(vi, 0.0))


def covering_counts(table) -> tuple[float, float]:
    """Covering of the *columns* (ground truth) by the *rows* (segments), as two counts.

    Returns ``(num, den)`` with ``num = sum_j |G_j| max_i IoU(S_i, G_j)`` and ``den = sum_j |G_j|``;
    the covering is ``num / den``. Kept as counts because the BSDS benchmark pools them over
    annotators and images before dividing.
    """
    n = _check_table(table)
    if n.size == 0:
        return 0.0, 0.0
    a = n.sum(axis=1)  # (k_seg,) segment sizes
    b = n.sum(axis=0)  # (k_gt,) region sizes
    union = a[:, None] + b[None, :] - n
    iou = np.divide(n, union, out=np.zeros_like(n), where=union > 0)
    best = iou.max(axis=0)  # (k_gt,)
    return float((b * best).sum()), float(b.sum())


def segmentation_covering(seg, gt, *, ignore_label: int | None = None) -> float:
    """Segmentation Covering of ``gt`` by ``seg`` (one annotation): ``num / den`` of :func:`covering_counts`.

    References
    ----------
    .. [1] Arbelaez et al., TPAMI 2011, eq. (13).
    """
    num, den = covering_counts(contingency_table(seg, gt, ignore_label=ignore_label))
    return num / den if den > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class RegionScore:
    """Region metrics of one segmentation of one image against all its annotations.

    ``covering_num / covering_den`` is the covering (see the module notes); ``pri`` and ``voi`` are
    already averaged over annotators.
    """

    covering_num: float
    covering_den: float
    pri: float
    voi: float

    @property
    def covering(self) -> float:
        return self.covering_num / self.covering_den if self.covering_den > 0 else 0.0


def score_regions(seg, gts: Sequence, *, ignore_label: int | None = None) -> RegionScore:
    """Score one segmentation against every annotation of its image, aggregated as BSDS does.

    Parameters
    ----------
    seg : array_like of int, shape (H, W)
        The segmentation.
    gts : sequence of array_like of int, each (H, W)
        The human annotations (one or more).
    ignore_label : int or None, keyword-only
        Ground-truth value to leave out (``None``: every pixel counts, as in BSDS500).

    Returns
    -------
    RegionScore
    """
    if isinstance(gts, np.ndarray) and gts.ndim == 2:
        gts = [gts]
    gts = list(gts)
    if not gts:
        raise ValueError("gts must hold at least one annotation, got none")
    num = den = pri = voi = 0.0
    for g in gts:
        table = contingency_table(seg, g, ignore_label=ignore_label)
        c_num, c_den = covering_counts(table)
        num += c_num
        den += c_den
        pri += rand_index(table)
        voi += variation_of_information(table)
    m = len(gts)
    return RegionScore(covering_num=num, covering_den=den, pri=pri / m, voi=voi / m)


@dataclasses.dataclass(frozen=True)
class RegionSweepSummary:
    """ODS / OIS region metrics of a dataset scored over a parameter sweep.

    Attributes
    ----------
    covering_ods, covering_ois, pri_ods, pri_ois, voi_ods, voi_ois : float
    ods_index : dict
        Index into the sweep of the ODS parameter, per metric (``covering``, ``pri``, ``voi``).
    ois_index : dict
        Per metric, an int array (n_images,): the parameter index each image chose.
    curve : dict
        Per metric, the dataset value at every parameter (T,).
    """

    covering_ods: float
    covering_ois: float
    pri_ods: float
    pri_ois: float
    voi_ods: float
    voi_ois: float
    ods_index: dict
    ois_index: dict
    curve: dict

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in
                ("covering_ods", "covering_ois", "pri_ods", "pri_ois", "voi_ods", "voi_ois")}


def _last_arg(values: np.ndarray, best) -> np.ndarray:
    """Index of the last occurrence of ``best`` along axis 1 (the benchmark's ``ff(end)``)."""
    hit = values == best[:, None]
    return values.shape[1] - 1 - np.argmax(hit[:, ::-1], axis=1)


def summarize_region_sweep(scores: Sequence[Sequence[RegionScore]]) -> RegionSweepSummary:
    """Aggregate per-image, per-parameter region scores into ODS and OIS.

    Parameters
    ----------
    scores : sequence (n_images) of sequences (n_params) of RegionScore
        ``scores[i][t]``: image ``i`` segmented at the ``t``-th parameter; the same parameter list for
        every image.

    Returns
    -------
    RegionSweepSummary

    Notes
    -----
    Covering ODS pools the counts over images before dividing; covering OIS pools them at each
    image's own best parameter; PRI/VoI ODS and OIS are plain means over images (module notes).
    """
    if len(scores) == 0:
        raise ValueError("scores is empty: nothing to summarise")
    n_params = {len(s) for s in scores}
    if len(n_params) != 1 or 0 in n_params:
        raise ValueError(f"every image needs the same, non-zero number of parameters, got {sorted(n_params)}")
    num = np.array([[r.covering_num for r in s] for s in scores], dtype=np.float64)  # (n, T)
    den = np.array([[r.covering_den for r in s] for s in scores], dtype=np.float64)
    pri = np.array([[r.pri for r in s] for s in scores], dtype=np.float64)
    voi = np.array([[r.voi for r in s] for s in scores], dtype=np.float64)

    cov_curve = num.sum(0) / np.maximum(den.sum(0), 1e-300)
    pri_curve = pri.mean(0)
    voi_curve = voi.mean(0)
    cov_img = num / np.maximum(den, 1e-300)
    rows = np.arange(num.shape[0])
    cov_pick = _last_arg(cov_img, cov_img.max(1))
    pri_pick = _last_arg(pri, pri.max(1))
    voi_pick = _last_arg(voi, voi.min(1))
    cov_ois = num[rows, cov_pick].sum() / max(den[rows, cov_pick].sum(), 1e-300)
    return RegionSweepSummary(
        covering_ods=float(cov_curve.max()),
        covering_ois=float(cov_ois),
        pri_ods=float(pri_curve.max()),
        pri_ois=float(pri[rows, pri_pick].mean()),
        voi_ods=float(voi_curve.min()),
        voi_ois=float(voi[rows, voi_pick].mean()),
        ods_index={"covering": int(np.argmax(cov_curve)), "pri": int(np.argmax(pri_curve)),
                   "voi": int(np.argmin(voi_curve))},
        ois_index={"covering": cov_pick, "pri": pri_pick, "voi": voi_pick},
        curve={"covering": cov_curve, "pri": pri_curve, "voi": voi_curve},
    )


# --------------------------------------------------------------------------------------------------
# Semantic protocol
# --------------------------------------------------------------------------------------------------


def hungarian_match(seg, gt, *, num_classes: int, ignore_label: int | None = None) -> dict[int, int]:
    """Match predicted segments one-to-one to ground-truth classes, maximising the total overlap.

    Only classes present in this image's (non-ignored) ground truth take part; with more segments
    than classes, the extra segments stay unmatched (and count as wrong), with fewer, some classes
    get no segment.

    Returns
    -------
    dict
        ``{segment label: class id}`` for the matched segments.
    """
    s = _as_label_map(seg, "seg")
    g = _as_label_map(gt, "gt")
    if s.shape != g.shape:
        raise ValueError(f"seg and gt must have the same shape, got {s.shape} and {g.shape}")
    keep = np.ones(g.shape, dtype=bool) if ignore_label is None else g != ignore_label
    sv, gv = s[keep].ravel(), g[keep].ravel()
    if sv.size == 0:
        return {}
    if gv.min() < 0 or gv.max() >= num_classes:
        bad = gv[(gv < 0) | (gv >= num_classes)][0]
        raise ValueError(f"ground-truth label {int(bad)} is outside 0..{num_classes - 1} and is not the "
                         f"ignore label {ignore_label!r}")
    seg_ids, si = np.unique(sv, return_inverse=True)
    cls_ids, ci = np.unique(gv, return_inverse=True)
    table = np.bincount(si.ravel() * cls_ids.size + ci.ravel(),
                        minlength=seg_ids.size * cls_ids.size).reshape(seg_ids.size, cls_ids.size)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return {int(seg_ids[r]): int(cls_ids[c]) for r, c in zip(rows, cols)}


@dataclasses.dataclass
class SemanticCounts:
    """Per-class TP / FP / FN summed over a dataset (mutable accumulator).

    Attributes
    ----------
    tp, fp, fn : ndarray of int64, shape (num_classes,)
    pixels : int
        Evaluated (non-ignored) pixels.
    """

    num_classes: int
    tp: np.ndarray = None
    fp: np.ndarray = None
    fn: np.ndarray = None
    pixels: int = 0

    def __post_init__(self):
        if not (isinstance(self.num_classes, (int, np.integer)) and self.num_classes > 0):
            raise ValueError(f"num_classes must be a positive int, got {self.num_classes!r}")
        for name in ("tp", "fp", "fn"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.num_classes, dtype=np.int64))

    def __iadd__(self, other: SemanticCounts) -> SemanticCounts:  # noqa: PYI034 (py3.10: no Self)
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot add counts over {other.num_classes} classes to {self.num_classes}")
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.pixels += other.pixels
        return self

    def iou(self) -> np.ndarray:
        """Per-class IoU (num_classes,), NaN for classes never seen nor predicted."""
        union = (self.tp + self.fp + self.fn).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, self.tp / union, np.nan)

    @property
    def miou(self) -> float:
        """Mean IoU over the classes that occur (in ground truth or prediction)."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else 0.0

    @property
    def pixel_accuracy(self) -> float:
        """Correct pixels over evaluated pixels (unmatched segments are wrong)."""
        return float(self.tp.sum() / self.pixels) if self.pixels else 0.0


def semantic_counts(seg, gt, *, num_classes: int, ignore_label: int | None = None) -> SemanticCounts:
    """TP/FP/FN of one image after :func:`hungarian_match`.

    Matched segments take their class; pixels of unmatched segments predict no class, so they are a
    false negative of their true class and a false positive of none.
    """
    mapping = hungarian_match(seg, gt, num_classes=num_classes, ignore_label=ignore_label)
    s = np.asarray(seg)
    g = np.asarray(gt)
    keep = np.ones(g.shape, dtype=bool) if ignore_label is None else g != ignore_label
    sv, gv = s[keep].ravel().astype(np.int64), g[keep].ravel().astype(np.int64)
    out = SemanticCounts(num_classes)
    out.pixels = int(sv.size)
    if sv.size == 0:
        return out
    if mapping:
        keys = np.fromiter(mapping.keys(), dtype=np.int64)
        vals = np.fromiter(mapping.values(), dtype=np.int64)
        order = np.argsort(keys)
        keys, vals = keys[order], vals[order]
        pos = np.clip(np.searchsorted(keys, sv), 0, keys.size - 1)
        pred = np.where(keys[pos] == sv, vals[pos], -1)
    else:
        pred = np.full(sv.shape, -1, dtype=np.int64)
    correct = pred == gv
    out.tp = np.bincount(gv[correct], minlength=num_classes).astype(np.int64)
    out.fn = np.bincount(gv[~correct], minlength=num_classes).astype(np.int64)
    wrong_pred = pred[(~correct) & (pred >= 0)]
    out.fp = np.bincount(wrong_pred, minlength=num_classes).astype(np.int64)
    return out
