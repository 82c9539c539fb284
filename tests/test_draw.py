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
