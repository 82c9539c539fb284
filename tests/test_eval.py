"""walkcut.eval.evaluate and ``walkcut eval``: fake segmenters with known scores, fixture layouts, real data."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_datasets import make_bsds, make_cityscapes, make_coco

from walkcut.eval import datasets as D
from walkcut.eval import metrics as M
from walkcut.eval.evaluate import EvalReport, evaluate
from walkcut.runtime.draw import label_colors
from walkcut.runtime.imageio import atomic_write_bytes

DATA = Path(os.environ.get("WALKCUT_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


class Fixed:
    """A hierarchy_like with given default labels and a threshold -> labels function."""

    def __init__(self, labels, at):
        self.labels = labels
        self._at = at

    def labels_at(self, t):
        return self._at(t)


def halves(image):
    """Left/right halves: annotator 0 of the BSDS fixture exactly (split at w // 2)."""
    h, w = image.shape[:2]
    lab = np.zeros((h, w), np.int64)
    lab[:, w // 2:] = 1
    return lab


def test_regions_ods_picks_the_right_threshold(tmp_path):
    ds = D.load_dataset("bsds500", make_bsds(tmp_path / "bsds"))
    one = lambda img: np.zeros(img.shape[:2], np.int64)

    def segment(img):
        return Fixed(one(img), lambda t: halves(img) if t >= 0.5 else one(img))

    rep = evaluate(ds, segment, thresholds=[0.1, 0.5, 0.9], progress=False)
    s = rep.summary
    gts = next(iter(ds)).gt
    want_one = M.score_regions(one(gts[0]), gts)
    want_half = M.score_regions(halves(gts[0]), gts)
    assert s["covering"] == pytest.approx(want_one.covering)  # the default labels: one segment
    assert s["pri"] == pytest.approx(want_one.pri)
    assert s["covering_ods"] == pytest.approx(want_half.covering)
    assert s["covering_ods"] == pytest.approx(s["covering_ois"])
    assert s["voi_ods"] == pytest.approx(want_half.voi)
    assert rep.extra["ods_threshold"]["covering"] == 0.5  # first of the tied best thresholds
    assert rep.per_image[0]["ois_threshold"] == 0.9       # the benchmark keeps the last tie per image
    assert [p["id"] for p in rep.per_image] == ["1", "2"]


def test_regions_without_sweep_is_the_default(tmp_path):
    ds = D.load_dataset("bsds500", make_bsds(tmp_path))
    rep = evaluate(ds, lambda img: Fixed(halves(img), None), progress=False)
    assert rep.summary["covering_ods"] == pytest.approx(rep.summary["covering"])
    assert rep.summary["voi_ois"] == pytest.approx(rep.summary["voi"])


def test_semantic_perfect_and_one_segment(tmp_path):
    ds = D.load_dataset("cocostuff27", make_coco(tmp_path))
    truth = {s.id: s.gt for s in ds}

    def perfect(img):  # the ground truth itself, ignored pixels included as one more segment
        gt = next(g for g in truth.values() if g.shape == img.shape[:2])
        return Fixed(gt.astype(np.int64) * 3 + 1, lambda t: np.zeros(img.shape[:2], np.int64))

    rep = evaluate(ds, perfect, thresholds=[0.3], progress=False)
    assert rep.summary["miou"] == pytest.approx(1.0)
    assert rep.summary["pixel_accuracy"] == pytest.approx(1.0)
    # One segment: matched to one of the two classes (person 4 px/row vs sky 4 px/row after the crop),
    # so accuracy is 1/2 and one class of the two has IoU 1/2.
    by_t = rep.extra["by_threshold"][0]
    assert by_t["pixel_accuracy"] == pytest.approx(0.5)
    assert by_t["miou"] == pytest.approx(0.25)
    assert rep.extra["class_iou"]["person"] == pytest.approx(1.0)
    assert rep.extra["class_iou"]["wall"] is None or np.isnan(rep.extra["class_iou"]["wall"])


def test_slic_segmenter_report_files(tmp_path):
    skimage = pytest.importorskip("skimage.segmentation")
    ds = D.load_dataset("cityscapes", make_cityscapes(tmp_path / "cs", h=24, w=48))

    def slic(img):
        return Fixed(skimage.slic(img, n_segments=6, start_label=0),
                     lambda t: skimage.slic(img, n_segments=int(2 + 10 * t), start_label=0))

    rep = evaluate(ds, slic, thresholds=[0.2, 0.8], progress=False, extremes=1)
    assert isinstance(rep, EvalReport) and rep.summary["images"] == 2
    assert 0.0 <= rep.summary["miou"] <= 1.0
    out = rep.write_json(tmp_path / "out" / "r.json")
    data = json.loads(out.read_text())
    assert data["summary"]["images"] == 2 and len(data["per_image"]) == 2
    assert {"miou", "pixel_accuracy"} <= set(data["summary"]) and "by_threshold" in data
    png = rep.write_grid(tmp_path / "out" / "g.png")
    grid = cv2.imread(str(png))
    assert grid is not None and grid.shape[0] > 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["g.png", "r.json"]  # no temp files left
    assert "miou" in rep.table()


def test_bad_segmenter_output_is_named(tmp_path):
    ds = D.load_dataset("bsds500", make_bsds(tmp_path))
    with pytest.raises(ValueError, match="shape"):
        evaluate(ds, lambda img: Fixed(np.zeros((2, 2), int), None), progress=False)
    with pytest.raises(TypeError, match="integer"):
        evaluate(ds, lambda img: Fixed(np.zeros(img.shape[:2]), None), progress=False)
    with pytest.raises(ValueError, match="thresholds"):
        evaluate(ds, lambda img: None, thresholds=[], progress=False)
    with pytest.raises(TypeError, match="EvalDataset"):
        evaluate([1, 2], lambda img: None)


def test_atomic_write_and_colors(tmp_path):
    p = atomic_write_bytes(tmp_path / "a" / "x.bin", b"123", make_parents=True)
    assert p.read_bytes() == b"123" and os.listdir(tmp_path / "a") == ["x.bin"]
    c = label_colors(np.array([[5, 5], [9, 5]]))
    assert c.shape == (2, 2, 3) and (c[0, 0] == c[0, 1]).all() and (c[0, 0] != c[1, 0]).any()


# ``walkcut eval`` end to end on the walkcut pixels source.

def _cli(argv):
    pytest.importorskip("walkcut.runtime.segmenter")
    from walkcut.cli import main

    return main(argv)


def test_cli_eval_fixture_layouts(tmp_path, capsys):
    make_coco(tmp_path / "coco", h=48, w=64)
    out = tmp_path / "res.json"
    rc = _cli(["eval", "cocostuff27", "--root", str(tmp_path / "coco"), "--json", str(out),
               "--gallery", str(tmp_path / "grid.png"), "--no-progress", "--grid", "8"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "miou" in printed and "pixel_accuracy" in printed
    data = json.loads(out.read_text())
    assert data["summary"]["images"] == 2 and 0 <= data["summary"]["miou"] <= 1
    assert cv2.imread(str(tmp_path / "grid.png")) is not None

    make_cityscapes(tmp_path / "cs", h=32, w=64)
    assert _cli(["eval", "cityscapes", "--root", str(tmp_path / "cs"), "--no-progress", "--grid", "8",
                 "--thresholds", "0.2,0.5"]) == 0
    assert "best_threshold" in capsys.readouterr().out


def test_cli_eval_missing_engine_is_one_line(tmp_path, capsys):
    make_coco(tmp_path / "coco", h=16, w=16)
    rc = _cli(["eval", "cocostuff27", "--root", str(tmp_path / "coco"), "--no-progress",
               "--engine", str(tmp_path / "missing.onnx")])
    assert rc == 2 and "missing.onnx" in capsys.readouterr().err


def test_cli_eval_wrong_root(tmp_path, capsys):
    assert _cli(["eval", "cityscapes", "--root", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "leftImg8bit" in err and "Traceback" not in err


@pytest.mark.data
@pytest.mark.skipif(not (DATA / "bsds500").is_dir(), reason="../shared/data/bsds500 is absent")
def test_cli_eval_real_bsds500(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert _cli(["eval", "bsds500", "--limit", "2", "--no-progress", "--json", str(out),
                 "--thresholds", "0.1,0.5"]) == 0
    s = json.loads(out.read_text())["summary"]
    for k in ("covering", "pri", "voi", "covering_ods", "covering_ois", "pri_ods", "pri_ois", "voi_ods", "voi_ois"):
        assert np.isfinite(s[k])
    assert s["covering_ois"] >= s["covering_ods"] - 1e-12 and s["voi_ois"] <= s["voi_ods"] + 1e-12


@pytest.mark.data
@pytest.mark.skipif(not (DATA / "camvid").is_dir(), reason="../shared/data/camvid is absent")
def test_cli_eval_real_camvid(tmp_path):
    out = tmp_path / "c.json"
    assert _cli(["eval", "camvid", "--limit", "2", "--no-progress", "--json", str(out)]) == 0
    s = json.loads(out.read_text())["summary"]
    assert 0 < s["miou"] < 1 and 0 < s["pixel_accuracy"] < 1
