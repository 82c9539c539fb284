"""Source specs (PixelSource as its own spec, EngineSpec), GivenSource, validate_attention, and the
one builder of a source from options: picklable, opened where the work runs, one meaning per option."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from test_backends import build_fake_model, quadrant_image
from walkcut.runtime import defaults
from walkcut.runtime.segmenter import Segmenter
from walkcut.runtime.sources import (
    EngineSource,
    EngineSpec,
    GivenSource,
    PixelSource,
    SourceSpec,
    Transition,
    source_spec,
    validate_attention,
)
from walkcut.runtime.sources.contract import ContractError, ModelContract
from walkcut.runtime.sources.engine import EngineOutputError

from walkcut.cli import build_parser
from walkcut.cli.args import source_spec as cli_source_spec


@pytest.fixture
def fake_model(tmp_path):
    path = tmp_path / "fake.onnx"
    build_fake_model(path)
    return path


# --- the pixel source is its own spec ------------------------------------------------------------

def test_pixel_source_is_its_own_picklable_spec():
    src = PixelSource(grid=8, contour_scale=None)
    assert isinstance(src, SourceSpec) and src.open() is src
    assert dict(src.cut_defaults) == {}
    copy = pickle.loads(pickle.dumps(src))
    assert copy == src and hash(copy) == hash(src)
    image = quadrant_image(40, 60)
    np.testing.assert_array_equal(copy.open().transition(image).P.toarray(), src.transition(image).P.toarray())


# --- the engine spec ---------------------------------------------------------------------------------

def test_engine_spec_reads_the_contract_without_a_backend_and_opens_one(fake_model):
    spec = EngineSpec(fake_model, backend="ort-cpu", threads=1)
    assert isinstance(spec, SourceSpec) and spec.model == str(fake_model)
    assert spec.contract.attn_res == 8 and dict(spec.cut_defaults) == {}
    copy = pickle.loads(pickle.dumps(spec))
    assert copy == spec and hash(copy) == hash(spec)
    source = copy.open()
    assert isinstance(source, EngineSource) and source.grid_shape == (8, 8)
    assert source.backend.name == "ort-cpu"


@pytest.mark.parametrize("kwargs, error, match", [
    ({"model": None}, TypeError, "model must be the path"),
    ({"model": ""}, TypeError, "model must be the path"),
    ({"model": "m.onnx", "backend": "cuda"}, ValueError, "backend must be one of.*'cuda'"),
    ({"model": "m.onnx", "threads": 0}, ValueError, "threads must be an integer >= 1.*0"),
    ({"model": "m.onnx", "threads": True}, ValueError, "threads"),
])
def test_engine_spec_validates_its_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        EngineSpec(**kwargs)


def test_engine_spec_refuses_a_model_before_any_backend_starts(tmp_path):
    plain = tmp_path / "plain.onnx"
    build_fake_model(plain, metadata=False)
    with pytest.raises(ContractError, match="not a walkcut model"):
        _ = EngineSpec(plain).contract
    with pytest.raises(ContractError, match="no such model file"):
        _ = EngineSpec(tmp_path / "missing.onnx").cut_defaults


# --- the one builder ---------------------------------------------------------------------------------

def test_source_spec_applies_the_preset_then_the_options():
    street = defaults.PRESETS["street"]["source"]
    spec = source_spec(preset="street")
    assert {k: getattr(spec, k) for k in street} == street
    spec = source_spec(preset="street", grid=16, contour_scale=None)
    assert (spec.grid, spec.contour_scale, spec.color_scale) == (16, None, street["color_scale"])
    assert source_spec() == PixelSource()


def test_source_spec_with_an_engine(fake_model):
    assert source_spec(engine=fake_model, backend="ort-cpu") == EngineSpec(str(fake_model), backend="ort-cpu")
    with pytest.raises(ValueError, match="grid set the pixel source.*leave them out"):
        source_spec(engine=fake_model, grid=16)
    with pytest.raises(ValueError, match="give engine=MODEL"):
        source_spec(backend="ort-cpu")
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        source_spec(preset="nope")


SEGMENTING = {
    "segment": ["segment", "x.png", "--out", "o"],
    "batch": ["batch", "x.png", "--out", "o"],
    "video": ["video", "x.mp4"],
    "eval": ["eval", "bsds500"],
    "bench": ["bench"],
}


@pytest.mark.parametrize("command", SEGMENTING)
def test_every_segmenting_command_has_every_source_option(command):
    argv = SEGMENTING[command] + ["--preset", "street", "--contour-scale", "3", "--grid", "16"]
    spec = cli_source_spec(build_parser().parse_args(argv))
    assert spec == source_spec(preset="street", contour_scale=3.0, grid=16), command
    args = build_parser().parse_args(SEGMENTING[command] + ["--engine", "m.onnx", "--backend", "ort-cpu"])
    assert cli_source_spec(args) == EngineSpec("m.onnx", backend="ort-cpu"), command


def test_pixel_options_with_an_engine_are_ignored_with_a_warning(fake_model, caplog):
    args = build_parser().parse_args(["segment", "x.png", "--out", "o", "--engine", str(fake_model), "--grid", "16"])
    with caplog.at_level("WARNING", logger="walkcut.cli.args"):
        assert cli_source_spec(args) == EngineSpec(fake_model)
    assert "--grid sets the pixel source" in caplog.text and "ignored" in caplog.text


# --- GivenSource ---------------------------------------------------------------------------------

def test_given_source_hands_each_transition_once():
    tr = PixelSource(grid=4).transition(np.zeros((16, 16, 3), np.uint8))
    src = GivenSource(tr, timings={"engine": 0.25})
    assert src.pending and src.last_timings == {"engine": 0.25}
    assert src.transition(None) is tr and not src.pending
    with pytest.raises(RuntimeError, match="hand"):
        src.transition(None)
    src.hand(tr)
    assert src.take() == (tr, {}) and src.take() is None
    with pytest.raises(TypeError, match="must be a Transition"):
        src.hand(np.eye(4))


def test_given_source_carries_validated_cut_defaults():
    tr = PixelSource(grid=8).transition(quadrant_image(40, 60))
    seg = Segmenter(GivenSource(tr, cut_defaults={"max_segments": 2})).set_image(quadrant_image(40, 60)).segment()
    assert seg.n_segments == 2  # the given model's setting, where the call gives none
    with pytest.raises(ContractError, match="max_segments must be an integer >= 1, got 0"):
        GivenSource(cut_defaults={"max_segments": 0})
    with pytest.raises(ContractError, match="unknown keys.*grid"):
        GivenSource(cut_defaults={"grid": 8})


# --- validate_attention --------------------------------------------------------------------------

def _uniform(n, dtype=np.float32):
    return np.full((1, n, n), 1.0 / n, dtype)


def test_validate_attention_checks_and_renormalises():
    contract = ModelContract(image_size=64, attn_res=4)
    out = _uniform(16) * np.float32(1.003)  # fp16-like rounding: within ROW_TOL
    P = validate_attention(out, contract, name="m.onnx")
    assert P.shape == (16, 16)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    with pytest.raises(EngineOutputError, match=r"m\.onnx: engine output has shape \(1, 9, 9\)"):
        validate_attention(_uniform(9), contract, name="m.onnx")
    bad = _uniform(16)
    bad[0, 3, 3] = np.nan
    with pytest.raises(EngineOutputError, match="1 NaN/Inf values"):
        validate_attention(bad, contract, name="m.onnx")
    zero = _uniform(16)
    zero[0, 5] = 0
    with pytest.raises(EngineOutputError, match="row 5 is all zeros"):
        validate_attention(zero, contract, name="m.onnx")
    with pytest.raises(EngineOutputError, match="row-stochastic"):
        validate_attention(_uniform(16) * 2, contract, name="m.onnx")


def test_engine_source_uses_validate_attention(fake_model):
    source = EngineSource.from_path(fake_model, backend="ort-cpu")
    image = quadrant_image()
    tr = source.transition(image)
    from walkcut.runtime.sources.preprocess import preprocess

    raw = source.backend.run(preprocess(image, source.contract))
    np.testing.assert_array_equal(validate_attention(raw, source.contract), tr.P)
    assert isinstance(tr, Transition)
