"""Score a segmenter on an evaluation set: region metrics (BSDS500) or the semantic protocol.

The segmenter is any callable ``segment(image_rgb) -> hierarchy_like`` where ``hierarchy_like`` has

* ``labels``: the (H, W) integer label map of its default setting (for walkcut: its stopping rule);
* ``labels_at(threshold) -> (H, W)`` integer labels at another parameter value (for walkcut: a
  constant NCut threshold, cut from the same hierarchy without a new eigen-solve).

Both maps are at the image's resolution. Region datasets are scored on the default labels (the
``covering``/``pri``/``voi`` numbers) and, when ``thresholds`` are given, over that sweep (the
``*_ods``/``*_ois`` numbers); semantic datasets report ``miou``/``pixel_accuracy`` of the default
labels plus, with ``thresholds``, the same numbers per threshold.

References
----------
.. [1] P. Arbelaez et al., "Contour Detection and Hierarchical Image Segmentation", TPAMI 2011.
.. [2] J. Tian et al., "Diffuse, Attend, and Segment", CVPR 2024; P. Couairon et al., "DiffCut",
   NeurIPS 2024 (the zero-shot semantic protocol).
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from walkcut.eval import metrics
from walkcut.eval.datasets import EvalDataset
from walkcut.runtime.draw import boundaries, label_colors
from walkcut.runtime.imageio import atomic_write_bytes

log = logging.getLogger(__name__)

__all__ = ["EvalReport", "HierarchyLike", "WalkcutHierarchy", "evaluate", "walkcut_segment_fn"]

#: Longest side of the thumbnails kept for the picture grid.
THUMB = 192


class HierarchyLike(Protocol):
    """What a segmenter returns for one image (see the module notes)."""

    labels: np.ndarray

    def labels_at(self, threshold: float) -> np.ndarray: ...


class WalkcutHierarchy:
    """:class:`HierarchyLike` view of a :class:`walkcut.runtime.segmenter.Segmenter` holding one image.

    ``labels`` is the cut at the configured stopping rule; ``labels_at(t)`` re-prunes the same cut tree
    at a constant NCut threshold ``t`` (no new eigen-solve). Valid until the segmenter's next
    ``set_image``: :func:`evaluate` reads it before moving on.
    """

    def __init__(self, segmenter, cut_options: dict):
        self._segmenter = segmenter
        self._options = dict(cut_options)
        self._labels = None
        self.timings: dict = {}

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            seg = self._segmenter.segment(**self._options)
            self._labels, self.timings = seg.labels, dict(seg.timings)
        return self._labels

    def labels_at(self, threshold: float) -> np.ndarray:
        return self._segmenter.segment(**{**self._options, "threshold": threshold}).labels


def walkcut_segment_fn(source=None, **cut_options) -> Callable[[np.ndarray], WalkcutHierarchy]:
    """``segment(image_rgb) -> WalkcutHierarchy`` over a walkcut ``Segmenter``.

    Parameters
    ----------
    source : source spec or source, optional
        A spec (:func:`walkcut.runtime.sources.source_spec`: ``PixelSource``, ``EngineSpec``),
        opened here, or an opened transition-matrix source (default: the weight-free
        ``PixelSource()``).
    **cut_options
        ``mode``, ``power``, ``threshold``, ``max_segments``, ``min_size``, ``upsample``, ... as
        ``Segmenter.segment`` takes them; those left out take the source's own settings (a
        model's ``cut_defaults``), else the package defaults.
    """
    # the runtime is only needed for walkcut itself, not to score other segmenters
    from walkcut.runtime.segmenter import Segmenter
    from walkcut.runtime.sources.spec import SourceSpec

    segmenter = Segmenter(source.open() if isinstance(source, SourceSpec) else source)

    def segment(image_rgb: np.ndarray) -> WalkcutHierarchy:
        segmenter.set_image(image_rgb)
        return WalkcutHierarchy(segmenter, cut_options)

    return segment


@dataclasses.dataclass
class EvalReport:
    """The outcome of :func:`evaluate`.

    Attributes
    ----------
    dataset, protocol : str
    summary : dict
        Plain-named dataset metrics (``covering``, ``covering_ods``, ... or ``miou``,
        ``pixel_accuracy``), plus ``images`` and ``seconds_per_image``.
    per_image : list of dict
        One dict per image: ``id`` and its metrics.
    extra : dict
        Curves and per-class values (``thresholds``, ``curve``, ``class_iou``, ...).
    best, worst : list
        ``(score, id, thumbnail row)`` of the best and worst images, for :meth:`write_grid`.
    """

    dataset: str
    protocol: str
    summary: dict
    per_image: list
    extra: dict
    best: list = dataclasses.field(default_factory=list, repr=False)
    worst: list = dataclasses.field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "protocol": self.protocol, "summary": self.summary,
                **_jsonable(self.extra), "per_image": self.per_image}

    def table(self) -> str:
        """The summary as an aligned two-column text table."""
        rows = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in self.summary.items()]
        w = max(len(k) for k, _ in rows)
        head = f"{self.dataset} ({self.protocol}, {self.summary.get('images', 0)} images)"
        return "\n".join([head, "-" * len(head)] + [f"{k:<{w}}  {v}" for k, v in rows])

    def write_json(self, path) -> Path:
        data = json.dumps(self.to_dict(), indent=2, allow_nan=False, default=_json_default)
        return atomic_write_bytes(path, (data + "\n").encode(), make_parents=True)

    def write_grid(self, path) -> Path:
        """A PNG: best images on top, a grey bar, worst below; columns image | ground truth | prediction."""
        best = sorted(self.best, key=lambda x: -x[0])
        shown = {sid for _, sid, _ in best}
        worst = [w for w in sorted(self.worst, key=lambda x: -x[0]) if w[1] not in shown]
        if not best:
            raise RuntimeError("no images were evaluated: nothing to draw")
        width = max(r.shape[1] for _, _, r in best + worst)

        def pad(r):
            return cv2.copyMakeBorder(r, 0, 4, 0, width - r.shape[1], cv2.BORDER_CONSTANT, value=(255, 255, 255))

        rows = [pad(r) for _, _, r in best]
        if worst:
            rows.append(np.full((12, width, 3), 128, dtype=np.uint8))
            rows += [pad(r) for _, _, r in worst]
        ok, buf = cv2.imencode(".png", cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"OpenCV could not encode the grid for {path}")
        return atomic_write_bytes(path, buf.tobytes(), make_parents=True)


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def _jsonable(x):
    """Replace NaN by None so the JSON stays standard."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (float, np.floating)) and not math.isfinite(float(x)):
        return None
    return x


def _thumb_row(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, ignore_label, caption: str) -> np.ndarray:
    """image | gt colours | prediction colours with boundaries, each scaled to THUMB; caption on the image."""
    h, w = image.shape[:2]
    s = THUMB / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    gt_rgb = label_colors(gt)
    if ignore_label is not None:
        gt_rgb[gt == ignore_label] = 0
    pred_rgb = (0.5 * label_colors(pred) + 0.5 * image).astype(np.uint8)
    pred_rgb[boundaries(pred)] = (255, 255, 255)
    tiles = [cv2.resize(image, size, interpolation=cv2.INTER_AREA),
             cv2.resize(gt_rgb, size, interpolation=cv2.INTER_NEAREST),
             cv2.resize(pred_rgb, size, interpolation=cv2.INTER_NEAREST)]
    for color, thick in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(tiles[0], caption, (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, thick, cv2.LINE_AA)
    gap = np.full((size[1], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1)


class _Extremes:
    """Keep the ``k`` best and ``k`` worst items by score (thumbnails are made lazily)."""

    def __init__(self, k: int):
        self.k = k
        self.best: list = []   # min-heap of (score, n, id, row)
        self.worst: list = []  # min-heap of (-score, n, id, row)
        self.n = 0

    def offer(self, score: float, sid: str, make_row: Callable[[], np.ndarray]) -> None:
        if self.k == 0 or not math.isfinite(score):
            return
        self.n += 1
        want_best = len(self.best) < self.k or score > self.best[0][0]
        want_worst = len(self.worst) < self.k or -score > self.worst[0][0]
        if not (want_best or want_worst):
            return
        row = make_row()
        if want_best:
            item = (score, self.n, sid, row)
            (heapq.heappush if len(self.best) < self.k else heapq.heapreplace)(self.best, item)
        if want_worst:
            item = (-score, self.n, sid, row)
            (heapq.heappush if len(self.worst) < self.k else heapq.heapreplace)(self.worst, item)

    def result(self):
        best = [(s, sid, r) for s, _, sid, r in self.best]
        worst = [(-s, sid, r) for s, _, sid, r in self.worst]
        return best, worst


def _check_labels(lab, shape, what: str) -> np.ndarray:
    a = np.asarray(lab)
    if a.shape != tuple(shape):
        raise ValueError(f"the segmenter's {what} has shape {a.shape}; the image is {tuple(shape)}")
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"the segmenter's {what} must be integer labels, got dtype {a.dtype}")
    return a


def evaluate(dataset: EvalDataset, segment: Callable[[np.ndarray], HierarchyLike], *,
             thresholds: Sequence[float] | None = None, progress: bool = True,
             extremes: int = 4) -> EvalReport:
    """Run ``segment`` on every image of ``dataset`` and score it.

    Parameters
    ----------
    dataset : EvalDataset
        From :func:`walkcut.eval.datasets.load_dataset`.
    segment : callable
        ``segment(image_rgb) -> hierarchy_like`` (module notes).
    thresholds : sequence of float or None, keyword-only
        Parameter sweep passed to ``labels_at``. Region datasets: ODS/OIS over it (without it, the
        sweep is the default labels alone, so ODS = OIS = the default). Semantic datasets: mIoU and
        accuracy per threshold, in ``extra["by_threshold"]``.
    progress : bool, keyword-only
        Show a tqdm progress bar (on stderr).
    extremes : int, keyword-only
        How many best and worst images to keep for the picture grid.

    Returns
    -------
    EvalReport
    """
    if not isinstance(dataset, EvalDataset):
        raise TypeError(f"dataset must be an EvalDataset (see load_dataset), got {type(dataset).__name__}")
    if not callable(segment):
        raise TypeError(f"segment must be callable, got {type(segment).__name__}")
    if thresholds is not None:
        thresholds = [float(t) for t in thresholds]
        if not thresholds or not all(math.isfinite(t) for t in thresholds):
            raise ValueError(f"thresholds must be a non-empty list of finite numbers, got {thresholds!r}")
    if not (isinstance(extremes, int) and extremes >= 0):
        raise ValueError(f"extremes must be an int >= 0, got {extremes!r}")
    if dataset.protocol not in ("regions", "semantic"):
        raise ValueError(f"unknown protocol {dataset.protocol!r} of dataset {dataset.name!r}")

    it = iter(dataset)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=len(dataset), desc=f"eval {dataset.name}", unit="img", leave=False)
    keep = _Extremes(extremes)
    run = _regions if dataset.protocol == "regions" else _semantic
    return run(dataset, it, segment, thresholds, keep)


def _segment_timed(segment, image):
    """Segment and read the default labels (a lazy hierarchy computes them there)."""
    t0 = time.perf_counter()
    h = segment(image)
    lab = h.labels
    return h, lab, time.perf_counter() - t0


def _regions(dataset, samples, segment, thresholds, keep) -> EvalReport:
    default_scores, sweep_scores, per_image, seconds = [], [], [], 0.0
    for s in samples:
        h, lab, dt = _segment_timed(segment, s.image)
        seconds += dt
        shape = s.image.shape[:2]
        lab = _check_labels(lab, shape, "labels")
        d = metrics.score_regions(lab, s.gt)
        default_scores.append(d)
        if thresholds is None:
            sweep_scores.append([d])
        else:
            sweep_scores.append([metrics.score_regions(_check_labels(h.labels_at(t), shape, f"labels_at({t})"),
                                                       s.gt) for t in thresholds])
        per_image.append({"id": s.id, "segments": int(np.unique(lab).size), "covering": d.covering,
                          "pri": d.pri, "voi": d.voi, "seconds": dt})
        keep.offer(d.covering, s.id, lambda s=s, lab=lab, d=d: _thumb_row(
            s.image, s.gt[0], lab, None, f"{s.id} cov {d.covering:.2f}"))
    if not per_image:
        raise ValueError(f"dataset {dataset.name!r} has no images")
    sweep = metrics.summarize_region_sweep(sweep_scores)
    num = sum(r.covering_num for r in default_scores)
    den = sum(r.covering_den for r in default_scores)
    summary = {
        "images": len(per_image),
        "covering": num / den,
        "pri": float(np.mean([r.pri for r in default_scores])),
        "voi": float(np.mean([r.voi for r in default_scores])),
        **sweep.as_dict(),
        "segments_mean": float(np.mean([p["segments"] for p in per_image])),
        "seconds_per_image": seconds / len(per_image),
    }
    extra = {"thresholds": thresholds, "curve": {k: v.tolist() for k, v in sweep.curve.items()}}
    if thresholds is not None:
        extra["ods_threshold"] = {k: thresholds[i] for k, i in sweep.ods_index.items()}
        for p, ci, pi, vi, sc in zip(per_image, sweep.ois_index["covering"], sweep.ois_index["pri"],
                                     sweep.ois_index["voi"], sweep_scores):
            p["covering_ois"] = sc[ci].covering
            p["pri_ois"] = sc[pi].pri
            p["voi_ois"] = sc[vi].voi
            p["ois_threshold"] = thresholds[ci]
    best, worst = keep.result()
    return EvalReport(dataset.name, "regions", summary, per_image, extra, best, worst)


def _semantic(dataset, samples, segment, thresholds, keep) -> EvalReport:
    nc, ignore = dataset.num_classes, dataset.ignore_label
    total = metrics.SemanticCounts(nc)
    by_t = [metrics.SemanticCounts(nc) for _ in thresholds or ()]
    per_image, seconds = [], 0.0
    for s in samples:
        h, lab, dt = _segment_timed(segment, s.image)
        seconds += dt
        shape = s.image.shape[:2]
        lab = _check_labels(lab, shape, "labels")
        c = metrics.semantic_counts(lab, s.gt, num_classes=nc, ignore_label=ignore)
        total += c
        for t, acc in zip(thresholds or (), by_t):
            acc += metrics.semantic_counts(_check_labels(h.labels_at(t), shape, f"labels_at({t})"), s.gt,
                                           num_classes=nc, ignore_label=ignore)
        per_image.append({"id": s.id, "segments": int(np.unique(lab).size), "miou": c.miou,
                          "pixel_accuracy": c.pixel_accuracy, "seconds": dt})
        keep.offer(c.miou, s.id, lambda s=s, lab=lab, c=c: _thumb_row(
            s.image, s.gt, lab, ignore, f"{s.id} mIoU {c.miou:.2f}"))
    if not per_image:
        raise ValueError(f"dataset {dataset.name!r} has no images")
    summary = {
        "images": len(per_image),
        "miou": total.miou,
        "pixel_accuracy": total.pixel_accuracy,
        "segments_mean": float(np.mean([p["segments"] for p in per_image])),
        "seconds_per_image": seconds / len(per_image),
    }
    extra = {"class_names": list(dataset.class_names),
             "class_iou": dict(zip(dataset.class_names, total.iou().tolist())) if dataset.class_names
             else total.iou().tolist()}
    if thresholds is not None:
        extra["by_threshold"] = [{"threshold": t, "miou": a.miou, "pixel_accuracy": a.pixel_accuracy}
                                 for t, a in zip(thresholds, by_t)]
        best = max(extra["by_threshold"], key=lambda r: r["miou"])
        summary["miou_best_threshold"] = best["miou"]
        summary["best_threshold"] = best["threshold"]
    best, worst = keep.result()
    return EvalReport(dataset.name, "semantic", summary, per_image, extra, best, worst)
