"""Grid labels to pixel labels, with boundary awareness.

``joint-bilateral`` (default): each pixel scores the labels of the grid cells around it by
spatial closeness to the cell centre times colour similarity between the pixel and the cell's mean
colour, and takes the best-scoring label (joint bilateral upsampling, Kopf et al., SIGGRAPH 2007,
applied to label votes; the 2 x 2 cells around the pixel by default). Boundaries snap to image
edges instead of following the grid's staircase.
``nearest``: plain blocks, for comparison.

Only pixels whose candidate cells disagree can change label, and on a segmentation those are a
band along the segment borders (about a fifth of the pixels of a CamVid frame at R = 32): every
other pixel takes its cells' common label by a lookup on the cell grid, and the colour votes are
computed for the border pixels alone. The result is the same as voting at every pixel, 5-10x
faster (bench/RESULTS_runtime.md: 480 x 360 in a few ms on one core). Work is done in row bands, so
memory stays bounded for very large images.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from walkcut.runtime import defaults as _d

#: ``snap``: joint-bilateral, then each segment of a fine pixel-walk segmentation of the image takes
#: the label most of its pixels got (:func:`snap_to_segments`; the Segmenter supplies the fine
#: segments). For coarse attention grids (a ViT's 14-pixel patches): boundaries then follow the
#: image's colour and contour edges (bench/ABLATION.md, "Real attention").
METHODS = ("joint-bilateral", "nearest", "snap")
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

    Returns
    -------
    (H, W) int64 labels.

    Notes
    -----
    Pixel ``(y, x)`` has continuous grid coordinates ``g = ((y + 0.5) R / H, (x + 0.5) C / W)``;
    its candidates are the cells ``floor(g - 0.5) + o`` (clipped to the grid) for offsets
    ``o`` in ``1 - reach .. reach`` per axis, with weights
    ``exp(-|I(y, x) - c_k|^2 / (2 sigma_color^2)) * exp(-|g - centre_k|^2 / 0.5)``; a label scores
    the sum of the weights of its candidates and the best-scoring label wins (the first candidate's
    on a tie).
    """
    if reach not in (1, 2):
        raise ValueError(f"reach must be 1 or 2, got {reach!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not (np.isfinite(sigma_color) and sigma_color > 0):
        raise ValueError(f"sigma_color must be a positive number, got {sigma_color!r}")
    H, W = int(size[0]), int(size[1])
    grid_labels = np.asarray(grid_labels)
    if grid_labels.ndim != 2 or grid_labels.size == 0:
        raise ValueError(f"grid_labels must be a non-empty 2-D array, got shape {grid_labels.shape}")
    R, C = grid_labels.shape
    if method == "snap":  # the snapping itself needs the fine segments: Segmenter.segment does it
        method = "joint-bilateral"
    if method == "nearest" or image_rgb is None:
        if method != "nearest":
            raise ValueError("joint-bilateral upsampling needs image_rgb")
        return cv2.resize(grid_labels.astype(np.int32), (W, H), interpolation=cv2.INTER_NEAREST).astype(np.int64)
    if image_rgb.shape[:2] != (H, W):
        raise ValueError(f"image_rgb has shape {image_rgb.shape[:2]}, expected {(H, W)}")
    if cell_colors is None:
        cell_colors = cv2.resize(image_rgb.astype(np.float32) / 255.0, (C, R), interpolation=cv2.INTER_AREA)
    k = 2 * reach
    # Edge padding by ``reach`` turns the clipped candidate index clip(c0 + o, 0, R - 1) into the
    # plain index c0 + 1 + (o + reach - 1) of the padded grid: each pixel's candidates are then the
    # k x k window of the padded grid starting at (c0y + 1, c0x + 1).
    labels_p = np.pad(grid_labels.astype(np.int64), reach, mode="edge")  # (R + 2r, C + 2r)
    colors_p = np.pad(np.asarray(cell_colors, dtype=np.float32), ((reach, reach), (reach, reach), (0, 0)),
                      mode="edge")
    windows = sliding_window_view(labels_p, (k, k))  # (R + 1, C + 1, k, k)
    uniform = (windows.min(axis=(2, 3)) == windows.max(axis=(2, 3)))  # (R + 1, C + 1)
    # Window start of every pixel column / row, and the spatial weight of each candidate offset.
    gx = (np.arange(W) + 0.5) * C / W
    bx = np.floor(gx - 0.5).astype(np.int64) + 1  # (W,) in 0..C
    wx_stack = np.stack([np.exp(-((gx - (np.clip(bx - 1 + o, 0, C - 1) + 0.5)) ** 2) / _d.UPSAMPLE_SPATIAL_DENOM)
                         for o in range(1 - reach, reach + 1)]).astype(np.float32)  # (k, W), sigma 0.5 cell
    gy_all = (np.arange(H) + 0.5) * R / H
    by_all = np.floor(gy_all - 0.5).astype(np.int64) + 1  # (H,) in 0..R
    wy_stack = np.stack([np.exp(-((gy_all - (np.clip(by_all - 1 + o, 0, R - 1) + 0.5)) ** 2) / _d.UPSAMPLE_SPATIAL_DENOM)
                         for o in range(1 - reach, reach + 1)]).astype(np.float32)  # (k, H)
    inv2s2 = np.float32(1.0 / (2 * sigma_color**2))
    width_p = C + 2 * reach
    flat_labels = labels_p.ravel()
    # Colour planes of the padded cell grid: per-channel gathers are cheaper than (m, 3) row gathers.
    planes = [np.ascontiguousarray(colors_p[..., c]).ravel() for c in range(3)]
    row_start = by_all.astype(np.int32) * np.int32(width_p)  # (H,) flat index of the window's first row
    col_start = bx.astype(np.int32)  # (W,)
    offsets = (np.arange(k)[:, None] * width_p + np.arange(k)[None, :]).astype(np.int32).ravel()  # (n,)
    mixed_windows = ~uniform
    # Lookup on the cell grid: the first candidate's label, right wherever all candidates agree.
    out = labels_p.take(by_all, axis=0).take(bx, axis=1)  # (H, W) int64, C-contiguous (a view target)
    band = max(1, _BAND_PIXELS // max(W, 1))
    for y0 in range(0, H, band):
        y1 = min(H, y0 + band)
        mixed = mixed_windows.take(by_all[y0:y1], axis=0).take(bx, axis=1)  # (h, W) border pixels
        mixed = np.flatnonzero(mixed).astype(np.int32)
        if mixed.size == 0:
            continue
        my, mx = mixed // np.int32(W), mixed % np.int32(W)
        cells = (row_start[y0:y1].take(my) + col_start.take(mx))[None, :] + offsets[:, None]  # (n, m)
        band_pixels = image_rgb[y0:y1].reshape(-1)
        dc = np.zeros(cells.shape, np.float32)  # squared colour distances, (n, m)
        for c in range(3):
            pix = band_pixels.take(mixed * 3 + c).astype(np.float32) * np.float32(1.0 / 255.0)
            diff = pix - planes[c].take(cells)
            diff *= diff
            dc += diff
        weights = np.exp(dc * -inv2s2)  # (n, m): colour term times the separable spatial term
        weights *= np.repeat(wy_stack[:, y0:y1].take(my, axis=1), k, axis=0)
        weights *= np.tile(wx_stack.take(mx, axis=1), (k, 1))
        cand_labels = flat_labels.take(cells)  # (n, m)
        # Score of each candidate's label = sum of the weights of the candidates sharing it;
        # accumulated over candidate pairs (n^2/2 products instead of n^2 full reductions).
        score = weights.copy()
        n = len(cand_labels)
        for i in range(n):
            for j in range(i + 1, n):
                same = cand_labels[i] == cand_labels[j]
                score[i] += weights[j] * same
                score[j] += weights[i] * same
        # Running maximum (a strict ">" keeps the first candidate on ties): an argmax over the
        # (n, m) array reduces along its slow axis and costs several times more.
        best_score, best_label = score[0], cand_labels[0]
        for i in range(1, n):
            better = score[i] > best_score
            best_score = np.where(better, score[i], best_score)
            best_label = np.where(better, cand_labels[i], best_label)
        out[y0:y1].reshape(-1)[mixed] = best_label
    return out


def snap_to_segments(labels: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Each segment of ``segments`` takes the label that most of its pixels have in ``labels``.

    Both are (H, W) integer maps of the same image. A coarse segmentation (``labels``, from a
    14-pixel attention grid) keeps its regions but moves its boundaries onto the nearest boundaries
    of a finer one (``segments``, superpixels of the pixel walk); ties go to the smaller label.
    """
    labels, segments = np.asarray(labels), np.asarray(segments)
    if labels.shape != segments.shape:
        raise ValueError(f"labels {labels.shape} and segments {segments.shape} differ in shape")
    k_seg, k_lab = int(segments.max()) + 1, int(labels.max()) + 1
    votes = np.bincount(segments.ravel().astype(np.int64) * k_lab + labels.ravel(),
                        minlength=k_seg * k_lab).reshape(k_seg, k_lab)  # (segments, labels)
    return votes.argmax(axis=1)[segments]
