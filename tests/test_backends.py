"""Backends, preprocessing and EngineSource, on small fake walkcut ONNX models built with onnx.helper.

The fake model has the real graph's interface: ``image`` (1, 3, S, S) -> average-pool to R x R ->
per-cell features -> ``attention = softmax(beta F F^T)`` (1, R*R, R*R), rows summing to 1, plus the
contract in its metadata. No torch is needed.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from walkcut.runtime.segmenter import Segmenter
from walkcut.runtime.sources.backends import (
    BackendUnavailable,
    OrtBackend,
    available_backends,
    create_backend,
)
from walkcut.runtime.sources.contract import ContractError, ModelContract
from walkcut.runtime.sources.engine import EngineOutputError, EngineSource, read_contract, read_onnx_metadata
from walkcut.runtime.sources.preprocess import preprocess

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper


def build_fake_model(path, *, image_size=64, attn_res=8, beta=20.0, nan=False, metadata=True,
                     contract_overrides=None, output_name="attention"):
    """Write a fake walkcut attention model to ``path`` and return its contract."""
    S, R = image_size, attn_res
    n, k = R * R, S // R
    contract = ModelContract(image_size=S, attn_res=R, layers="encoder", resolutions=(R,), weights=(1.0,),
                             model_id="fake", model_hash="0" * 12, exporter_version="test",
                             **(contract_overrides or {}))
    inits = [
        numpy_helper.from_array(np.array([1, 3, n], np.int64), "shape"),
        numpy_helper.from_array(np.array(beta, np.float32), "beta"),
        numpy_helper.from_array(np.array(np.nan if nan else 1.0, np.float32), "poison"),
    ]
    nodes = [
        helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[k, k], strides=[k, k]),
        helper.make_node("Reshape", ["pooled", "shape"], ["flat"]),  # (1, 3, n)
        helper.make_node("Transpose", ["flat"], ["feat"], perm=[0, 2, 1]),  # (1, n, 3)
        helper.make_node("MatMul", ["feat", "flat"], ["gram"]),  # (1, n, n)
        helper.make_node("Mul", ["gram", "beta"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["soft"], axis=-1),
        helper.make_node("Mul", ["soft", "poison"], [output_name]),
    ]
    graph = helper.make_graph(
        nodes, "fake_walkcut",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, S, S])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [1, n, n])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if metadata:
        meta = contract.to_metadata()
        if contract_overrides and "raw_json" in contract_overrides:
            meta = {"walkcut.contract": contract_overrides["raw_json"]}
        for key, value in meta.items():
            model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return contract


@pytest.fixture
def fake_model(tmp_path):
    path = tmp_path / "fake.onnx"
    build_fake_model(path)
    return path


def quadrant_image(h=90, w=140):
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (230, 30, 30)
    img[: h // 2, w // 2 :] = (30, 230, 30)
    img[h // 2 :, : w // 2] = (30, 30, 230)
    img[h // 2 :, w // 2 :] = (230, 230, 30)
    return img


# --- backends ------------------------------------------------------------------------------------

def test_cpu_backend_is_available_and_auto_picks_it(fake_model, caplog):
    assert "ort-cpu" in available_backends()
    with caplog.at_level(logging.INFO, logger="walkcut.runtime.sources.backends"):
        backend = create_backend(fake_model, "auto")
    assert backend.name in available_backends()
    assert any("picked" in r.message for r in caplog.records)
    out = backend.run(np.zeros((1, 3, 64, 64), np.float32))
    assert out.shape == (1, 64, 64)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)


def test_unknown_backend_name_is_a_value_error(fake_model):
    with pytest.raises(ValueError, match="'cuda'"):
        create_backend(fake_model, "cuda")


@pytest.mark.parametrize("name", ["ort-cuda", "ort-trt"])
def test_missing_gpu_provider_raises_with_the_fix(fake_model, name):
    if name in available_backends():
        pytest.skip(f"{name} is available here; the gated path cannot be exercised")
    with pytest.raises(BackendUnavailable, match=r"pip install walkcut\[gpu"):
        create_backend(fake_model, name)


def test_trt_backend_gated_without_tensorrt(tmp_path):
    if "trt" in available_backends():
        pytest.skip("TensorRT is installed here")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 16)
    with pytest.raises(BackendUnavailable, match=r"walkcut\[trt\]"):
        create_backend(engine, "trt")


def test_auto_with_engine_falls_back_to_the_onnx_beside_it(tmp_path, caplog):
    if "trt" in available_backends():
        pytest.skip("TensorRT is installed here")
    build_fake_model(tmp_path / "m.onnx")
    (tmp_path / "m.engine").write_bytes(b"\0" * 16)
    with caplog.at_level(logging.WARNING, logger="walkcut.runtime.sources.backends"):
        backend = create_backend(tmp_path / "m.engine", "auto")
    assert backend.name.startswith("ort-")
    assert any(r.levelno == logging.WARNING and "falling back" in r.message for r in caplog.records)


def test_backend_file_kind_must_match(fake_model):
    with pytest.raises(ValueError, match="engine"):
        create_backend(fake_model, "trt")


@pytest.mark.skipif("ort-cuda" not in available_backends(), reason="onnxruntime-gpu with CUDA not installed")
def test_cuda_backend_matches_cpu(fake_model):  # pragma: no cover - GPU machines only
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(OrtBackend(fake_model, "ort-cuda").run(x), OrtBackend(fake_model).run(x), atol=1e-4)


# --- preprocessing -------------------------------------------------------------------------------

def test_preprocess_follows_the_contract():
    c = ModelContract(image_size=64, attn_res=8)
    img = np.zeros((30, 200, 3), np.uint8)
    img[..., 0] = 255  # pure red
    x = preprocess(img, c)
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x[0, 0], 1.0)
    np.testing.assert_allclose(x[0, 1:], -1.0)
    bgr = preprocess(img, ModelContract(image_size=64, attn_res=8, color_order="BGR"))
    np.testing.assert_allclose(bgr[0, 2], 1.0)


def test_preprocess_rejects_bad_input():
    c = ModelContract(image_size=64, attn_res=8)
    with pytest.raises(ValueError, match="RGB"):
        preprocess(np.zeros((8, 8), np.uint8), c)
    with pytest.raises(TypeError, match="float32"):
        preprocess(np.zeros((8, 8, 3), np.float32), c)


# --- engine source -------------------------------------------------------------------------------

def test_metadata_reader_matches_onnx(fake_model):
    meta = read_onnx_metadata(fake_model)
    expected = {p.key: p.value for p in onnx.load(str(fake_model)).metadata_props}
    assert meta == expected
    assert read_contract(fake_model).attn_res == 8


def test_engine_source_segments_quadrants_through_segmenter(fake_model):
    source = EngineSource.from_path(fake_model, backend="ort-cpu")
    img = quadrant_image()
    tr = source.transition(img)
    assert tr.grid_shape == (8, 8) and tr.stationary is None
    np.testing.assert_allclose(tr.P.sum(axis=1), 1.0)
    seg = Segmenter(source).set_image(img).segment(threshold="auto-ncut")
    assert seg.labels.shape == img.shape[:2]
    assert seg.n_segments == 4
    assert {"preprocess", "engine", "cuts", "upsample"} <= set(seg.timings)
    quads = [seg.labels[10, 10], seg.labels[10, 130], seg.labels[80, 10], seg.labels[80, 130]]
    assert len(set(quads)) == 4


def test_non_walkcut_onnx_is_refused(tmp_path):
    path = tmp_path / "plain.onnx"
    build_fake_model(path, metadata=False)
    with pytest.raises(ContractError, match="not a walkcut model.*walkcut export"):
        EngineSource.from_path(path)


def test_not_an_onnx_file_is_refused(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_text("this is not a model\n" * 20)
    with pytest.raises(ContractError, match="not an ONNX model"):
        EngineSource.from_path(path)


@pytest.mark.parametrize("override, match", [
    ({"normalization": "zero_to_one"}, "normalization.*re-export"),
    ({"color_order": "YUV"}, "color_order"),
    ({"raw_json": json.dumps({"contract_version": 99, "image_size": 64, "attn_res": 8})}, "version 99.*re-export"),
])
def test_contract_the_runtime_cannot_honour_is_refused(tmp_path, override, match):
    path = tmp_path / "odd.onnx"
    build_fake_model(path, contract_overrides=override if "raw_json" not in override else None)
    if "raw_json" in override:
        model = onnx.load(str(path))
        del model.metadata_props[:]
        model.metadata_props.add(key="walkcut.contract", value=override["raw_json"])
        onnx.save(model, str(path))
    with pytest.raises(ContractError, match=match):
        EngineSource.from_path(path)


def test_graph_that_contradicts_its_contract_is_refused(tmp_path):
    path = tmp_path / "lies.onnx"
    build_fake_model(path, contract_overrides=None)
    model = onnx.load(str(path))
    del model.metadata_props[:]
    model.metadata_props.add(key="walkcut.contract", value=ModelContract(image_size=128, attn_res=8).to_json())
    onnx.save(model, str(path))
    with pytest.raises(ContractError, match="does not match its walkcut contract"):
        EngineSource.from_path(path)


def test_nan_in_engine_output_names_the_model(tmp_path):
    path = tmp_path / "nan.onnx"
    build_fake_model(path, nan=True)
    source = EngineSource.from_path(path)
    with pytest.raises(EngineOutputError, match=r"nan\.onnx.*NaN"):
        source.transition(quadrant_image())
