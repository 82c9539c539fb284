"""Evaluation datasets: BSDS500, CamVid, COCO-Stuff-27 and Cityscapes-27, read from their public layouts.

Each loader returns an :class:`EvalDataset`: it knows its protocol (``regions`` for BSDS500, scored
with Covering / PRI / VoI against several annotations; ``semantic`` for the others, scored with
Hungarian-matched mIoU and pixel accuracy) and yields :class:`Sample` objects lazily, one file read
per image. Nothing is copied or cached: the data stay where the user keeps them.

Layouts (``ROOT`` is the folder passed as ``root``)::

    bsds500     ROOT/images/<split>/<id>.jpg
                ROOT/groundTruth/<split>/<id>.mat      (MATLAB; groundTruth{k}.Segmentation, labels 1..K)
    camvid      ROOT/<split>/<name>.png                (split: train, val, test)
                ROOT/<split>annot/<name>.png           (uint8; 0..10 classes, 11 = void)
    cocostuff27 ROOT/images/val2017/<id>.jpg
                ROOT/annotations/val2017/<id>.png      (stuffthingmaps: fine ids 0..181, 255 unlabelled)
                ROOT/curated/val2017/Coco164kFull_Stuff_Coarse_7.txt   (the curated 2175-image list)
    cityscapes  ROOT/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png
                ROOT/gtFine/<split>/<city>/<name>_gtFine_labelIds.png

The semantic sets are centre-cropped to a square by default (the shorter side), as the unsupervised
protocol of STEGO / DiffSeg / DiffCut does before resizing.

References
----------
.. [1] P. Arbelaez et al., "Contour Detection and Hierarchical Image Segmentation", TPAMI 2011 (BSDS500).
.. [2] G. Brostow, J. Fauqueur, R. Cipolla, "Semantic object classes in video", PRL 2009 (CamVid).
.. [3] H. Caesar, J. Uijlings, V. Ferrari, "COCO-Stuff: Thing and Stuff Classes in Context", CVPR 2018.
.. [4] X. Ji, J. Henriques, A. Vedaldi, "Invariant Information Clustering", ICCV 2019 (the curated
   COCO-Stuff lists); M. Hamilton et al., "Unsupervised Semantic Segmentation by Distilling Feature
   Correspondences" (STEGO), ICLR 2022 (the 27-class COCO-Stuff and Cityscapes protocol).
.. [5] M. Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene Understanding", CVPR 2016.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "DatasetLayoutError",
    "EvalDataset",
    "Sample",
    "center_crop",
    "coco_fine_to_coarse",
    "default_data_root",
    "load_dataset",
]

#: Dataset names accepted by :func:`load_dataset`.
DATASETS = ("bsds500", "camvid", "cocostuff27", "cityscapes")

CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign-symbol", "fence", "car",
                  "pedestrian", "bicyclist")
CAMVID_VOID = 11

#: The 27 coarse COCO-Stuff classes in the order the unsupervised literature uses (12 thing
#: super-categories, then 15 stuff super-categories).
COCO27_CLASSES = ("electronic", "appliance", "food", "furniture", "indoor", "kitchen", "accessory",
                  "animal", "outdoor", "person", "sports", "vehicle", "ceiling", "floor", "food-stuff",
                  "furniture-stuff", "raw-material", "textile", "wall", "window", "building", "ground",
                  "plant", "sky", "solid", "structural", "water")

# Fine stuffthingmap ids (0-based: COCO category id - 1) of each coarse class. Things follow COCO's
# super-categories in contiguous id ranges; stuff follows the COCO-Stuff label hierarchy.
_COCO_COARSE_MEMBERS = {
    9: range(1), 11: range(1, 9), 8: range(9, 15), 7: range(15, 25), 6: range(25, 33),
    10: range(33, 43), 5: range(43, 51), 2: range(51, 61), 3: range(61, 71), 0: range(71, 77),
    1: range(77, 83), 4: range(83, 91),
    12: (101, 102),
    13: (100, 113, 114, 115, 116, 117),
    14: (120, 121, 152, 169),
    15: (97, 106, 107, 109, 111, 122, 129, 132, 155, 160, 164),
    16: (99, 131, 138, 142),
    17: (91, 92, 103, 104, 108, 130, 136, 140, 151, 166, 167),
    18: tuple(range(170, 177)),
    19: (179, 180),
    20: (94, 95, 127, 150, 157, 165),
    21: (110, 124, 125, 135, 139, 143, 144, 146, 148, 153, 158),
    22: (93, 96, 118, 123, 128, 133, 141, 162, 168),
    23: (105, 156),
    24: (126, 134, 149, 159, 161, 181),
    25: (98, 112, 137, 145, 163),
    26: (119, 147, 154, 177, 178),
}

#: Cityscapes label ids 7..33 become classes 0..26; everything else is ignored.
CITYSCAPES_FIRST_ID = 7
CITYSCAPES27_CLASSES = ("road", "sidewalk", "parking", "rail track", "building", "wall", "fence",
                        "guard rail", "bridge", "tunnel", "pole", "polegroup", "traffic light",
                        "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
                        "bus", "caravan", "trailer", "train", "motorcycle", "bicycle")

IGNORE = 255
COCO_CURATED_VAL = "Coco164kFull_Stuff_Coarse_7.txt"


def coco_fine_to_coarse() -> np.ndarray:
    """Lookup table (256,) uint8: fine stuffthingmap id -> coarse class 0..26, 255 for unlabelled."""
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for coarse, members in _COCO_COARSE_MEMBERS.items():
        lut[np.fromiter(members, dtype=np.int64)] = coarse
    return lut


def cityscapes_to_27() -> np.ndarray:
    """Lookup table (256,) uint8: Cityscapes label id -> class 0..26, 255 for ignored ids."""
    lut = np.full(256, IGNORE, dtype=np.uint8)
    lut[CITYSCAPES_FIRST_ID:CITYSCAPES_FIRST_ID + 27] = np.arange(27, dtype=np.uint8)
    return lut


@dataclasses.dataclass(frozen=True)
class Sample:
    """One evaluation image.

    Attributes
    ----------
    id : str
        File stem.
    image : ndarray of uint8, shape (H, W, 3)
        RGB.
    gt : tuple of ndarray, or ndarray
        ``regions`` protocol: a tuple of (H, W) integer maps, one per annotator.
        ``semantic`` protocol: one (H, W) uint8 class map, :data:`IGNORE` (255) where ignored.
    """

    id: str
    image: np.ndarray
    gt: object


class DatasetLayoutError(FileNotFoundError):
    """The dataset root does not have the expected layout (the message names it)."""


@dataclasses.dataclass(frozen=True)
class EvalDataset:
    """A lazily read evaluation set.

    Attributes
    ----------
    name : str
    protocol : str
        ``"regions"`` or ``"semantic"``.
    num_classes : int or None
        Semantic classes (``None`` for ``regions``).
    ignore_label : int or None
    class_names : tuple of str
    items : tuple
        ``(id, image path, ground-truth path)`` per image, sorted by id.
    """

    name: str
    protocol: str
    num_classes: int | None
    ignore_label: int | None
    class_names: tuple
    items: tuple
    _read: Callable = dataclasses.field(repr=False, compare=False, default=None)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Sample]:
        for item in self.items:
            yield self._read(*item)

    def limited(self, limit: int | None) -> EvalDataset:
        """The first ``limit`` images (all when ``None``)."""
        if limit is None:
            return self
        if not (isinstance(limit, int) and limit > 0):
            raise ValueError(f"limit must be a positive int or None, got {limit!r}")
        return dataclasses.replace(self, items=self.items[:limit])


def default_data_root() -> Path:
    """``$WALKCUT_DATA`` if set, else ``../shared/data`` beside the repository root."""
    env = os.environ.get("WALKCUT_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def center_crop(a: np.ndarray) -> np.ndarray:
    """The centred square of side ``min(H, W)`` (a view)."""
    h, w = a.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return a[y0:y0 + s, x0:x0 + s]


def _read_rgb(path: Path) -> np.ndarray:
    from walkcut.runtime.imageio import check_pixel_limit, header_size

    size = header_size(path)
    if size is not None:  # the pixel limit (--max-pixels), before decoding
        check_pixel_limit(path, *size)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _read_label(path: Path) -> np.ndarray:
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise OSError(f"cannot read label map {path}")
    if lab.ndim == 3:
        raise ValueError(f"label map {path} has {lab.shape[2]} channels; expected a single-channel id map")
    return lab


def _layout_error(name: str, root: Path, missing: Path, layout: str) -> DatasetLayoutError:
    return DatasetLayoutError(
        f"{name}: {missing} not found under root {root}. Expected layout:\n{layout}")


def _paired_items(name: str, root: Path, img_dir: Path, pattern: str, gt_for, layout: str) -> list:
    """``(id, image path, ground-truth path)`` for every image matching ``pattern`` in ``img_dir``;
    a missing ground truth or an empty folder raises the layout error."""
    items = []
    for img in sorted(img_dir.glob(pattern)):
        gt = gt_for(img)
        if not gt.is_file():
            raise _layout_error(name, root, gt, layout)
        items.append((img.stem, img, gt))
    if not items:
        raise _layout_error(name, root, img_dir / pattern, layout)
    return items


def _check_split(name: str, split: str, allowed: tuple) -> None:
    if split not in allowed:
        raise ValueError(f"{name}: split must be one of {allowed}, got {split!r}")


_BSDS_LAYOUT = "  ROOT/images/<split>/<id>.jpg\n  ROOT/groundTruth/<split>/<id>.mat"


def _bsds500(root: Path, split: str, crop: bool) -> EvalDataset:
    _check_split("bsds500", split, ("train", "val", "test"))
    img_dir, gt_dir = root / "images" / split, root / "groundTruth" / split
    for d in (img_dir, gt_dir):
        if not d.is_dir():
            raise _layout_error("bsds500", root, d, _BSDS_LAYOUT)
    items = _paired_items("bsds500", root, img_dir, "*.jpg", lambda img: gt_dir / f"{img.stem}.mat", _BSDS_LAYOUT)

    def read(sid, img, gt):
        from scipy.io import loadmat  # only this loader needs it

        mat = loadmat(str(gt))
        if "groundTruth" not in mat:
            raise ValueError(f"{gt}: no 'groundTruth' variable (keys: {sorted(k for k in mat if not k.startswith('__'))})")
        cell = mat["groundTruth"]
        maps = tuple(np.asarray(cell[0, k]["Segmentation"][0, 0]) for k in range(cell.shape[1]))
        image = _read_rgb(img)
        if crop:
            image, maps = center_crop(image), tuple(center_crop(m) for m in maps)
        return Sample(sid, np.ascontiguousarray(image), tuple(np.ascontiguousarray(m) for m in maps))

    return EvalDataset("bsds500", "regions", None, None, (), tuple(items), read)


_CAMVID_LAYOUT = "  ROOT/<split>/<name>.png\n  ROOT/<split>annot/<name>.png  (0..10 classes, 11 = void)"


def _camvid(root: Path, split: str, crop: bool) -> EvalDataset:
    _check_split("camvid", split, ("train", "val", "test"))
    img_dir, gt_dir = root / split, root / f"{split}annot"
    for d in (img_dir, gt_dir):
        if not d.is_dir():
            raise _layout_error("camvid", root, d, _CAMVID_LAYOUT)
    items = _paired_items("camvid", root, img_dir, "*.png", lambda img: gt_dir / img.name, _CAMVID_LAYOUT)

    def read(sid, img, gt):
        lab = _read_label(gt).astype(np.uint8)
        lab = np.where(lab >= CAMVID_VOID, IGNORE, lab).astype(np.uint8)
        return _semantic_sample(sid, _read_rgb(img), lab, crop)

    return EvalDataset("camvid", "semantic", len(CAMVID_CLASSES), IGNORE, CAMVID_CLASSES, tuple(items), read)


_COCO_LAYOUT = ("  ROOT/images/val2017/<id>.jpg\n  ROOT/annotations/val2017/<id>.png  (fine ids, 255 unlabelled)\n"
                f"  ROOT/curated/val2017/{COCO_CURATED_VAL}  (one image id per line)")


def _cocostuff27(root: Path, split: str, crop: bool) -> EvalDataset:
    _check_split("cocostuff27", split, ("val",))
    listing = root / "curated" / "val2017" / COCO_CURATED_VAL
    img_dir, gt_dir = root / "images" / "val2017", root / "annotations" / "val2017"
    for p in (listing, img_dir, gt_dir):
        if not p.exists():
            raise _layout_error("cocostuff27", root, p, _COCO_LAYOUT)
    ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    items = []
    for sid in ids:
        img, gt = img_dir / f"{sid}.jpg", gt_dir / f"{sid}.png"
        for p in (img, gt):
            if not p.is_file():
                raise _layout_error("cocostuff27", root, p, _COCO_LAYOUT)
        items.append((sid, img, gt))
    if not items:
        raise _layout_error("cocostuff27", root, listing, _COCO_LAYOUT + "\n(the list is empty)")
    if len(items) != 2175:
        log.warning("cocostuff27: the curated list has %d images; the published protocol uses 2175", len(items))
    lut = coco_fine_to_coarse()

    def read(sid, img, gt):
        return _semantic_sample(sid, _read_rgb(img), lut[_read_label(gt).astype(np.uint8)], crop)

    return EvalDataset("cocostuff27", "semantic", 27, IGNORE, COCO27_CLASSES, tuple(items), read)


_CITYSCAPES_LAYOUT = ("  ROOT/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png\n"
                      "  ROOT/gtFine/<split>/<city>/<name>_gtFine_labelIds.png")


def _cityscapes(root: Path, split: str, crop: bool) -> EvalDataset:
    _check_split("cityscapes", split, ("train", "val"))
    img_dir, gt_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    for d in (img_dir, gt_dir):
        if not d.is_dir():
            raise _layout_error("cityscapes", root, d, _CITYSCAPES_LAYOUT)
    items = []
    suffix = "_leftImg8bit.png"
    for img in sorted(img_dir.glob(f"*/*{suffix}")):
        stem = img.name[: -len(suffix)]
        gt = gt_dir / img.parent.name / f"{stem}_gtFine_labelIds.png"
        if not gt.is_file():
            raise _layout_error("cityscapes", root, gt, _CITYSCAPES_LAYOUT)
        items.append((stem, img, gt))
    if not items:
        raise _layout_error("cityscapes", root, img_dir / "<city>" / f"*{suffix}", _CITYSCAPES_LAYOUT)
    if split == "val" and len(items) != 500:
        log.warning("cityscapes: %d val images found; the published protocol uses 500", len(items))
    lut = cityscapes_to_27()

    def read(sid, img, gt):
        return _semantic_sample(sid, _read_rgb(img), lut[_read_label(gt).astype(np.uint8)], crop)

    return EvalDataset("cityscapes", "semantic", 27, IGNORE, CITYSCAPES27_CLASSES, tuple(items), read)


def _semantic_sample(sid: str, image: np.ndarray, label: np.ndarray, crop: bool) -> Sample:
    if image.shape[:2] != label.shape:
        raise ValueError(f"{sid}: image {image.shape[:2]} and label map {label.shape} differ in size")
    if crop:
        image, label = center_crop(image), center_crop(label)
    return Sample(sid, np.ascontiguousarray(image), np.ascontiguousarray(label))


_LOADERS = {"bsds500": _bsds500, "camvid": _camvid, "cocostuff27": _cocostuff27, "cityscapes": _cityscapes}


def load_dataset(name: str, root=None, *, split: str = "val", crop: bool | None = None,
                 limit: int | None = None) -> EvalDataset:
    """Open an evaluation set.

    Parameters
    ----------
    name : {"bsds500", "camvid", "cocostuff27", "cityscapes"}
    root : path-like or None
        The dataset folder (layouts in the module notes). ``None``: ``default_data_root() / name``.
    split : str, keyword-only
        ``val`` by default; ``bsds500`` and ``camvid`` also take ``train``/``test``, ``cityscapes``
        takes ``train``; ``cocostuff27`` is ``val`` only (the curated list).
    crop : bool or None, keyword-only
        Square centre crop. ``None``: on for the semantic sets, off for ``bsds500``.
    limit : int or None, keyword-only
        Keep the first ``limit`` images.

    Raises
    ------
    DatasetLayoutError
        When ``root`` does not have the expected layout; the message shows it.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    if not isinstance(split, str):
        raise TypeError(f"split must be a str, got {type(split).__name__}")
    if crop is not None and not isinstance(crop, bool):
        raise TypeError(f"crop must be a bool or None, got {crop!r}")
    root = Path(root) if root is not None else default_data_root() / name
    if not root.is_dir():
        raise DatasetLayoutError(f"{name}: dataset root {root} is not a folder")
    if crop is None:
        crop = name != "bsds500"
    return _LOADERS[name](root, split, crop).limited(limit)
