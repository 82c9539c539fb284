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
    with pytest.raises(BackendUnavailable, match=r"pip uninstall -y onnxruntime && pip install onnxruntime-gpu"):
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


# --- IO binding (the ort-cuda path, exercised on the CPU provider) -------------------------------

def _images(k, size=64, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, (1, 3, size, size)).astype(np.float32) for _ in range(k)]


def test_io_binding_gives_the_plain_runs_attention(fake_model):
    plain, bound = OrtBackend(fake_model), OrtBackend(fake_model, io_binding=True)
    assert not plain.io_binding and bound.io_binding
    outs = []
    for x in _images(3):
        got = bound.run(x)
        np.testing.assert_array_equal(got, plain.run(x))
        outs.append(got)
    # each call hands back its own array: the reused buffers never alias a result already returned
    np.testing.assert_array_equal(outs[0], plain.run(_images(1)[0]))
    assert not np.shares_memory(outs[0], outs[1])
    info = bound.describe()
    assert info["io_binding"] and info["readback"] == "update_inplace" and info["output_dtype"] == "float32"


def test_io_binding_allocates_its_buffers_once(fake_model, monkeypatch):
    import onnxruntime as ort

    backend = OrtBackend(fake_model, io_binding=True)
    bound = backend._bound
    addresses = (bound.input_value.data_ptr(), bound.output_value.data_ptr(), bound.host_out.ctypes.data)
    made = []
    for factory in ("ortvalue_from_shape_and_type", "ortvalue_from_numpy"):
        original = getattr(ort.OrtValue, factory)
        monkeypatch.setattr(ort.OrtValue, factory,
                            classmethod(lambda cls, *a, _f=original, _n=factory, **k: made.append(_n) or _f(*a, **k)))
    for x in _images(4, seed=1):
        backend.run(x)
    assert made == []  # no OrtValue created per call
    assert backend._bound is bound and bound.calls == 4
    assert (bound.input_value.data_ptr(), bound.output_value.data_ptr(), bound.host_out.ctypes.data) == addresses


def test_io_binding_refuses_a_wrong_input_with_the_shape_it_wants(fake_model):
    backend = OrtBackend(fake_model, io_binding=True)
    with pytest.raises(ValueError, match=r"\(1, 3, 32, 32\).*contract fixes \(1, 3, 64, 64\)"):
        backend.run(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(TypeError, match="float32.*float64"):
        backend.run(np.zeros((1, 3, 64, 64)))
    assert backend._bound.calls == 0


def test_io_binding_is_safe_across_threads(fake_model):
    from concurrent.futures import ThreadPoolExecutor

    plain, bound = OrtBackend(fake_model), OrtBackend(fake_model, io_binding=True)
    xs = _images(16, seed=2)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(bound.run, xs))
    for x, out in zip(xs, got):
        np.testing.assert_array_equal(out, plain.run(x))


def test_io_binding_options_and_environment(fake_model, monkeypatch):
    monkeypatch.setenv("WALKCUT_IO_BINDING", "1")
    assert OrtBackend(fake_model).io_binding
    monkeypatch.setenv("WALKCUT_IO_BINDING", "yes")
    with pytest.raises(ValueError, match="WALKCUT_IO_BINDING must be 0 or 1, got 'yes'"):
        OrtBackend(fake_model)
    monkeypatch.delenv("WALKCUT_IO_BINDING")
    with pytest.raises(ValueError, match="cuda_graph needs the 'ort-cuda' backend"):
        OrtBackend(fake_model, cuda_graph=True)
    monkeypatch.setenv("WALKCUT_CUDA_GRAPH", "1")  # meant for ort-cuda: ignored by the CPU backend
    assert not OrtBackend(fake_model).cuda_graph
    with pytest.raises(TypeError, match="unknown options"):
        create_backend(fake_model, "ort-cpu", cuda_graphs=True)


def test_io_binding_needs_static_shapes_or_the_contract(tmp_path):
    path = tmp_path / "dyn.onnx"
    build_fake_model(path)
    model = onnx.load(str(path))
    for d in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "side"  # a symbolic image side
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match="IO binding needs static shapes.*contract"):
        OrtBackend(path, io_binding=True)
    backend = OrtBackend(path, io_binding=True, io_shapes=((1, 3, 64, 64), (1, 64, 64)))
    x = _images(1)[0]
    np.testing.assert_array_equal(backend.run(x), OrtBackend(path).run(x))


def test_io_binding_rebinds_when_the_contract_names_the_output(tmp_path):
    path = tmp_path / "named.onnx"
    build_fake_model(path, output_name="attention")
    backend = OrtBackend(path, io_binding=True)
    with pytest.raises(ValueError, match="no output 'probs'"):
        backend.output_name = "probs"


def test_engine_source_through_io_binding_matches_the_plain_run(fake_model, monkeypatch):
    img = quadrant_image()
    plain = EngineSource.from_path(fake_model, backend="ort-cpu")
    monkeypatch.setenv("WALKCUT_IO_BINDING", "1")
    bound = EngineSource.from_path(fake_model, backend="ort-cpu")
    assert bound.describe()["io_binding"] and not plain.describe()["io_binding"]
    np.testing.assert_array_equal(bound.transition(img).P, plain.transition(img).P)


@pytest.fixture(scope="module")
def tiny_fp16_export(tmp_path_factory):
    """The tiny random SD model exported in fp16, the GPU precision (needs the export extra).

    fp16 only: its graph mixes float16 compute with the float32 output, the case the device-side
    output is kept for; the float32 IO-binding path is covered above on the fake model.
    """
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from export_fixtures import TINY_ATTN_RES, TINY_IMAGE_SIZE, build_tiny_pipeline
    from walkcut.export.api import export_model

    folder = tmp_path_factory.mktemp("tiny_backends")
    model = build_tiny_pipeline(folder / "sd")
    return export_model(str(model), folder / "tiny_fp16.onnx", image_size=TINY_IMAGE_SIZE,
                        attn_res=TINY_ATTN_RES, fp16=True, progress=False).path


def test_io_binding_on_the_exported_tiny_fp16_model(tiny_fp16_export):
    path = tiny_fp16_export
    plain = EngineSource.from_path(path, backend="ort-cpu")
    assert plain.contract.precision == "fp16"
    io = plain.contract.io
    bound = EngineSource(OrtBackend(path, io_binding=True, io_shapes=(io.input_shape, io.output_shape)),
                         plain.contract, name=str(path))
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        img = rng.integers(0, 256, (96, 130, 3), dtype=np.uint8)
        np.testing.assert_array_equal(bound.transition(img).P, plain.transition(img).P)
    assert bound.backend._bound.calls == 2


needs_cuda = pytest.mark.skipif("ort-cuda" not in available_backends(),
                                reason="onnxruntime-gpu with CUDA not installed")


@needs_cuda
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_cuda_io_binding_matches_cpu(fake_model, cuda_graph):  # pragma: no cover - GPU machines only
    cpu = OrtBackend(fake_model)
    gpu = OrtBackend(fake_model, "ort-cuda", io_binding=True, cuda_graph=cuda_graph)
    for x in _images(3, seed=3):  # the first call captures the graph, the later ones replay it
        np.testing.assert_allclose(gpu.run(x), cpu.run(x), atol=1e-4)
    assert gpu.describe()["readback"] in ("update_inplace", "numpy")


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
    ({"normalization": "yuv_centered"}, "normalization.*re-export"),
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


def test_version_1_contract_is_still_read():
    """Models exported by walkcut 0.2 (contract version 1) keep working: a UNet, no cut defaults."""
    d = json.loads(ModelContract(image_size=128, attn_res=8).to_json())
    for key in ("backbone", "cut_defaults"):
        del d[key]
    d["contract_version"] = 1
    c = ModelContract.from_json(json.dumps(d))
    assert (c.backbone, dict(c.cut_defaults), c.contract_version) == ("unet", {}, 1)
    d["cut_defaults"] = {"mode": "walk"}  # a version-2 field in a version-1 contract is malformed
    with pytest.raises(ContractError, match="unknown contract fields.*cut_defaults"):
        ModelContract.from_json(json.dumps(d))


@pytest.mark.parametrize("fields, match", [
    ({"backbone": "vit", "image_size": 224, "attn_res": 16}, None),
    ({"backbone": "vit", "image_size": 230, "attn_res": 16}, "multiple of attn_res"),
    ({"backbone": "unet", "image_size": 224, "attn_res": 16}, "multiple of 64"),
    ({"backbone": "cnn", "image_size": 256, "attn_res": 16}, "backbone must be one of"),
    ({"image_size": 256, "attn_res": 16, "cut_defaults": {"modes": "walk"}}, "unknown keys.*modes"),
])
def test_contract_v2_fields_are_validated(fields, match):
    if match is None:
        assert ModelContract(**fields).backbone == "vit"
    else:
        with pytest.raises(ContractError, match=match):
            ModelContract(**fields)


@pytest.mark.parametrize("normalization, expect", [
    ("minus_one_to_one", lambda x: x / 127.5 - 1),
    ("zero_to_one", lambda x: x / 255.0),
    ("imagenet", lambda x: (x / 255.0 - np.array([0.485, 0.456, 0.406])[:, None, None])
     / np.array([0.229, 0.224, 0.225])[:, None, None]),
])
def test_preprocess_normalizations(normalization, expect):
    from walkcut.runtime.sources.preprocess import preprocess

    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    contract = ModelContract(image_size=64, attn_res=8, normalization=normalization)
    x = preprocess(image, contract)
    np.testing.assert_allclose(x[0], expect(image.transpose(2, 0, 1).astype(np.float64)), atol=1e-5)
