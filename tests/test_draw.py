"""Overlay pictures: the lookup-table tint equals plain palette indexing for every label type."""

import numpy as np
import pytest
from walkcut.runtime import draw


@pytest.mark.parametrize("k", [1, 5, 64, 256, 300])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint16, np.uint8, np.int16])
def test_tint_equals_palette_indexing(k, dtype):
    rng = np.random.default_rng(k)
    colors = draw.palette(k)
    low = 0 if np.issubdtype(dtype, np.unsignedinteger) else -3
    for high in (min(k, 200), 250):  # labels inside the palette, and labels that wrap around it
        labels = rng.integers(low, high, (37, 53)).astype(dtype)
        np.testing.assert_array_equal(draw._tint(labels, colors), colors[labels.astype(np.int64) % k])


def test_overlay_keeps_size_and_draws_boundaries():
    image = np.full((20, 30, 3), 100, np.uint8)
    labels = np.zeros((20, 30), np.int64)
    labels[:, 15:] = 7
    out = draw.overlay(image, labels)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[:, 14] == 255).all()  # the boundary column is white
    assert not (out[:, 3] == 255).all()


@pytest.mark.parametrize("high", [3, 300, 70_000, 2**40])
@pytest.mark.parametrize("low", [0, -5])
def test_boundaries_and_overlay_for_every_label_range(low, high):
    """Narrowed labels (uint8 / uint16 / int32 through OpenCV, else numpy) find the same boundaries,
    and the overlay is the blend with white boundaries, thickened on large pictures."""
    rng = np.random.default_rng(high)
    labels = np.repeat(np.repeat(rng.integers(low, high, (9, 12)), 7, axis=0), 5, axis=1)  # (63, 60) blocks
    want = np.zeros(labels.shape, bool)
    want[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    want[:-1, :] |= labels[:-1, :] != labels[1:, :]
    np.testing.assert_array_equal(draw.boundaries(labels), want)
    image = rng.integers(0, 256, labels.shape + (3,), dtype=np.uint8)
    colors = draw.palette(16)
    out = draw.overlay(image, labels, colors=colors)
    blend = (0.55 * image + 0.45 * colors[labels % 16]).round()
    assert (out[want] == 255).all()
    assert np.abs(out[~want].astype(float) - blend[~want]).max() <= 1
    big = np.repeat(np.repeat(labels, 20, axis=0), 20, axis=1)  # 1260 x 1200: 3 px boundaries
    edge = (draw.overlay(np.zeros(big.shape + (3,), np.uint8), big, colors=colors) == 255).all(axis=2)
    assert edge.sum() > 2 * draw.boundaries(big).sum()
