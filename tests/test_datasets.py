"""walkcut.eval.datasets on tiny fixture folders in each public layout, and on ../shared/data."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from walkcut.eval import datasets as D

DATA = Path(os.environ.get("WALKCUT_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def _png(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if a.ndim == 3:
        a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), a)


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def make_bsds(root: Path, ids=("1", "2"), h=6, w=8):
    for k, sid in enumerate(ids):
        p = root / "images" / "val" / f"{sid}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), _rgb(h, w, k))
        cell = np.empty((1, 2), dtype=object)
        for a in range(2):
            seg = np.ones((h, w), np.uint16)
            seg[:, w // 2 + a:] = 2
            cell[0, a] = {"Segmentation": seg, "Boundaries": np.zeros((h, w), np.uint8)}
        (root / "groundTruth" / "val").mkdir(parents=True, exist_ok=True)
        savemat(str(root / "groundTruth" / "val" / f"{sid}.mat"), {"groundTruth": cell})
    return root


def make_camvid(root: Path, h=6, w=10):
    for k, name in enumerate(("a", "b")):
        _png(root / "val" / f"{name}.png", _rgb(h, w, k))
        lab = np.full((h, w), 3, np.uint8)
        lab[0] = 11  # void
        _png(root / "valannot" / f"{name}.png", lab)
    return root


def make_coco(root: Path, ids=("000000000139", "000000000285"), h=8, w=12):
    (root / "curated" / "val2017").mkdir(parents=True)
    (root / "curated" / "val2017" / D.COCO_CURATED_VAL).write_text("\n".join(ids) + "\n")
    for k, sid in enumerate(ids):
        p = root / "images" / "val2017" / f"{sid}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), _rgb(h, w, k))
        lab = np.zeros((h, w), np.uint8)  # fine 0 = person -> coarse 9
        lab[:, 6:] = 156                   # fine 156 = sky-other -> coarse 23
        lab[0, :] = 255
        _png(root / "annotations" / "val2017" / f"{sid}.png", lab)
    return root


def make_cityscapes(root: Path, h=8, w=16):
    for city, name in (("frankfurt", "frankfurt_000000_000294"), ("lindau", "lindau_000000_000019")):
        _png(root / "leftImg8bit" / "val" / city / f"{name}_leftImg8bit.png", _rgb(h, w))
        lab = np.full((h, w), 7, np.uint8)  # road -> 0
        lab[:, 10:] = 26                    # car -> 19
        lab[0, :] = 1                       # ego vehicle -> ignored
        lab[1, :] = 34                      # beyond 33 -> ignored
        _png(root / "gtFine" / "val" / city / f"{name}_gtFine_labelIds.png", lab)
    return root


def test_coco_fine_to_coarse_table():
    lut = D.coco_fine_to_coarse()
    assert (lut[:182] != 255).all() and (lut[182:] == 255).all()
    assert np.bincount(lut[:182]).size == 27 and (np.bincount(lut[:182]) > 0).all()
    # A few anchors of the COCO-Stuff hierarchy: person, car, dog, clouds, sky-other, wall-brick, water-other.
    assert [lut[i] for i in (0, 2, 17, 105, 156, 171, 177)] == [9, 11, 7, 23, 23, 18, 26]
    assert len(D.COCO27_CLASSES) == 27 and len(D.CITYSCAPES27_CLASSES) == 27


def test_bsds_fixture(tmp_path):
    ds = D.load_dataset("bsds500", make_bsds(tmp_path))
    assert ds.protocol == "regions" and len(ds) == 2
    s = next(iter(ds))
    assert s.id == "1" and s.image.shape == (6, 8, 3) and s.image.dtype == np.uint8
    assert len(s.gt) == 2 and s.gt[1].shape == (6, 8) and set(np.unique(s.gt[1])) == {1, 2}
    assert len(ds.limited(1)) == 1


def test_camvid_fixture_crop_and_void(tmp_path):
    ds = D.load_dataset("camvid", make_camvid(tmp_path))
    assert (ds.protocol, ds.num_classes, ds.ignore_label) == ("semantic", 11, 255)
    s = next(iter(ds))
    assert s.image.shape == (6, 6, 3) and s.gt.shape == (6, 6)  # square centre crop
    assert set(np.unique(s.gt)) == {3, 255}
    full = next(iter(D.load_dataset("camvid", tmp_path, crop=False)))
    assert full.image.shape == (6, 10, 3)
    np.testing.assert_array_equal(s.image, full.image[:, 2:8])


def test_cocostuff27_fixture(tmp_path):
    ds = D.load_dataset("cocostuff27", make_coco(tmp_path))
    assert len(ds) == 2 and ds.num_classes == 27
    s = next(iter(ds))
    assert s.id == "000000000139" and s.image.shape == (8, 8, 3)
    # crop keeps columns 2..9: coarse person (9) then sky (23); first row unlabelled
    assert set(np.unique(s.gt)) == {9, 23, 255}
    assert (s.gt[0] == 255).all()


def test_cityscapes_fixture(tmp_path):
    ds = D.load_dataset("cityscapes", make_cityscapes(tmp_path))
    assert len(ds) == 2 and ds.items[0][0] == "frankfurt_000000_000294"
    s = next(iter(ds))
    assert s.image.shape == (8, 8, 3)
    assert set(np.unique(s.gt)) == {0, 19, 255}  # crop = columns 4..11: road, then car from 10
    assert (s.gt[:, :6] != 19).all() and (s.gt[2:, 6:] == 19).all()
    full = next(iter(D.load_dataset("cityscapes", tmp_path, crop=False)))
    assert set(np.unique(full.gt)) == {0, 19, 255}
    assert (full.gt[:2] == 255).all()


def test_wrong_root_names_the_layout(tmp_path):
    with pytest.raises(D.DatasetLayoutError, match="leftImg8bit"):
        D.load_dataset("cityscapes", tmp_path)
    with pytest.raises(D.DatasetLayoutError, match="Coco164kFull_Stuff_Coarse_7.txt"):
        D.load_dataset("cocostuff27", tmp_path)
    with pytest.raises(D.DatasetLayoutError, match="groundTruth"):
        D.load_dataset("bsds500", tmp_path)
    with pytest.raises(D.DatasetLayoutError, match="not a folder"):
        D.load_dataset("camvid", tmp_path / "nope")
    with pytest.raises(ValueError, match="'ade20k'"):
        D.load_dataset("ade20k", tmp_path)
    with pytest.raises(ValueError, match="'test'"):
        D.load_dataset("cocostuff27", make_coco(tmp_path / "c"), split="test")


def test_missing_annotation_is_named(tmp_path):
    make_camvid(tmp_path)
    (tmp_path / "valannot" / "b.png").unlink()
    with pytest.raises(D.DatasetLayoutError, match="b.png"):
        D.load_dataset("camvid", tmp_path)


@pytest.mark.data
@pytest.mark.skipif(not (DATA / "bsds500").is_dir(), reason="../shared/data/bsds500 is absent")
def test_real_bsds500_val():
    ds = D.load_dataset("bsds500", DATA / "bsds500")
    assert len(ds) == 100
    s = next(iter(ds.limited(1)))
    assert s.image.shape[:2] in ((321, 481), (481, 321))
    assert 5 <= len(s.gt) <= 8 and all(g.shape == s.image.shape[:2] and g.min() >= 1 for g in s.gt)


@pytest.mark.data
@pytest.mark.skipif(not (DATA / "camvid").is_dir(), reason="../shared/data/camvid is absent")
def test_real_camvid_val():
    ds = D.load_dataset("camvid", DATA / "camvid")
    assert len(ds) == 101
    s = next(iter(ds.limited(1)))
    assert s.image.shape == (360, 360, 3)
    assert s.gt.max() == 255 or s.gt.max() <= 10
