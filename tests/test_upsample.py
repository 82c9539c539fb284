"""Boundary-aware upsampling: the border-only vote equals the vote at every pixel."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from walkcut.runtime.upsample import upsample_labels


def vote_everywhere(grid_labels, size, image_rgb, *, sigma_color=0.1, reach=1):
    """Plain joint-bilateral label vote at every pixel (the definition in the module's Notes)."""
    H, W = size
    R, C = grid_labels.shape
    colors = cv2.resize(image_rgb.astype(np.float32) / 255.0, (C, R), interpolation=cv2.INTER_AREA)
    gy = (np.arange(H) + 0.5) * R / H
    gx = (np.arange(W) + 0.5) * C / W
    cy0, cx0 = np.floor(gy - 0.5).astype(int), np.floor(gx - 0.5).astype(int)
    pix = image_rgb.astype(np.float32) / 255.0
    labels, weights = [], []
    for oy in range(1 - reach, reach + 1):
        cy = np.clip(cy0 + oy, 0, R - 1)
        wy = np.exp(-((gy - (cy + 0.5)) ** 2) / 0.5)
        for ox in range(1 - reach, reach + 1):
            cx = np.clip(cx0 + ox, 0, C - 1)
            wx = np.exp(-((gx - (cx + 0.5)) ** 2) / 0.5)
            dc = ((pix - colors[cy][:, cx]) ** 2).sum(axis=2)
            weights.append(np.exp(-dc / (2 * sigma_color**2)) * wy[:, None] * wx[None, :])
            labels.append(grid_labels[cy][:, cx])
    labels, weights = np.stack(labels), np.stack(weights)  # (n, H, W)
    score = (weights[None] * (labels[:, None] == labels[None, :])).sum(axis=1)  # (n, H, W)
    return np.take_along_axis(labels, score.argmax(axis=0)[None], axis=0)[0]


def random_case(seed, R=9, C=12, H=61, W=83, n_labels=4):
    rng = np.random.default_rng(seed)
    # Blobby labels (a few regions, like a segmentation) and an image whose colours follow them.
    grid = cv2.resize(rng.integers(0, n_labels, (3, 4)).astype(np.uint8), (C, R), interpolation=cv2.INTER_NEAREST)
    grid = grid.astype(np.int64)
    base = rng.integers(0, 256, (n_labels, 3))
    img = base[cv2.resize(grid.astype(np.uint8), (W, H), interpolation=cv2.INTER_LINEAR)]
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    return grid, img


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("reach", [1, 2])
def test_border_vote_matches_the_vote_everywhere(seed, reach):
    grid, img = random_case(seed)
    got = upsample_labels(grid, img.shape[:2], image_rgb=img, reach=reach)
    want = vote_everywhere(grid, img.shape[:2], img, reach=reach)
    assert got.dtype == np.int64 and got.shape == img.shape[:2]
    # Same formula, float32 vs float64 rounding: a near-tie may go the other way, nothing else.
    assert (got == want).mean() > 0.999


def test_uniform_grid_is_a_plain_lookup():
    grid = np.full((5, 7), 3)
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    assert (upsample_labels(grid, (40, 50), image_rgb=img) == 3).all()


def test_upsampling_is_the_same_in_bands(monkeypatch):
    import walkcut.runtime.upsample as up

    grid, img = random_case(7, H=97, W=64)
    whole = up.upsample_labels(grid, img.shape[:2], image_rgb=img)
    monkeypatch.setattr(up, "_BAND_PIXELS", 300)  # bands of 4 rows, many of them without a border
    np.testing.assert_array_equal(whole, up.upsample_labels(grid, img.shape[:2], image_rgb=img))


def test_upsampling_validates_its_options():
    grid, img = random_case(0)
    with pytest.raises(ValueError, match="reach"):
        upsample_labels(grid, img.shape[:2], image_rgb=img, reach=3)
    with pytest.raises(ValueError, match="method"):
        upsample_labels(grid, img.shape[:2], image_rgb=img, method="cubic")
    with pytest.raises(ValueError, match="sigma_color"):
        upsample_labels(grid, img.shape[:2], image_rgb=img, sigma_color=0)
    with pytest.raises(ValueError, match="image_rgb has shape"):
        upsample_labels(grid, (10, 10), image_rgb=img)
    with pytest.raises(ValueError, match="needs image_rgb"):
        upsample_labels(grid, img.shape[:2])
    with pytest.raises(ValueError, match="2-D"):
        upsample_labels(np.zeros(5, int), (4, 4), method="nearest")
