"""The command line as a newcomer meets it: one error policy, no lost output, inputs, help texts.

Most cases call ``walkcut.cli.main(argv)`` in-process (fast); those that depend on the real process
(stderr logging, a blocked import, ``python -m walkcut``) run a subprocess.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import walkcut.cli.export as cli_export
import walkcut.cli.segment as cli_segment
from walkcut.cli import build_parser, main
from walkcut.cli.errors import plural
from walkcut.runtime.imageio import read_image

REPO = Path(__file__).resolve().parents[1]
COFFEE = REPO / "examples" / "coffee.jpg"


def two_regions(h=24, w=32, seed=0) -> np.ndarray:
    """(H, W, 3) uint8 BGR: a red left half and a blue right half, lightly noisy."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float64)
    img[:, : w // 2] = (30, 30, 200)
    img[:, w // 2 :] = (200, 60, 30)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def write_image(path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), two_regions(**kw))
    return path


def segment(*argv) -> int:
    return main(["segment", *map(str, argv), "--grid", "8"])


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("walkcut: error: ") and "Traceback" not in err
    return lines[0]


# --- usage errors: exit 2, one line, before any work and before any folder -----------------------

USAGE_CASES = {
    "grid 1": (["--grid", "1"], "--grid"),
    "power 0": (["--power", "0"], "--power"),
    "threshold inf": (["--threshold", "inf"], "finite"),
    "threshold nan": (["--threshold", "nan"], "finite"),
    "max-segments 0": (["--max-segments", "0"], "--max-segments"),
    "min-size -3": (["--min-size", "-3"], "--min-size"),
    "backend trt with onnx": (["--backend", "trt", "--engine", "{tmp}/m.onnx"], ".engine"),
    "backend without engine": (["--backend", "ort-cpu"], "--engine"),
    "missing engine": (["--engine", "{tmp}/none.onnx"], "none.onnx"),
}


@pytest.mark.parametrize("case", sorted(USAGE_CASES))
def test_bad_option_values_are_one_usage_error_before_any_work(case, tmp_path, capsys, monkeypatch):
    argv, needle = USAGE_CASES[case]
    (tmp_path / "m.onnx").write_bytes(b"never read")
    image = write_image(tmp_path / "in" / "x.png")
    out = tmp_path / "out"
    # Any work at all (a source, a Segmenter) would be a failure of the policy.
    monkeypatch.setattr(cli_segment, "Segmenter", lambda *a, **k: pytest.fail("work started"))
    rc = main(["segment", str(image), "--out", str(out), *[a.format(tmp=tmp_path) for a in argv]])
    assert rc == 2
    assert needle in one_error_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("out", ["file/sub", "/proc/walkcut-out"])
def test_unwritable_out_is_a_usage_error(out, tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    target = out if out.startswith("/") else str(tmp_path / out)
    rc = main(["segment", str(write_image(tmp_path / "x.png")), "--out", target])
    assert rc == 2 and "--out" in one_error_line(capsys.readouterr().err)
    assert not Path(target).exists()


def test_usage_error_from_python_m_walkcut_is_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "walkcut", "segment", str(COFFEE), "--out", str(tmp_path / "o"),
                          "--power", "0"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    one_error_line(run.stderr)


def test_abbreviated_options_are_refused(tmp_path, capsys):
    # --gri would silently mean --grid with argparse's default allow_abbrev.
    assert main(["segment", str(COFFEE), "--out", str(tmp_path / "o"), "--gri", "8"]) == 2
    assert "--gri" in one_error_line(capsys.readouterr().err)


# --- tracebacks only on request ------------------------------------------------------------------

def _boom(args):
    raise RuntimeError("the source broke")


@pytest.mark.parametrize("flag", [[], ["--debug"], ["-v"]])
def test_unexpected_errors_are_one_line_unless_debug(flag, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli_segment, "source_spec", _boom)
    rc = main([*flag, "segment", str(write_image(tmp_path / "x.png")), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "walkcut: error: the source broke" in err
    assert ("Traceback" in err) == bool(flag)
    if not flag:
        assert "--debug" in one_error_line(err)


# --- batches: bad files one line each, the rest processed, exit 1 --------------------------------

def test_bad_inputs_in_a_batch_are_one_line_each(tmp_path, capsys):
    good = write_image(tmp_path / "good.png")
    (tmp_path / "fake.png").write_text("not an image")
    (tmp_path / "empty").mkdir()
    rc = segment(tmp_path / "fake.png", tmp_path / "missing.jpg", tmp_path / "empty", good, "--out", tmp_path / "o")
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("walkcut: error:")]
    assert rc == 1 and len(errors) == 3 and "Traceback" not in captured.err
    assert "fake.png" in captured.err and "missing.jpg" in captured.err and "no image files" in captured.err
    assert "segmented 1 of 4 images" in captured.out and "3 failed" in captured.out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["good_labels.png", "good_overlay.png"]


# --- never lose output ---------------------------------------------------------------------------

def test_same_stem_in_two_folders_mirrors_the_folders(tmp_path):
    a = write_image(tmp_path / "in" / "a" / "x.jpg", seed=1)
    b = write_image(tmp_path / "in" / "b" / "x.png", seed=2)
    assert segment(tmp_path / "in", "--out", tmp_path / "o") == 0  # a folder: names below it
    written = sorted(str(p.relative_to(tmp_path / "o")) for p in (tmp_path / "o").rglob("*.png"))
    assert written == ["a/x_labels.png", "a/x_overlay.png", "b/x_labels.png", "b/x_overlay.png"]
    # Two files given by themselves are named by their file names (never by a common folder, which
    # would move every output when one more input is given); the clash keeps the extensions.
    assert segment(a, b, "--out", tmp_path / "o2") == 0
    written = sorted(str(p.relative_to(tmp_path / "o2")) for p in (tmp_path / "o2").rglob("*.png"))
    assert written == ["x.jpg_labels.png", "x.jpg_overlay.png", "x.png_labels.png", "x.png_overlay.png"]


def test_same_stem_in_one_folder_keeps_the_extension(tmp_path):
    a = write_image(tmp_path / "x.jpg")
    b = write_image(tmp_path / "x.png")
    assert segment(a, b, "--out", tmp_path / "o") == 0
    assert (tmp_path / "o" / "x.jpg_labels.png").exists() and (tmp_path / "o" / "x.png_labels.png").exists()


def test_existing_outputs_are_refused_skipped_or_overwritten(tmp_path, capsys):
    img = write_image(tmp_path / "x.png")
    out = tmp_path / "o"
    assert segment(img, "--out", out) == 0
    labels = out / "x_labels.png"
    labels.write_bytes(b"keep me")
    capsys.readouterr()
    assert segment(img, "--out", out) == 2
    assert "--overwrite" in one_error_line(capsys.readouterr().err)
    assert labels.read_bytes() == b"keep me"
    second = write_image(tmp_path / "y.png")
    # A file walkcut did not write under an output's name is not "done": resume refuses it.
    assert segment(img, second, "--out", out, "--skip-existing") == 2
    assert "walkcut did not write it" in one_error_line(capsys.readouterr().err)
    assert labels.read_bytes() == b"keep me" and not (out / "y_labels.png").exists()
    assert segment(img, "--out", out, "--overwrite") == 0
    assert segment(img, second, "--out", out, "--skip-existing") == 0
    captured = capsys.readouterr()
    assert "skipping 1 image whose outputs exist" in captured.err and (out / "y_labels.png").exists()
    assert cv2.imread(str(labels), cv2.IMREAD_UNCHANGED).dtype == np.uint16


def test_help_states_the_naming_rule():
    text = _help_of("segment")
    assert "--overwrite" in text and "--skip-existing" in text and "a/x.jpg" in text and "recursively" in text


# --- inputs: files, folders (recursive, images only, sorted), globs ------------------------------

def test_folders_are_searched_recursively_and_globs_expanded(tmp_path, capsys):
    root = tmp_path / "photos"
    for rel in ("b.png", "sub/a.jpg", "sub/deeper/c.bmp"):
        write_image(root / rel)
    (root / "notes.txt").write_text("not an image")
    assert segment(root, "--out", tmp_path / "o1") == 0
    names = sorted(str(p.relative_to(tmp_path / "o1")) for p in (tmp_path / "o1").rglob("*_labels.png"))
    assert names == ["b_labels.png", "sub/a_labels.png", "sub/deeper/c_labels.png"]
    assert "segmented 3 of 3 images" in capsys.readouterr().out
    assert segment(str(root / "**" / "*.jpg"), "--out", tmp_path / "o2") == 0
    assert [p.name for p in (tmp_path / "o2").rglob("*_labels.png")] == ["a_labels.png"]


def test_rgba_is_composited_onto_white_and_said_once(tmp_path):
    rgba = np.zeros((24, 32, 4), np.uint8)  # BGRA: black under full transparency on the left
    rgba[:, 16:] = (200, 60, 30, 255)
    for name in ("a.png", "b.png"):
        assert cv2.imwrite(str(tmp_path / name), rgba)
    rgb = read_image(tmp_path / "a.png")
    assert (rgb[:, :16] == 255).all() and tuple(rgb[0, 20]) == (30, 60, 200)
    run = subprocess.run([sys.executable, "-m", "walkcut", "segment", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                          "--out", str(tmp_path / "o"), "--grid", "8"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("alpha channel") == 1 and "composited onto white" in run.stderr


# --- video ---------------------------------------------------------------------------------------

def test_video_of_a_non_video_fails_and_writes_nothing(tmp_path, capsys):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    out = tmp_path / "out.mp4"
    rc = main(["video", str(text), "--out", str(out), "--grid", "8"])
    err = capsys.readouterr().err
    assert rc != 0 and "notes.mp4" in err and "walkcut: error:" in err and "Traceback" not in err
    assert not out.exists() and list(tmp_path.glob(".out*")) == []


@pytest.mark.parametrize("name", ["notes.txt", "photo.png"])
def test_video_of_text_or_an_image_is_refused(name, tmp_path, capsys):
    path = tmp_path / name
    if name.endswith(".png"):
        write_image(path)
    else:
        path.write_text("FFmpeg would render this text as frames\n" * 50)
    out = tmp_path / "out.mp4"
    assert main(["video", str(path), "--out", str(out), "--grid", "8"]) == 2
    assert "not a video" in one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_video_with_zero_frames_fails_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from walkcut.runtime.video import io as video_io

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0" * 64)

    class NoFrames:  # a container that opens but decodes no frame
        def isOpened(self):
            return True

        def read(self):
            return False, None

        def get(self, prop):
            return 0.0

        def release(self):
            pass

    monkeypatch.setattr(video_io.cv2, "VideoCapture", lambda target: NoFrames())
    out = tmp_path / "out.mp4"
    rc = main(["video", str(clip), "--out", str(out), "--grid", "8"])
    err = capsys.readouterr().err
    assert rc == 1 and "no frames" in err and not out.exists()


@pytest.mark.parametrize("name", ["x.txt", "x"])
def test_video_out_with_another_extension_is_a_usage_error(name, tmp_path, capsys):
    rc = main(["video", str(COFFEE), "--out", str(tmp_path / name)])
    assert rc == 2 and ".mp4" in one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_video_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"an earlier result")
    assert main(["video", str(COFFEE), "--out", str(out)]) == 2
    assert "--overwrite" in one_error_line(capsys.readouterr().err)
    assert out.read_bytes() == b"an earlier result"


# --- export --------------------------------------------------------------------------------------

def test_export_without_the_extra_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"  # import torch now raises ImportError
            "from walkcut.cli import main\n"
            f"raise SystemExit(main(['export', '--model', 'x', '--out', {str(tmp_path / 'm.onnx')!r}]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert 'pip install "walkcut[export]"' in one_error_line(run.stderr)


def test_hub_reachability_is_checked_quickly(monkeypatch):
    assert cli_export.HUB_TIMEOUT_S <= 5  # one short socket timeout, never minutes of retries
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed local port: refused at once
    assert cli_export.hub_reachable(timeout=1.0) is False


@pytest.mark.parametrize("cached", [False, True])
def test_export_hub_id_without_network_goes_offline_at_once(cached, tmp_path, capsys, monkeypatch):
    pytest.importorskip("diffusers")
    monkeypatch.setattr(cli_export, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(cli_export, "hub_id_cached", lambda model: cached)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    seen = {}
    import walkcut.export.loading as loading

    real = loading.load_components

    def spy(model, **kw):
        seen.update(kw)
        return real(model, **kw)

    monkeypatch.setattr("walkcut.export.api.load_components", spy)
    rc = main(["export", "--model", "walkcut-tests/no-such-model", "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and os.environ["HF_HUB_OFFLINE"] == "1"
    assert "no network" in err and "walkcut-tests/no-such-model" in err and "HF_TOKEN" in err
    # Not in the cache: answered before loading anything; in the cache: loaded from it only.
    assert bool(seen) == cached and (not cached or seen["local_files_only"] is True)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Retrying" not in err and len(lines) == len(set(lines))  # nothing retried, nothing twice
    assert not (tmp_path / "m.onnx").exists()


def test_hub_id_cached_reads_the_local_cache(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    assert cli_export.hub_id_cached("walkcut-tests/no-such-model") is False
    snap = tmp_path / "models--walkcut-tests--tiny" / "snapshots" / "abc" / "unet"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (tmp_path / "models--walkcut-tests--tiny" / "refs").mkdir()
    (tmp_path / "models--walkcut-tests--tiny" / "refs" / "main").write_text("abc")
    assert cli_export.hub_id_cached("walkcut-tests/tiny") is True


def test_export_out_must_be_onnx(tmp_path, capsys):
    assert main(["export", "--model", "x", "--out", str(tmp_path / "m.txt")]) == 2
    assert ".onnx" in one_error_line(capsys.readouterr().err)


# --- help texts ----------------------------------------------------------------------------------

def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"": parser, **action.choices}


def _help_of(name: str) -> str:
    return _subparsers()[name].format_help()


@pytest.mark.parametrize("name", ["", "segment", "video", "eval", "bench", "export"])
def test_help_texts(name):
    parser = _subparsers()[name]
    text = parser.format_help()
    assert "``" not in text and ":func:" not in text and ":mod:" not in text  # no reStructuredText
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help and action.help != argparse.SUPPRESS, f"{name}: {action.option_strings or action.dest}"
    assert parser.allow_abbrev is False


def test_grid_and_the_eval_picture_option_share_no_prefix():
    options = [s for a in _subparsers()["eval"]._actions for s in a.option_strings]
    assert "--grid" in options
    assert [s for s in options if s != "--grid" and s.startswith("--grid")] == []


def test_help_via_python_m_walkcut():
    run = subprocess.run([sys.executable, "-m", "walkcut", "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "segment" in run.stdout and "export" in run.stdout


def test_plural():
    assert plural(1, "image") == "1 image" and plural(0, "image") == "0 images" and plural(2, "PNG file") == "2 PNG files"


def test_single_image_message_is_singular(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "flat.png"), two_regions())
    assert segment(tmp_path / "flat.png", "--out", tmp_path / "o", "--threshold", "0") == 0  # no split
    out = capsys.readouterr().out
    assert re.search(r"flat\.png: 1 segment -> ", out), out


def test_readme_coarse_is_coarser_than_fine():
    """The README's coarse/fine example really is coarse and fine on examples/coffee.jpg."""
    from walkcut import Segmenter

    readme = (REPO / "README.md").read_text()
    coarse = float(re.search(r"coarse = seg\.segment\(threshold=([0-9.]+)\)", readme).group(1))
    fine = float(re.search(r"fine = seg\.segment\(threshold=([0-9.]+)\)", readme).group(1))
    seg = Segmenter().set_image(read_image(COFFEE))
    n_coarse, n_fine = seg.segment(threshold=coarse).n_segments, seg.segment(threshold=fine).n_segments
    assert n_coarse < n_fine / 2, (n_coarse, n_fine)
    assert f"# {n_coarse} segments" in readme and f"# {n_fine} segments" in readme
