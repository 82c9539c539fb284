"""The weight-free pixel source, upsampling, drawing and the `walkcut segment` command."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import data_path
from walkcut.runtime.draw import boundaries, overlay, palette
from walkcut.runtime.segmenter import Segmenter
from walkcut.runtime.sources.pixels import PixelSource
from walkcut.runtime.upsample import upsample_labels

from walkcut.cli import main


def two_region_image(h=96, w=128):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 40, 40)
    img[:, w // 2 :] = (30, 60, 210)
    noise = np.random.default_rng(0).integers(0, 12, img.shape, dtype=np.uint8)
    return img + noise


def test_pixel_transition_is_stochastic_and_reversible():
    tr = PixelSource(grid=16).transition(two_region_image())
    P = tr.P
    assert sp.issparse(P) and P.shape == (256, 256)
    np.testing.assert_allclose(np.asarray(P.sum(axis=1)).ravel(), 1.0)
    pi = tr.stationary
    flow = sp.diags(pi) @ P
    np.testing.assert_allclose((flow - flow.T).toarray(), 0.0, atol=1e-12)  # detailed balance
    np.testing.assert_allclose(pi @ P, pi, atol=1e-12)


def test_two_regions_split_along_the_colour_edge():
    img = two_region_image()
    seg = Segmenter(PixelSource(grid=16)).set_image(img).segment(threshold="auto-ncut")
    assert seg.labels.shape == img.shape[:2]
    left, right = seg.labels[:, :60], seg.labels[:, 68:]
    assert len(np.unique(left)) == 1 and len(np.unique(right)) == 1
    assert left[0, 0] != right[0, 0]


def test_segmenter_reuses_the_tree_for_new_thresholds():
    seg = Segmenter(PixelSource(grid=16)).set_image(two_region_image())
    a = seg.segment(threshold=0.5)
    b = seg.segment(threshold=0.0)
    assert a.cut.hierarchy is b.cut.hierarchy
    assert b.n_segments == 1


def test_segment_before_set_image_is_an_error():
    with pytest.raises(RuntimeError, match="set_image"):
        Segmenter().segment()


def test_bad_source_parameters():
    with pytest.raises(ValueError, match="grid must be"):
        PixelSource(grid=2)
    with pytest.raises(ValueError, match="radius"):
        PixelSource(radius=0.5)


def test_joint_bilateral_upsampling_follows_image_edges():
    """A colour edge inside a grid cell: bilateral upsampling puts the boundary on the edge,
    nearest-neighbour leaves it on the cell border."""
    h, w, grid = 64, 64, 8
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :27] = 255  # edge at x = 27, inside cell 3 (pixels 24..31)
    grid_labels = np.zeros((grid, grid), np.int64)
    grid_labels[:, 4:] = 1  # cell 3 (mostly white) belongs to the left segment
    truth = np.zeros((h, w), np.int64)
    truth[:, 27:] = 1
    near = upsample_labels(grid_labels, (h, w), method="nearest")
    jbu = upsample_labels(grid_labels, (h, w), image_rgb=img)
    assert (jbu == truth).mean() > (near == truth).mean()
    assert (jbu == truth).mean() > 0.98


def test_upsampling_bounded_memory_in_bands(monkeypatch):
    import walkcut.runtime.upsample as up

    monkeypatch.setattr(up, "_BAND_PIXELS", 500)  # force many bands; result must not change
    img = two_region_image()
    gl = np.zeros((8, 8), np.int64)
    gl[:, 4:] = 1
    a = up.upsample_labels(gl, img.shape[:2], image_rgb=img)
    monkeypatch.setattr(up, "_BAND_PIXELS", 1 << 21)
    np.testing.assert_array_equal(a, up.upsample_labels(gl, img.shape[:2], image_rgb=img))


def test_overlay_draws_boundaries():
    labels = np.zeros((20, 20), np.int64)
    labels[:, 10:] = 1
    out = overlay(np.zeros((20, 20, 3), np.uint8), labels)
    assert boundaries(labels)[:, 9].all()
    assert (out[:, 9] == 255).all()
    assert len({tuple(c) for c in palette(12)}) == 12


def run_segment(tmp_path, *args):
    return main(["segment", *map(str, args), "--out", str(tmp_path / "out")])


def test_cli_round_trip_synthetic(tmp_path, capsys):
    img = two_region_image()
    src = tmp_path / "two.png"
    cv2.imwrite(str(src), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert run_segment(tmp_path, src, "--grid", "16") == 0
    labels = cv2.imread(str(tmp_path / "out" / "two_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16 and labels.shape == img.shape[:2]
    assert set(np.unique(labels)) == {0, 1}
    over = cv2.imread(str(tmp_path / "out" / "two_overlay.png"))
    assert over.shape == img.shape
    assert "2 segments" in capsys.readouterr().out


def test_cli_bad_file_fails_cleanly_and_batch_continues(tmp_path, capsys):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), two_region_image())
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    assert run_segment(tmp_path, fake, good, tmp_path / "missing.jpg", "--grid", "16") == 1
    err = capsys.readouterr().err
    assert "fake.png: not a readable image" in err and "missing.jpg: no such file" in err
    outs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outs == ["good_labels.png", "good_overlay.png"]  # no partial or temp files


def test_cli_rejects_bad_threshold(tmp_path, capsys):
    assert run_segment(tmp_path, "x.png", "--threshold", "auto") == 2
    assert "auto-ncut" in capsys.readouterr().err


@pytest.mark.data
def test_cli_round_trip_on_bsds(tmp_path):
    image = data_path("bsds500", "images", "val", "101087.jpg")
    assert run_segment(tmp_path, image, "--threshold", "auto-mincut") == 0
    labels = cv2.imread(str(tmp_path / "out" / "101087_labels.png"), cv2.IMREAD_UNCHANGED)
    src = cv2.imread(str(image))
    assert labels.shape == src.shape[:2] and labels.dtype == np.uint16
    k = int(labels.max()) + 1
    assert 2 <= k <= 32
    assert set(np.unique(labels)) == set(range(k))
