"""One home for defaults: runtime/defaults.py, used by the modules, mirrored by the C++ defaults.hpp."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from walkcut.runtime import defaults
from walkcut.runtime.cuts import graph, hierarchy, spectral, stationary
from walkcut.runtime.draw import overlay
from walkcut.runtime.segmenter import Segmenter
from walkcut.runtime.sources.pixels import PixelSource
from walkcut.runtime.upsample import upsample_labels

HPP = Path(__file__).resolve().parents[1] / "cpp_demo" / "include" / "walkcut" / "defaults.hpp"
CONSTANT = re.compile(r"inline\s+constexpr\s+[\w:\s*]+?\s+k(\w+)\s*=\s*([^;]+);(.*)")


def hpp_constants() -> dict[str, object]:
    """``{PYTHON_NAME: value}`` of every shared constant in defaults.hpp (``kFooBar`` -> ``FOO_BAR``)."""
    out = {}
    for line in HPP.read_text().splitlines():
        m = CONSTANT.search(line)
        if not m or "C++ only" in m.group(3):
            continue
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", m.group(1)).upper()
        text = m.group(2).strip()
        out[name] = text.strip('"') if text.startswith('"') else float(text)
    return out


def test_cpp_defaults_hold_the_python_values():
    shared = hpp_constants()
    assert len(shared) >= 30  # the parser read the file (a regex that matches nothing proves nothing)
    missing = sorted(name for name in shared if not hasattr(defaults, name))
    assert missing == [], f"defaults.hpp names without a twin in runtime/defaults.py: {missing}"
    differ = {name: (value, getattr(defaults, name)) for name, value in shared.items()
              if getattr(defaults, name) != value}
    assert differ == {}, f"defaults.hpp and runtime/defaults.py disagree (C++, Python): {differ}"


#: Constants of the fast method's node solvers that the C++ demo ports (cpp_demo/src/cuts.cpp, node_solvers.cpp).
FAST_METHOD_SHARED = {"BLOCK_SIZE", "RANDOM_COLUMNS", "LANCZOS_MAX_STEPS", "LANCZOS_CHECK", "SHIFT_INVERT_SIGMA",
                      "SHIFT_INVERT_TOL", "SHIFT_INVERT_MAX_STEPS", "SHIFT_INVERT_BANDED_MAX_ENTRIES"}


def test_cpp_mirrors_the_fast_method_constants():
    shared = hpp_constants()
    assert FAST_METHOD_SHARED <= set(shared), f"missing in defaults.hpp: {sorted(FAST_METHOD_SHARED - set(shared))}"
    # The C++ demo has one Lanczos tolerance (--eigen-tol, default kEigenTol) for the reference solver
    # and the dense node solver; the runtime's two must therefore stay equal.
    assert defaults.FAST_TOL_F32 == defaults.EIGEN_TOL
    # kShiftInvertCheck is tagged "C++ only" in the header (so the generic comparison skips it), yet it
    # mirrors SHIFT_INVERT_CHECK, the check interval of the runtime's shift-invert Lanczos.
    check = re.search(r"kShiftInvertCheck\s*=\s*(\d+);", HPP.read_text())
    assert check, "kShiftInvertCheck not found in defaults.hpp"
    assert int(check.group(1)) == defaults.SHIFT_INVERT_CHECK


def _default(func, name):
    return inspect.signature(func).parameters[name].default


def test_modules_take_their_defaults_from_the_one_home():
    d = defaults
    assert hierarchy.default_min_size(4096) == 4096 // d.MIN_SIZE_DIVISOR
    func = hierarchy.cut_transition_matrix
    assert _default(func, "mode") == d.MODE and _default(func, "power") == d.POWER
    assert _default(func, "threshold") == d.THRESHOLD
    assert _default(hierarchy.cut_transition_matrix, "max_segments") == d.MAX_SEGMENTS
    # Segmenter.segment leaves its settings to the source, then to these package defaults.
    from walkcut.runtime.segmenter import PACKAGE_CUT_DEFAULTS

    assert all(_default(Segmenter.segment, k) is None for k in d.CUT_DEFAULT_KEYS)
    assert set(PACKAGE_CUT_DEFAULTS) == set(d.CUT_DEFAULT_KEYS)
    assert (PACKAGE_CUT_DEFAULTS["mode"], PACKAGE_CUT_DEFAULTS["power"], PACKAGE_CUT_DEFAULTS["threshold"],
            PACKAGE_CUT_DEFAULTS["max_segments"]) == (d.MODE, d.POWER, d.THRESHOLD, d.MAX_SEGMENTS)
    assert _default(hierarchy.cut_affinity, "max_segments") == d.MAX_SEGMENTS
    for func in (hierarchy.cut_transition_matrix, hierarchy.cut_affinity):
        assert _default(func, "method") == d.METHOD == d.METHODS[0]
    assert _default(spectral.fiedler_vector, "tol") == d.EIGEN_TOL
    assert _default(graph.check_transition_matrix, "row_tol") == d.ROW_TOL
    assert _default(stationary.stationary_distribution, "tol") == d.STATIONARY_TOL
    assert _default(Segmenter, "max_source_side") == d.MAX_SOURCE_SIDE
    assert _default(Segmenter, "max_label_side") == d.MAX_LABEL_SIDE
    src = PixelSource()
    assert (src.grid, src.color_scale) == (d.GRID, d.COLOR_SCALE)
    assert src.effective_radius == max(d.MIN_RADIUS, d.RADIUS_PER32 * d.GRID / 32)
    with pytest.raises(ValueError):
        PixelSource(grid=d.MIN_GRID - 1)
    assert _default(upsample_labels, "sigma_color") == d.UPSAMPLE_SIGMA_COLOR
    assert _default(overlay, "alpha") == d.OVERLAY_ALPHA


def test_command_line_defaults_are_the_runtime_defaults():
    from walkcut.cli import build_parser
    from walkcut.cli.args import cut_options, source_spec

    parser = build_parser()
    seg = parser.parse_args(["segment", "x.png", "--out", "o"])
    options, source = cut_options(seg, source_spec(seg)), source_spec(seg)
    assert (options["mode"], options["power"], options["threshold"], options["max_segments"], source.grid) == (
        defaults.MODE, defaults.POWER, defaults.THRESHOLD, defaults.MAX_SEGMENTS, defaults.GRID)
    assert source.contour_scale == defaults.CONTOUR_SCALE == PixelSource().contour_scale
    video = parser.parse_args(["video", "x.mp4"])
    assert (cut_options(video)["max_segments"], video.label_side) == (defaults.VIDEO_MAX_SEGMENTS,
                                                                     defaults.VIDEO_LABEL_SIDE)
    assert source_spec(video).contour_scale == defaults.CONTOUR_SCALE


def test_default_preset_is_the_defaults():
    preset = defaults.PRESETS["default"]
    src = PixelSource()
    assert {k: getattr(src, k) for k in preset["source"]} == preset["source"]
    assert preset["cuts"] == {"threshold": defaults.THRESHOLD, "max_segments": defaults.MAX_SEGMENTS}


ARRAY = re.compile(r"inline\s+constexpr\s+[\w:\s*]+?\s+k(\w+)\[\]\s*=\s*\{([^}]*)\};([^\n]*)", re.S)


def hpp_arrays() -> dict[str, tuple]:
    """``{PYTHON_NAME: tuple}`` of the array constants of defaults.hpp that have a Python twin."""
    out = {}
    for m in ARRAY.finditer(HPP.read_text()):
        if "C++ only" in m.group(3):
            continue
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", m.group(1)).upper()
        items = [x.strip() for x in m.group(2).split(",") if x.strip()]
        out[name] = tuple(x.strip('"') if x.startswith('"') else float(x) for x in items)
    return out


def test_cpp_mirrors_the_contract_v2_tables():
    arrays = hpp_arrays()
    expected = {"SUPPORTED_CONTRACT_VERSIONS", "BACKBONES", "NORMALIZATIONS", "IMAGENET_MEAN", "IMAGENET_STD",
                "CUT_DEFAULT_KEYS"}
    assert expected <= set(arrays), f"missing in defaults.hpp: {sorted(expected - set(arrays))}"
    for name, value in arrays.items():
        assert tuple(getattr(defaults, name)) == value, (name, value, getattr(defaults, name))
    # C++ only: the upsampling methods a cut_defaults entry may name are the runtime's.
    from walkcut.runtime import upsample

    assert _cpp_strings("UpsampleMethods") == upsample.METHODS


def _cpp_strings(name: str) -> tuple[str, ...]:
    """The strings of the array ``k{name}`` in defaults.hpp (C++-only ones included)."""
    m = re.search(rf"k{name}\[\]\s*=\s*\{{([^}}]*)\}}", HPP.read_text())
    assert m, f"k{name} not found in defaults.hpp"
    return tuple(x.strip().strip('"') for x in m.group(1).split(","))


def test_cpp_honours_the_vit_cut_defaults():
    """A vision-transformer export writes VIT_CUT_DEFAULTS into its contract; the C++ demo reads every
    stopping rule and upsampling method there is (kAutoRules, kUpsampleMethods: C++-only tables, the
    runtime's AUTO_RULES and upsample.METHODS), so it honours them (tests/test_cpp_demo.py runs them)."""
    from walkcut.cli.args import AUTO_RULES as CLI_AUTO_RULES
    from walkcut.runtime.upsample import METHODS

    assert _cpp_strings("AutoRules") == hierarchy.AUTO_RULES == CLI_AUTO_RULES
    assert set(defaults.VIT_CUT_DEFAULTS) <= set(_cpp_strings("CutDefaultKeys"))
    vit = defaults.VIT_CUT_DEFAULTS
    assert vit["threshold"] in _cpp_strings("AutoRules") and vit["upsample"] in METHODS
    # upsample="snap" snaps to the pixels source at SNAP_GRID cut into SNAP_SEGMENTS leaves with
    # threshold EXPAND_LIMIT (kSnapGrid, kSnapSegments, kExpandLimit: compared with the other constants;
    # tests/test_cpp_demo.py compares the snapped labels with the runtime's).
    assert {"SNAP_GRID", "SNAP_SEGMENTS", "EXPAND_LIMIT"} <= set(hpp_constants())


def test_cpp_contour_term_mirrors_the_pixel_source():
    """The contour term is on by default on both sides (kContourScale is CONTOUR_SCALE), and its raster
    and floor constants (runtime/defaults.py, used by runtime/sources/pixels.py) are mirrored."""
    assert "kContourScale" in HPP.read_text() and hpp_constants()["CONTOUR_SCALE"] == defaults.CONTOUR_SCALE
    assert PixelSource().contour_scale == defaults.CONTOUR_SCALE
    shared = hpp_constants()  # the raster and contour constants are shared now: values compared
    for name in ("EDGE_MIN_SCALE", "EDGE_RASTER_SIDE", "EDGE_BLUR_SIGMA", "CONTOUR_MARGIN", "CONTOUR_FLOOR_OF_MAX",
                 "CONTOUR_FLOOR"):
        assert shared[name] == getattr(defaults, name), name
