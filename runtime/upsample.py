"""Grid labels to pixel labels, with boundary awareness.

``joint-bilateral`` (default): each pixel scores the labels of the grid cells around it by
spatial closeness to the cell centre times colour similarity between the pixel and the cell's mean
colour, and takes the best-scoring label (joint bilateral upsampling, Kopf et al., SIGGRAPH 2007,
applied to label votes; the 2 x 2 cells around the pixel by default). Boundaries snap to image edges instead of following the grid's staircase.
``nearest``: plain blocks, for comparison. Work is done in row bands, so memory stays bounded for
very large images.
"""

from __future__ import annotations

import cv2
import numpy as np
from walkcut.runtime import defaults as _d

METHODS = ("joint-bilateral", "nearest")
_BAND_PIXELS = 1 << 21  # pixels per band (~2 M): bounds temporary memory to a few hundred MB


def upsample_labels(
    grid_labels: np.ndarray,
    size: tuple[int, int],
    *,
    image_rgb: np.ndarray | None = None,
    cell_colors: np.ndarray | None = None,
    method: str = "joint-bilateral",
    sigma_color: float = _d.UPSAMPLE_SIGMA_COLOR,
    reach: int = 1,
) -> np.ndarray:
    """Upsample ``(R, C)`` grid labels to ``size = (H, W)`` pixels.

    Parameters
    ----------
    grid_labels : (R, C) int array
    size : (H, W)
    image_rgb : (H, W, 3) uint8, required for ``joint-bilateral``
    cell_colors : (R, C, 3) float in [0, 1], optional
        Mean colour of each cell; computed from ``image_rgb`` when omitted.
    sigma_color : float
        Colour scale (RGB in [0, 1]) of the range term.
    reach : int
        Candidate cells per axis are the ``2 * reach`` cell centres nearest to the pixel
        (1: the 2 x 2 bilinear neighbourhood; 2: 4 x 4).
    """
    if reach not in (1, 2):
        raise ValueError(f"reach must be 1 or 2, got {reach!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    H, W = int(size[0]), int(size[1])
    R, C = grid_labels.shape
    if method == "nearest" or image_rgb is None:
        if method != "nearest":
            raise ValueError("joint-bilateral upsampling needs image_rgb")
        return cv2.resize(grid_labels.astype(np.int32), (W, H), interpolation=cv2.INTER_NEAREST).astype(np.int64)
    if image_rgb.shape[:2] != (H, W):
        raise ValueError(f"image_rgb has shape {image_rgb.shape[:2]}, expected {(H, W)}")
    if cell_colors is None:
        cell_colors = cv2.resize(image_rgb.astype(np.float32) / 255.0, (C, R), interpolation=cv2.INTER_AREA)
    out = np.empty((H, W), dtype=np.int64)
    band = max(1, _BAND_PIXELS // max(W, 1))
    # Continuous grid coordinates of pixel centres (cell k spans [k, k+1)).
    gx = (np.arange(W) + 0.5) * C / W
    cx0 = np.floor(gx - 0.5).astype(np.int64)
    for y0 in range(0, H, band):
        y1 = min(H, y0 + band)
        gy = (np.arange(y0, y1) + 0.5) * R / H
        cy0 = np.floor(gy - 0.5).astype(np.int64)
        pix = image_rgb[y0:y1].astype(np.float32) * np.float32(1.0 / 255.0)
        inv2s2 = np.float32(1.0 / (2 * sigma_color**2))
        cand_labels, cand_weights = [], []
        for oy in range(1 - reach, reach + 1):
            cy = np.clip(cy0 + oy, 0, R - 1)
            wy = np.exp(-((gy - (cy + 0.5)) ** 2) / _d.UPSAMPLE_SPATIAL_DENOM).astype(np.float32)  # spatial sigma 0.5 cell
            rows_col = cell_colors[cy]  # (h, C, 3)
            rows_lab = grid_labels[cy]  # (h, C)
            for ox in range(1 - reach, reach + 1):
                cx = np.clip(cx0 + ox, 0, C - 1)
                wx = np.exp(-((gx - (cx + 0.5)) ** 2) / _d.UPSAMPLE_SPATIAL_DENOM).astype(np.float32)
                diff = pix - rows_col[:, cx]  # (h, W, 3)
                dc = np.einsum("hwc,hwc->hw", diff, diff)
                w = np.exp(dc * -inv2s2)
                w *= wy[:, None]
                w *= wx[None, :]
                cand_weights.append(w)
                cand_labels.append(rows_lab[:, cx])
        # Score of each candidate's label = sum of the weights of the candidates sharing it;
        # accumulated over candidate pairs (k^2/2 products instead of k^2 full reductions).
        score = [w.copy() for w in cand_weights]
        k = len(cand_labels)
        for a in range(k):
            for b in range(a + 1, k):
                same = cand_labels[a] == cand_labels[b]
                score[a] += cand_weights[b] * same
                score[b] += cand_weights[a] * same
        best = np.argmax(np.stack(score), axis=0)
        out[y0:y1] = np.take_along_axis(np.stack(cand_labels), best[None], axis=0)[0]
    return out
