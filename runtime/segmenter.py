"""``Segmenter``: set an image once, cut it many ways.

``set_image`` runs the expensive part once (the source: engine inference or the pixel graph) and
keeps the transition matrix; ``segment`` builds the cut hierarchy for a (mode, power) pair — cached,
so asking again with another threshold only re-prunes the tree — and upsamples the labels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np
from walkcut.runtime.cuts.hierarchy import CutResult, Hierarchy, cut_transition_matrix
from walkcut.runtime.sources.pixels import PixelSource, Transition, grid_cell_colors
from walkcut.runtime.upsample import upsample_labels
from walkcut.runtime import defaults as _d


def _shrink(image_rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``image_rgb`` area-averaged to at most ``max_side`` pixels on its longest side (or itself)."""
    h, w = image_rgb.shape[:2]
    if max(h, w) <= max_side:
        return image_rgb
    scale = max_side / max(h, w)
    return cv2.resize(image_rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Labels at the image's full resolution plus what produced them.

    ``timings`` holds seconds per stage: ``source`` (preprocess + engine or pixel graph; from
    ``set_image``), ``cuts`` and ``upsample``; with an engine source also its split of ``source``
    into ``preprocess`` and ``engine``.
    """

    labels: np.ndarray  # (H, W) int64, 0..K-1
    grid_labels: np.ndarray  # (R, C)
    cut: CutResult
    timings: dict = field(default_factory=dict)

    @property
    def n_segments(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.size else 0

    @property
    def hierarchy(self) -> Hierarchy:
        return self.cut.hierarchy


class Segmenter:
    """Segment images with a transition-matrix source and recursive Normalized Cuts.

    Parameters
    ----------
    source : object with ``transition(image_rgb) -> Transition``, default ``PixelSource()``
        Where the random walk comes from: the weight-free pixel graph or an attention engine.
    upsample : {"joint-bilateral", "nearest"}
        How grid labels become pixel labels.
    max_source_side : int, default 2048
        The source sees the image shrunk (area averaging) to at most this many pixels on its longest
        side: it needs only R x R cell colours or an S x S model input, and a 12000 x 12000 photo
        would otherwise cost gigabytes of float copies. Smaller images are passed unchanged.
    max_label_side : int, default 4096
        Boundary-aware upsampling runs at most at this size; larger images get those labels enlarged
        by nearest neighbour (boundaries within ``side / max_label_side`` pixels of the image edge),
        which bounds time and memory on huge images. Smaller images are unaffected.
    warm_start : bool, default False
        Start each image's cut from the previous image's: the stationary solve from its ``pi`` and
        the root eigen-solve from its root vector and (fast method, dense graphs) its root Ritz block
        (video; savings on consecutive CamVid frames in bench/RESULTS.md, "Cut engine v2"). Results
        then depend on the previous image, so it is off for independent images.
    """

    def __init__(self, source=None, *, upsample: str = "joint-bilateral", max_source_side: int = _d.MAX_SOURCE_SIDE,
                 max_label_side: int = _d.MAX_LABEL_SIDE, warm_start: bool = False) -> None:
        for name, value in (("max_source_side", max_source_side), ("max_label_side", max_label_side)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 64:
                raise ValueError(f"{name} must be an integer >= 64, got {value!r}")
        self.source = PixelSource() if source is None else source
        self.upsample = upsample
        self.max_source_side = int(max_source_side)
        self.max_label_side = int(max_label_side)
        self._image: np.ndarray | None = None
        self._transition: Transition | None = None
        self._cell_colors: np.ndarray | None = None
        self._cache: dict = {}
        self._source_seconds = 0.0
        self._source_timings: dict = {}
        self.warm_start = bool(warm_start)
        self._previous: Hierarchy | None = None

    def set_image(self, image_rgb: np.ndarray) -> Segmenter:
        """Run the source on an (H, W, 3) uint8 RGB image and keep its transition matrix."""
        if not isinstance(image_rgb, np.ndarray) or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {getattr(image_rgb, 'shape', type(image_rgb))}")
        if image_rgb.dtype != np.uint8:
            raise TypeError(f"expected a uint8 image, got {image_rgb.dtype}")
        t0 = time.perf_counter()
        small = _shrink(image_rgb, self.max_source_side)
        self._transition = self.source.transition(small)
        self._source_seconds = time.perf_counter() - t0
        # Sources that time their own stages (EngineSource: preprocess / engine) report them here.
        self._source_timings = dict(getattr(self.source, "last_timings", None) or {})
        self._image = image_rgb
        R, C = self._transition.grid_shape
        self._cell_colors = self._transition.cell_colors
        if self._cell_colors is None:
            self._cell_colors = grid_cell_colors(small, R) if R == C else None
        self._cache = {}
        return self

    @property
    def transition(self) -> Transition:
        if self._transition is None:
            raise RuntimeError("call set_image() before segment()")
        return self._transition

    def segment(self, *, mode: str = _d.MODE, power: int = _d.POWER, threshold=_d.THRESHOLD,
                **cut_options) -> Segmentation:
        """Cut the current image; repeated calls with the same mode/power/options reuse the tree."""
        tr = self.transition
        key = (mode, power, tuple(sorted(cut_options.items())))
        t0 = time.perf_counter()
        base = self._cache.get(key)
        if base is None:
            hint = self._previous if self.warm_start else None
            base = cut_transition_matrix(
                tr.P, mode=mode, power=power, threshold=threshold, stationary=tr.stationary, warm_start=hint,
                **cut_options,
            )
            self._cache[key] = base
            self._previous = base.hierarchy
        cut = base if base.rule == threshold else base.with_threshold(threshold)
        t1 = time.perf_counter()
        R, C = tr.grid_shape
        grid_labels = cut.labels.reshape(R, C)
        H, W = self._image.shape[:2]
        guide = _shrink(self._image, self.max_label_side)
        labels = upsample_labels(
            grid_labels, guide.shape[:2], image_rgb=guide, cell_colors=self._cell_colors, method=self.upsample
        )
        if guide is not self._image:
            labels = cv2.resize(labels.astype(np.int32), (W, H), interpolation=cv2.INTER_NEAREST).astype(np.int64)
        # Upsampling can drop a tiny segment: renumber to 0..K-1 keeping order (a lookup table, not
        # np.unique, whose sort needs several copies of a huge label map); usually none is dropped.
        present = np.bincount(labels.ravel(), minlength=int(grid_labels.max()) + 1) > 0
        if not present.all():
            labels = (np.cumsum(present) - 1)[labels]
        t2 = time.perf_counter()
        timings = {"source": self._source_seconds, **self._source_timings, "cuts": t1 - t0, "upsample": t2 - t1}
        return Segmentation(labels=labels, grid_labels=grid_labels, cut=cut, timings=timings)
