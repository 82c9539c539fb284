"""Bad and unusual inputs: one-line errors naming the file, non-zero exit, no partial outputs, and the
rest of the batch still processed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
from test_backends import build_fake_model
from walkcut.runtime.imageio import ImageReadError, read_image

from walkcut.cli import main


def good_image(h=60, w=80):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (20, 40, 200)
    img[:, w // 2 :] = (200, 180, 30)
    return img


def make_inputs(folder):
    """Every bad case and every unusual-but-valid case, as files in ``folder``."""
    folder.mkdir()
    bad, ok = {}, {}
    bad["missing"] = folder / "missing.jpg"
    bad["directory"] = folder / "adir.png"
    bad["directory"].mkdir()
    bad["empty"] = folder / "empty.png"
    bad["empty"].write_bytes(b"")
    jpeg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8))[1].tobytes()
    bad["truncated"] = folder / "truncated.jpg"
    bad["truncated"].write_bytes(jpeg[: len(jpeg) // 2])
    bad["text"] = folder / "notes.png"
    bad["text"].write_text("these are not pixels\n")
    ok["good"] = folder / "good.png"
    cv2.imwrite(str(ok["good"]), good_image())
    ok["tiny"] = folder / "one.png"
    cv2.imwrite(str(ok["tiny"]), np.full((1, 1, 3), 128, np.uint8))
    ok["gray"] = folder / "gray.png"
    cv2.imwrite(str(ok["gray"]), good_image()[:, :, 0])
    ok["rgba"] = folder / "rgba.png"
    cv2.imwrite(str(ok["rgba"]), np.dstack([good_image(), np.full((60, 80), 200, np.uint8)]))
    ok["deep"] = folder / "deep.png"
    cv2.imwrite(str(ok["deep"]), good_image().astype(np.uint16) * 257)
    return bad, ok


def outputs(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("case, problem", [
    ("missing", "no such file"), ("directory", "is a directory"), ("empty", "empty"),
    ("truncated", "not a readable image"), ("text", "not a readable image"),
])
def test_read_image_names_file_and_problem(tmp_path, case, problem):
    bad, _ = make_inputs(tmp_path / "in")
    with pytest.raises(ImageReadError, match=problem) as info:
        read_image(bad[case])
    assert str(bad[case]) in str(info.value)


@pytest.mark.parametrize("case", ["tiny", "gray", "rgba", "deep"])
def test_unusual_valid_images_become_rgb8(tmp_path, case):
    _, ok = make_inputs(tmp_path / "in")
    img = read_image(ok[case])
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    if case == "deep":
        np.testing.assert_array_equal(img, good_image()[:, :, ::-1])


def test_batch_with_bad_files_processes_the_rest(tmp_path, capsys):
    bad, ok = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    files = [bad["missing"], ok["good"], bad["directory"], bad["empty"], ok["tiny"], bad["truncated"],
             ok["gray"], bad["text"], ok["rgba"], ok["deep"]]
    rc = main(["segment", *map(str, files), "--out", str(out), "--grid", "8"])
    assert rc == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("walkcut: error")]
    assert len(err) == len(bad)  # exactly one line per bad file
    for path in bad.values():
        assert sum(str(path) in line for line in err) == 1
    expected = sorted(f"{p.stem}_{kind}.png" for p in ok.values() for kind in ("labels", "overlay"))
    assert outputs(out) == expected  # no partial outputs, no temporaries
    for p in ok.values():
        src = read_image(p)
        labels = cv2.imread(str(out / f"{p.stem}_labels.png"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == src.shape[:2] and labels.dtype == np.uint16


def test_not_a_walkcut_model_is_a_one_line_error(tmp_path, capsys):
    model = tmp_path / "plain.onnx"
    build_fake_model(model, metadata=False)
    img = tmp_path / "good.png"
    cv2.imwrite(str(img), good_image())
    rc = main(["segment", str(img), "--out", str(tmp_path / "out"), "--engine", str(model)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(model) in err[0] and "not a walkcut model" in err[0]
    assert outputs(tmp_path / "out") == []


def test_text_file_as_model_is_a_one_line_error(tmp_path, capsys):
    model = tmp_path / "model.onnx"
    model.write_text("hello\n")
    rc = main(["segment", str(tmp_path / "x.png"), "--out", str(tmp_path / "out"), "--engine", str(model)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an ONNX model" in err[0]


def test_contract_the_runtime_cannot_honour_says_what_to_reexport(tmp_path, capsys):
    model = tmp_path / "odd.onnx"
    build_fake_model(model, contract_overrides={"normalization": "yuv_centered"})
    rc = main(["segment", str(tmp_path / "x.png"), "--out", str(tmp_path / "out"), "--engine", str(model)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "normalization 'yuv_centered'" in err[0] and "re-export" in err[0]


def test_nan_engine_output_fails_each_file_without_outputs(tmp_path, capsys):
    model = tmp_path / "nan.onnx"
    build_fake_model(model, nan=True)
    imgs = []
    for name in ("a.png", "b.png"):
        imgs.append(tmp_path / name)
        cv2.imwrite(str(imgs[-1]), good_image())
    rc = main(["segment", *map(str, imgs), "--out", str(tmp_path / "out"), "--engine", str(model)])
    assert rc == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("walkcut: error")]
    assert len(err) == 2 and all("nan.onnx" in line and "NaN" in line for line in err)
    assert outputs(tmp_path / "out") == []


def test_engine_model_segments_a_batch(tmp_path, capsys):
    model = tmp_path / "fake.onnx"
    build_fake_model(model)
    bad, ok = make_inputs(tmp_path / "in")
    rc = main(["segment", str(ok["good"]), str(bad["text"]), str(ok["tiny"]), "--out", str(tmp_path / "out"),
               "--engine", str(model), "--backend", "ort-cpu"])
    assert rc == 1
    assert outputs(tmp_path / "out") == ["good_labels.png", "good_overlay.png", "one_labels.png", "one_overlay.png"]
    assert "segmented 2 of 3 images" in capsys.readouterr().out


BIG = textwrap.dedent("""
    import resource, sys
    from walkcut.cli import main
    rc = main(sys.argv[1:])
    print("PEAK_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    sys.exit(rc)
""")


@pytest.mark.slow
def test_12000_square_image_keeps_memory_bounded(tmp_path):
    side = 12000
    img = np.empty((side, side, 3), np.uint8)
    img[:] = (200, 60, 40)
    img[:, side // 2 :] = (40, 80, 200)
    img[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = (50, 200, 60)
    path = tmp_path / "huge.jpg"
    path.write_bytes(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 70])[1].tobytes())
    del img
    out = tmp_path / "out"
    # 144 Mpx is above the default pixel limit (89.5 Mpx): raised, as a user with such photos would.
    proc = subprocess.run([sys.executable, "-c", BIG, "segment", str(path), "--out", str(out),
                           "--max-pixels", str(side * side)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    peak_mb = int(proc.stdout.split("PEAK_MB")[1])
    # The decoded image alone is 432 MB and the int64 label map 1.15 GB; a bounded pipeline stays
    # within a few copies of that (it took 7.5 GB before the source and upsampler were capped).
    assert peak_mb < 3500, peak_mb
    labels = cv2.imread(str(out / "huge_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (side, side)
    assert len(np.unique(labels[::100, ::100])) >= 2


def test_segmenter_size_caps_keep_full_resolution_labels():
    from walkcut.runtime.segmenter import Segmenter
    from walkcut.runtime.sources.pixels import PixelSource

    img = cv2.resize(good_image(), (300, 200), interpolation=cv2.INTER_NEAREST)
    capped = Segmenter(PixelSource(grid=8), max_source_side=64, max_label_side=64).set_image(img).segment()
    full = Segmenter(PixelSource(grid=8)).set_image(img).segment()
    assert capped.labels.shape == full.labels.shape == (200, 300)
    assert (capped.labels[:, :140] == capped.labels[0, 0]).all() and capped.labels[0, 0] != capped.labels[0, -1]
    with pytest.raises(ValueError, match="max_source_side"):
        Segmenter(max_source_side=10)
