"""Per-model cut defaults: an exported model's contract (version 2) may carry ``cut_defaults``; the
Segmenter and every segmenting command use them where no flag or preset sets the value.

Order: explicit flag (or argument) > --preset > the model's cut_defaults > command / package default.
"""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
from test_backends import build_fake_model, quadrant_image
from test_video import write_clip
from walkcut.runtime import defaults
from walkcut.runtime.segmenter import Segmenter, resolve_cut_settings
from walkcut.runtime.sources.contract import ContractError
from walkcut.runtime.sources.engine import EngineSource, EngineSpec

from walkcut.cli import build_parser, main
from walkcut.cli.args import cut_options, cut_settings, source_spec

onnx = pytest.importorskip("onnx")

#: The fake model's own settings: 2 segments at most (the quadrant image has 4), nearest upsampling.
MODEL_DEFAULTS = {"max_segments": 2, "upsample": "nearest"}


@pytest.fixture
def tuned_model(tmp_path):
    path = tmp_path / "tuned.onnx"
    build_fake_model(path, contract_overrides={"cut_defaults": MODEL_DEFAULTS})
    return path


@pytest.fixture
def plain_model(tmp_path):
    path = tmp_path / "plain.onnx"
    build_fake_model(path)
    return path


# --- Python API ----------------------------------------------------------------------------------

def test_segmenter_uses_the_models_cut_defaults(tuned_model):
    source = EngineSource.from_path(tuned_model, backend="ort-cpu")
    assert dict(source.cut_defaults) == MODEL_DEFAULTS
    seg = Segmenter(source).set_image(quadrant_image())
    assert seg.segment().n_segments == 2
    # The model's upsampling too: the same labels as asking for it explicitly.
    np.testing.assert_array_equal(seg.segment().labels, seg.segment(max_segments=2, upsample="nearest").labels)
    settings = seg.cut_settings()
    assert (settings["max_segments"].value, settings["max_segments"].origin) == (2, "model")
    assert (settings["mode"].value, settings["mode"].origin) == (defaults.MODE, "default")


def test_explicit_arguments_beat_the_model(tuned_model):
    seg = Segmenter(EngineSource.from_path(tuned_model, backend="ort-cpu")).set_image(quadrant_image())
    assert seg.segment(max_segments=4).n_segments == 4
    assert seg.cut_settings(max_segments=4)["max_segments"].origin == "argument"
    # The constructor's upsample is an explicit choice too.
    assert Segmenter(seg.source, upsample="joint-bilateral").cut_settings()["upsample"].value == "joint-bilateral"


def test_a_model_without_cut_defaults_gets_the_package_defaults(plain_model):
    seg = Segmenter(EngineSource.from_path(plain_model, backend="ort-cpu")).set_image(quadrant_image())
    assert seg.segment().n_segments == 4
    assert {s.origin for s in seg.cut_settings().values()} == {"default"}


def test_resolution_order():
    s = resolve_cut_settings(("--threshold", {"threshold": 0.3}), ("--preset street", {"threshold": "auto-mincut",
                             "max_segments": 32}), ("model", {"threshold": 0.1, "max_segments": 4, "mode": "cosine"}),
                             ("default", {"max_segments": 16}))
    assert {k: (v.value, v.origin) for k, v in s.items()} == {
        "mode": ("cosine", "model"), "power": (1, "default"), "threshold": (0.3, "--threshold"),
        "min_size": (None, "default"), "max_segments": (32, "--preset street"),
        "upsample": ("joint-bilateral", "default")}


def test_a_model_with_a_bad_cut_setting_is_refused_when_read(tmp_path):
    path = tmp_path / "bad.onnx"
    contract = build_fake_model(path)
    model = onnx.load(str(path))
    del model.metadata_props[:]
    d = json.loads(contract.to_json())
    d["cut_defaults"] = {"threshold": "auto-magic"}
    model.metadata_props.add(key="walkcut.contract", value=json.dumps(d))
    onnx.save(model, str(path))
    with pytest.raises(ContractError, match=r"bad\.onnx: cut_defaults: threshold must be .*'auto-magic'"):
        _ = EngineSpec(path).contract
    assert main(["segment", str(path), "--out", str(tmp_path / "o"), "--engine", str(path)]) == 2


# --- the command line ----------------------------------------------------------------------------

def _image(tmp_path):
    path = tmp_path / "quads.png"
    cv2.imwrite(str(path), cv2.cvtColor(quadrant_image(), cv2.COLOR_RGB2BGR))
    return path


def _segments(out):
    return int(cv2.imread(str(out / "quads_labels.png"), cv2.IMREAD_UNCHANGED).max()) + 1


@pytest.mark.parametrize("extra, segments, origin", [
    ([], 2, "max_segments=2 (model)"),
    (["--max-segments", "4"], 4, "max_segments=4 (--max-segments)"),
    (["--preset", "default"], 4, "max_segments=32 (--preset default)"),  # a preset is a flag too
])
def test_segment_command_uses_the_model_unless_told(tmp_path, tuned_model, caplog, extra, segments, origin):
    image, out = _image(tmp_path), tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="walkcut.cli.args"):
        assert main(["segment", str(image), "--out", str(out), "--engine", str(tuned_model), *extra]) == 0
    assert _segments(out) == segments
    assert origin in caplog.text and "upsample=nearest (model)" in caplog.text
    assert f"mode={defaults.MODE} (default)" in caplog.text


def test_verbose_flag_shows_where_each_setting_came_from(tmp_path, tuned_model):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "walkcut", "-v", "segment", str(_image(tmp_path)), "--out",
                           str(tmp_path / "out"), "--engine", str(tuned_model), "--threshold", "0.3"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "cut settings: mode=walk (default)" in done.stderr
    assert "threshold=0.3 (--threshold)" in done.stderr and "max_segments=2 (model)" in done.stderr


@pytest.mark.parametrize("command", [["segment", "x.png", "--out", "o"], ["batch", "x.png", "--out", "o"],
                                     ["video", "x.mp4"], ["eval", "bsds500"], ["bench"]])
def test_every_segmenting_command_resolves_the_same_way(tuned_model, command):
    args = build_parser().parse_args(command + ["--engine", str(tuned_model)])
    spec = source_spec(args)
    options = cut_options(args, spec)
    # The model's max_segments beats the command's own default (video: 16).
    assert (options["max_segments"], options["upsample"]) == (2, "nearest"), command
    flagged = build_parser().parse_args(command + ["--engine", str(tuned_model), "--max-segments", "5",
                                                   "--preset", "street"])
    settings = cut_settings(flagged, source_spec(flagged))
    assert (settings["max_segments"].value, settings["threshold"].origin) == (5, "--preset street"), command


def test_video_command_uses_the_models_cut_defaults(tmp_path, tuned_model, plain_model):
    clip = write_clip(tmp_path / "c.mp4", n=3)

    def ids_per_frame(model, name):
        labels = tmp_path / name
        assert main(["video", str(clip), "--labels-dir", str(labels), "--engine", str(model), "--backend",
                     "ort-cpu", "--threads", "--workers", "1", "--no-track"]) == 0
        return [len(np.unique(cv2.imread(str(p), cv2.IMREAD_UNCHANGED))) for p in sorted(labels.glob("*.png"))]

    assert ids_per_frame(tuned_model, "tuned") == [2, 2, 2]
    assert min(ids_per_frame(plain_model, "plain")) > 2  # without the model's setting: more segments
