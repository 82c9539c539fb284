"""``Segmenter``: set an image once, cut it many ways.

``set_image`` runs the expensive part once (the source: engine inference or the pixel graph) and
keeps the transition matrix; ``segment`` builds the cut hierarchy for a (mode, power) pair — cached,
so asking again with another threshold only re-prunes the tree — and upsamples the labels.

Cut settings left out (None) come from the source when it carries its own (an exported model's
contract ``cut_defaults``: mode, power, threshold, min_size, max_segments, upsample), else from the
package defaults (:data:`PACKAGE_CUT_DEFAULTS`). :func:`resolve_cut_settings` applies that order,
with any layers before it (the command line puts its flags and presets there), and records where
each value came from.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np
from walkcut.runtime.cuts.hierarchy import CutResult, Hierarchy, cut_transition_matrix
from walkcut.runtime.sources.pixels import PixelSource, Transition, grid_cell_colors
from walkcut.runtime.upsample import snap_to_segments, upsample_labels
from walkcut.runtime import defaults as _d


#: The package default of each cut setting a source may carry (keys of ``defaults.CUT_DEFAULT_KEYS``):
#: what applies where neither the caller nor the source gives a value. ``min_size`` None means
#: ``max(1, n // MIN_SIZE_DIVISOR)`` nodes; joint-bilateral upsampling follows image edges
#: (runtime/upsample.py).
PACKAGE_CUT_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "mode": _d.MODE, "power": _d.POWER, "threshold": _d.THRESHOLD, "min_size": None,
    "max_segments": _d.MAX_SEGMENTS, "upsample": _d.UPSAMPLE,
})


@dataclass(frozen=True)
class CutSetting:
    """One resolved cut setting and where it came from (``"model"``, ``"default"``, a flag, ...)."""

    value: Any
    origin: str


def resolve_cut_settings(*layers: tuple[str, Mapping[str, Any]]) -> dict[str, CutSetting]:
    """Every cut setting of ``defaults.CUT_DEFAULT_KEYS`` from the first layer that gives it.

    Parameters
    ----------
    *layers : (origin, values)
        Highest priority first; a value of None (or a missing key) means "not given here". The
        package defaults (origin ``"default"``) come last on their own.

    Returns
    -------
    dict
        ``{name: CutSetting(value, origin)}`` in the order of ``CUT_DEFAULT_KEYS``.

    Examples
    --------
    >>> s = resolve_cut_settings(("--threshold", {"threshold": 0.3}), ("model", {"mode": "walk"}))
    >>> describe_cut_settings(s)
    'mode=walk (model), power=1 (default), threshold=0.3 (--threshold), min_size=auto (default), max_segments=32 (default), upsample=joint-bilateral (default)'
    """
    chosen = {}
    for key in _d.CUT_DEFAULT_KEYS:
        given = ((origin, values.get(key)) for origin, values in layers)
        origin, value = next(((o, v) for o, v in given if v is not None), ("default", PACKAGE_CUT_DEFAULTS[key]))
        chosen[key] = CutSetting(value, origin)
    return chosen


def describe_cut_settings(settings: Mapping[str, CutSetting]) -> str:
    """``"mode=walk (model), threshold=0.3 (--threshold), ..."``: the settings and their origins."""
    return ", ".join(f"{k}={'auto' if s.value is None else s.value} ({s.origin})" for k, s in settings.items())


def source_cut_defaults(source) -> Mapping[str, Any]:
    """The cut settings a source carries (``source.cut_defaults``; empty for sources without)."""
    return getattr(source, "cut_defaults", None) or {}


def shrink_image(image_rgb: np.ndarray, max_side: int) -> np.ndarray:
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
        Where the random walk comes from: the weight-free pixel graph or an attention engine. A
        source may carry its own cut settings (``cut_defaults``: an exported model's contract);
        :meth:`segment` uses them for the settings it is not given.
    upsample : {"joint-bilateral", "nearest", "snap"}, optional
        How grid labels become pixel labels; default: the source's, else joint-bilateral.
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

    def __init__(self, source=None, *, upsample: str | None = None, max_source_side: int = _d.MAX_SOURCE_SIDE,
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
        self._fine: np.ndarray | None = None
        self._snapper: Segmenter | None = None

    def set_image(self, image_rgb: np.ndarray) -> Segmenter:
        """Run the source on an (H, W, 3) uint8 RGB image and keep its transition matrix."""
        if not isinstance(image_rgb, np.ndarray) or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {getattr(image_rgb, 'shape', type(image_rgb))}")
        if image_rgb.dtype != np.uint8:
            raise TypeError(f"expected a uint8 image, got {image_rgb.dtype}")
        t0 = time.perf_counter()
        small = shrink_image(image_rgb, self.max_source_side)
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
        self._fine = None
        return self

    def _superpixels(self, guide: np.ndarray) -> np.ndarray:
        """The fine pixel-walk segmentation ``upsample="snap"`` snaps to (once per image): the
        weight-free source at ``SNAP_GRID`` cut into ``SNAP_SEGMENTS`` leaves, every grown split kept.
        With ``warm_start`` (video) that cut starts from the previous frame's, as the main cut does."""
        if self._fine is None or self._fine.shape != guide.shape[:2]:
            if self._snapper is None:
                self._snapper = Segmenter(PixelSource(grid=_d.SNAP_GRID), max_label_side=self.max_label_side,
                                          warm_start=self.warm_start)
            self._fine = self._snapper.set_image(guide).segment(
                threshold=_d.EXPAND_LIMIT, max_segments=_d.SNAP_SEGMENTS, upsample=_d.UPSAMPLE).labels
        return self._fine

    @property
    def transition(self) -> Transition:
        if self._transition is None:
            raise RuntimeError("call set_image() before segment()")
        return self._transition

    def cut_settings(self, **given) -> dict[str, CutSetting]:
        """The settings :meth:`segment` would use given these (None: not given), with their origin:
        ``"argument"``, ``"model"`` (the source's ``cut_defaults``) or ``"default"``."""
        if given.get("upsample") is None and self.upsample is not None:
            given["upsample"] = self.upsample
        return resolve_cut_settings(("argument", given), ("model", source_cut_defaults(self.source)))

    def segment(self, *, mode: str | None = None, power: int | None = None, threshold=None,
                min_size: int | None = None, max_segments: int | None = None, upsample: str | None = None,
                **cut_options) -> Segmentation:
        """Cut the current image; repeated calls with the same mode/power/options reuse the tree.

        ``mode``, ``power``, ``threshold``, ``min_size``, ``max_segments`` (see
        :func:`~walkcut.runtime.cuts.hierarchy.cut_transition_matrix`) and ``upsample`` left as None
        take the source's own setting (an exported model's ``cut_defaults``), else the package
        default (:data:`PACKAGE_CUT_DEFAULTS`); :meth:`cut_settings` tells which applies.
        """
        settings = self.cut_settings(mode=mode, power=power, threshold=threshold, min_size=min_size,
                                     max_segments=max_segments, upsample=upsample)
        mode, power, threshold = (settings[k].value for k in ("mode", "power", "threshold"))
        upsample = settings["upsample"].value
        cut_options.update(min_size=settings["min_size"].value, max_segments=settings["max_segments"].value)
        tr = self.transition
        if tr.contrast is not None and tr.contrast < _d.FLAT_CONTRAST:
            # No visible boundary anywhere: one segment (the graph alone would be cut into quadrants).
            cut_options["max_segments"] = 1
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
        guide = shrink_image(self._image, self.max_label_side)
        labels = upsample_labels(
            grid_labels, guide.shape[:2], image_rgb=guide, cell_colors=self._cell_colors, method=upsample
        )
        if upsample == "snap":
            labels = snap_to_segments(labels, self._superpixels(guide))
        # Upsampling can drop a tiny segment: renumber to 0..K-1 keeping order (a lookup table, not
        # np.unique, whose sort needs several copies of a huge label map); usually none is dropped.
        # Counted on the guide's labels: enlarging by nearest neighbour keeps every label (a video
        # frame of 1280 x 720 is counted at 640 x 360).
        present = np.bincount(labels.ravel(), minlength=int(grid_labels.max()) + 1) > 0
        if not present.all():
            labels = (np.cumsum(present) - 1)[labels]
        if guide is not self._image:
            labels = cv2.resize(labels.astype(np.int32), (W, H), interpolation=cv2.INTER_NEAREST).astype(np.int64)
        t2 = time.perf_counter()
        timings = {"source": self._source_seconds, **self._source_timings, "cuts": t1 - t0, "upsample": t2 - t1}
        return Segmentation(labels=labels, grid_labels=grid_labels, cut=cut, timings=timings)
