"""Pictures of segmentations: a colour per segment, blended over the image, boundaries drawn."""

from __future__ import annotations

import cv2
import numpy as np

from walkcut.runtime.defaults import BOUNDARY_PIXELS_PER, OVERLAY_ALPHA


def palette(n: int) -> np.ndarray:
    """``n`` well-separated RGB colours (uint8), the same for the same ``n`` every time.

    Hues step by the golden angle so neighbouring ids never get similar colours.
    """
    k = np.arange(max(n, 1))
    hue = (k * 0.618033988749895) % 1.0
    sat = 0.65 + 0.35 * ((k * 0.37) % 1.0)
    hsv = np.stack([hue * 180, sat * 255, np.full(k.size, 235.0)], axis=1).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Boolean map of pixels whose right or lower neighbour has another label."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def label_colors(labels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 picture of a label map: the k-th smallest label gets ``palette(k)[k]``.

    Labels may be any integers (ground truth with gaps, 255 for void); they are ranked first.
    """
    lab = np.asarray(labels)
    uniq, inv = np.unique(lab, return_inverse=True)
    return palette(uniq.size)[inv.reshape(lab.shape)]


def overlay(image_rgb: np.ndarray, labels: np.ndarray, *, alpha: float = OVERLAY_ALPHA,
            colors: np.ndarray | None = None) -> np.ndarray:
    """Segments blended over ``image_rgb`` (RGB uint8) with 1-2 px white boundaries."""
    if labels.shape != image_rgb.shape[:2]:
        raise ValueError(f"labels {labels.shape} and image {image_rgb.shape[:2]} differ in size")
    if colors is None:
        colors = palette(int(labels.max()) + 1)
    tint = colors[labels % len(colors)]
    out = cv2.addWeighted(image_rgb, 1.0 - alpha, tint, alpha, 0.0)
    edge = boundaries(labels)
    thick = max(1, round(max(labels.shape) / BOUNDARY_PIXELS_PER))
    if thick > 1:
        edge = cv2.dilate(edge.astype(np.uint8), np.ones((thick, thick), np.uint8)).astype(bool)
    out[edge] = (255, 255, 255)
    return out
