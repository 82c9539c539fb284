"""``--preset NAME`` on walkcut segment / batch / video / eval: the preset's settings, explicit flags
win, unknown names are a one-line usage error."""

from __future__ import annotations

import pytest
from walkcut.runtime import defaults

from walkcut.cli import build_parser, main
from walkcut.cli.args import cut_options, source_spec

COMMANDS = {
    "segment": ["segment", "x.png", "--out", "o"],
    "batch": ["batch", "x.png", "--out", "o"],
    "video": ["video", "x.mp4"],
    "eval": ["eval", "bsds500"],
    "bench": ["bench"],
}


def parse(argv):
    return build_parser().parse_args(argv)


def test_the_documented_presets_exist():
    assert {"default", "street"} <= set(defaults.PRESETS)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", sorted(defaults.PRESETS))
def test_preset_sets_source_and_cut_options(command, name):
    args = parse(COMMANDS[command] + ["--preset", name])
    preset = defaults.PRESETS[name]
    for key, value in preset["cuts"].items():
        assert cut_options(args)[key] == value, (command, key)
    source = source_spec(args).open()
    for key, value in preset["source"].items():
        assert getattr(source, key) == value, (command, key)


@pytest.mark.parametrize("command", COMMANDS)
def test_explicit_flags_override_the_preset(command):
    args = parse(COMMANDS[command] + ["--preset", "street", "--grid", "24", "--threshold", "0.05",
                                      "--max-segments", "7", "--contour-scale", "off"])
    assert (args.grid, args.threshold, args.max_segments) == (24, 0.05, 7)
    source = source_spec(args)
    assert (source.grid, source.contour_scale) == (24, None)
    assert source.color_scale == defaults.PRESETS["street"]["source"]["color_scale"]  # the preset's, no flag
    assert cut_options(args)["threshold"] == 0.05
    # Flag order does not matter.
    again = parse(COMMANDS[command] + ["--grid", "24", "--preset", "street"])
    assert source_spec(again).grid == 24
    assert cut_options(again)["threshold"] == defaults.PRESETS["street"]["cuts"]["threshold"]


def test_without_a_preset_the_command_defaults_hold():
    video = parse(COMMANDS["video"])
    assert cut_options(video)["max_segments"] == defaults.VIDEO_MAX_SEGMENTS
    assert source_spec(video).grid == defaults.GRID
    assert source_spec(video).contour_scale == defaults.CONTOUR_SCALE
    # A preset replaces the command's own default too (video's 16 leaves).
    street = parse(COMMANDS["video"] + ["--preset", "street"])
    assert cut_options(street)["max_segments"] == defaults.PRESETS["street"]["cuts"]["max_segments"]


def test_contour_scale_flag():
    for command in COMMANDS:
        assert source_spec(parse(COMMANDS[command] + ["--contour-scale", "3"])).contour_scale == 3.0, command
        assert source_spec(parse(COMMANDS[command] + ["--contour-scale", "off"])).contour_scale is None, command


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_preset_is_a_one_line_usage_error(command, capsys):
    assert main(COMMANDS[command] + ["--preset", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "unknown preset 'nope'" in err and "default, street" in err


@pytest.mark.parametrize("bad", ["0", "-1", "x", "nan"])
def test_bad_contour_scale_is_a_usage_error(bad, capsys):
    assert main(COMMANDS["segment"] + ["--contour-scale", bad]) == 2
    assert "--contour-scale" in capsys.readouterr().err


def test_segment_runs_with_a_preset(tmp_path):
    import cv2
    import numpy as np

    img = np.zeros((48, 64, 3), np.uint8)
    img[:, 32:] = (200, 40, 40)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "a.png"), "--out", str(out), "--preset", "default"]) == 0
    labels = cv2.imread(str(out / "a_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (48, 64) and labels.max() >= 1


def test_video_workers_build_the_preset_source(monkeypatch):
    # Worker processes rebuild the source from the SegmenterSpec: every preset option must travel.
    from walkcut.runtime.video import SegmenterSpec

    import walkcut.cli.video as video_cli

    args = parse(COMMANDS["video"] + ["--preset", "street"])
    seen = {}

    class Stop(Exception):
        pass

    def fake_factory(spec, **kwargs):
        seen["spec"] = spec
        raise Stop

    monkeypatch.setattr("walkcut.runtime.video.worker_factory", fake_factory)
    monkeypatch.setattr("walkcut.runtime.video.VideoInput.parse", staticmethod(lambda text, live=None: text))
    monkeypatch.setattr("walkcut.runtime.video.VideoReader", lambda spec: _Reader())
    monkeypatch.setattr(video_cli, "check_is_video", lambda spec, reader: None)
    monkeypatch.setattr(video_cli, "check_outputs", lambda args: None)
    args.out = "x.mp4"
    with pytest.raises(Stop):
        video_cli.run(args)
    spec = seen["spec"]
    assert isinstance(spec, SegmenterSpec)
    import pickle

    source = pickle.loads(pickle.dumps(spec)).open_source()  # as a worker process receives it
    for key, value in defaults.PRESETS["street"]["source"].items():
        assert getattr(source, key) == value, key


class _Reader:
    def close(self):
        pass
