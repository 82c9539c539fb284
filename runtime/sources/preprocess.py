"""Image -> model input, driven by the model's contract (size S, normalisation, colour order).

Policy for images of any size and aspect: **resize the whole image to S x S** (aspect squashed),
never pad or crop.

Why: the engine's output is an R x R grid of patches and the segmentation lives on that grid.

- Squashing keeps every pixel of the original inside exactly one grid cell, so every pixel gets a
  label; the upsampler maps cell ``(i, j)`` back to the original-resolution rectangle
  ``[i H/R, (i+1) H/R) x [j W/R, (j+1) W/R)`` and snaps boundaries to the original image's edges
  (joint bilateral upsampling on the original pixels), so labels land on original pixels with no
  coordinate bookkeeping.
- Padding would spend grid cells on a constant border that the walk treats as one more region (a
  spurious segment and wasted nodes; at 16:9, a quarter of the grid); cropping would leave pixels
  without a label.
- The price is anisotropic cells for non-square images (a 2:1 image gives cells twice as wide as
  tall). Self-attention is computed on the squashed latent, which Stable Diffusion handles well at
  moderate aspect ratios; beyond 3:1 a warning is logged, as thin regions may then fall between rows
  of the grid.

Downscaling uses area averaging (no aliasing), upscaling bilinear interpolation.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from walkcut.runtime import defaults as _d
from walkcut.runtime.sources.contract import ModelContract

logger = logging.getLogger(__name__)

#: Aspect ratio beyond which squashing is worth a warning.
WARN_ASPECT = 3.0


def resize_square(image_rgb: np.ndarray, size: int) -> np.ndarray:
    """``image_rgb`` (H, W, 3) uint8 resized to (size, size, 3), aspect squashed."""
    h, w = image_rgb.shape[:2]
    if (h, w) == (size, size):
        return image_rgb
    shrink = h * w >= size * size
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(image_rgb, (size, size), interpolation=interp)


def preprocess(image_rgb: np.ndarray, contract: ModelContract) -> np.ndarray:
    """Model input for ``image_rgb`` as the ``contract`` asks.

    Parameters
    ----------
    image_rgb : (H, W, 3) uint8
        RGB image of any size and aspect.
    contract : ModelContract
        Supplies ``image_size`` (S), ``normalization`` and ``color_order``.

    Returns
    -------
    (1, 3, S, S) float32, C-contiguous
    """
    if not isinstance(image_rgb, np.ndarray) or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got {getattr(image_rgb, 'shape', type(image_rgb))}")
    if image_rgb.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {image_rgb.dtype}")
    h, w = image_rgb.shape[:2]
    if min(h, w) < 1:
        raise ValueError(f"image has no pixels: shape {image_rgb.shape}")
    if max(h, w) / min(h, w) > WARN_ASPECT:
        logger.warning("image %dx%d is squashed to %dx%d (aspect %.1f:1); thin regions may be lost",
                       w, h, contract.image_size, contract.image_size, max(h, w) / min(h, w))
    contract.check_runtime_support()
    x = resize_square(image_rgb, contract.image_size)
    if contract.color_order == "BGR":
        x = x[:, :, ::-1]
    out = np.empty((1, 3, contract.image_size, contract.image_size), dtype=np.float32)
    scale, shift = normalization_affine(contract.normalization)  # (3, 1, 1) each: out = x * scale - shift
    np.multiply(x.transpose(2, 0, 1), scale, out=out[0], casting="unsafe")
    out[0] -= shift
    return out


def normalization_affine(normalization: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(scale, shift)`` with ``normalised = x * scale - shift`` for uint8 ``x``."""
    if normalization == "minus_one_to_one":  # x / 127.5 - 1
        scale, shift = np.full(3, 1 / 127.5), np.ones(3)
    elif normalization == "imagenet":  # (x / 255 - mean) / std
        mean, std = np.asarray(_d.IMAGENET_MEAN), np.asarray(_d.IMAGENET_STD)
        scale, shift = 1 / (255.0 * std), mean / std
    elif normalization == "zero_to_one":
        scale, shift = np.full(3, 1 / 255.0), np.zeros(3)
    else:  # check_runtime_support refused it already
        raise ValueError(f"unknown normalization {normalization!r}")
    return (scale.astype(np.float32).reshape(3, 1, 1), shift.astype(np.float32).reshape(3, 1, 1))
