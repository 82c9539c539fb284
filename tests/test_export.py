"""Export stage on a tiny random SD model: CLI, ONNX vs torch, contract, truncation, errors.

Everything runs on CPU in seconds; the tiny model is built once per session (export_fixtures).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import torch
from export_fixtures import TINY_ATTN_RES, TINY_IMAGE_SIZE, tiny_sd  # noqa: F401
from walkcut.runtime.defaults import METADATA_KEY
from walkcut.runtime.sources.contract import ModelContract

from walkcut.cli import main

SIZE_ARGS = ["--image-size", str(TINY_IMAGE_SIZE), "--attn-res", str(TINY_ATTN_RES), "--no-progress"]
N = TINY_ATTN_RES**2


def _export(model_dir, out: Path, *extra: str) -> int:
    return main(["export", "--model", str(model_dir), "--out", str(out), *SIZE_ARGS, *extra])


def _run(path: Path, image: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["attention"], {"image": image})[0]


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tiny_sd, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    assert _export(tiny_sd, out) == 0
    return out


def _wrapper(tiny_sd, layers="encoder"):  # noqa: F811
    from walkcut.export.loading import load_components
    from walkcut.export.wrapper import AttentionExportModel

    c = load_components(str(tiny_sd))
    return AttentionExportModel(c.unet, c.vae, c.prompt_embedding, image_size=TINY_IMAGE_SIZE,
                                attn_res=TINY_ATTN_RES, layers=layers).eval()


def test_cli_export_prints_one_line_and_is_deterministic(exported, tiny_sd, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "sub" / "m.onnx"
    assert _export(tiny_sd, out) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(out) in lines[0] and "max rel error" in lines[0]
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx"]  # no temp files left
    # a second export of the same weights computes exactly the same function
    image = _image(5)
    np.testing.assert_array_equal(_run(exported, image), _run(out, image))


def test_ort_matches_torch_and_rows_sum_to_one(exported, tiny_sd):  # noqa: F811
    image = _image(3)
    got = _run(exported, image)
    assert got.shape == (1, N, N) and got.dtype == np.float32
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
    with torch.no_grad():
        ref = _wrapper(tiny_sd)(torch.from_numpy(image)).numpy()
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4


def test_output_changes_with_image(exported):
    a, b = _run(exported, _image(0)), _run(exported, _image(1))
    assert np.abs(a - b).max() > 1e-3 * np.abs(a).max()


def test_contract_round_trips(exported):
    import onnx
    from walkcut.runtime.sources.engine import read_contract

    model = onnx.load(str(exported))
    meta = {p.key: p.value for p in model.metadata_props}
    contract = ModelContract.from_metadata(meta)
    assert contract == read_contract(exported)
    assert (contract.image_size, contract.attn_res, contract.layers) == (TINY_IMAGE_SIZE, TINY_ATTN_RES, "encoder")
    assert contract.resolutions == (16, 8, 4) and abs(sum(contract.weights) - 1) < 1e-9
    assert contract.weights[0] / contract.weights[2] == pytest.approx(4.0)
    assert contract.timestep == 300 and contract.noise is False and contract.opset == 20
    assert contract.precision == "fp32" and len(contract.model_hash) == 16
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [20]
    assert ModelContract.from_json(meta[METADATA_KEY]).to_json() == meta[METADATA_KEY]
    contract.check_runtime_support()


def test_fp16_export_close_to_fp32(exported, tiny_sd, tmp_path):  # noqa: F811
    from walkcut.export.onnx_export import FP16_TOLERANCE
    from walkcut.runtime.sources.engine import read_contract

    out = tmp_path / "half.onnx"
    assert _export(tiny_sd, out, "--fp16") == 0
    assert read_contract(out).precision == "fp16"
    image = _image(7)
    half, full = _run(out, image), _run(exported, image)
    assert half.dtype == np.float32  # IO stays float32
    np.testing.assert_allclose(half.sum(-1), 1.0, atol=1e-3)
    assert np.abs(half - full).max() / np.abs(full).max() < FP16_TOLERANCE


def test_encoder_graph_is_truncated(exported, tiny_sd):  # noqa: F811
    """The encoder preset traces fewer nodes than all; eager stops at the last selected layer."""
    import onnx
    from walkcut.export.onnx_export import count_nodes, sample_image, trace_to_onnx

    x = sample_image(TINY_IMAGE_SIZE)
    enc, full = _wrapper(tiny_sd, "encoder"), _wrapper(tiny_sd, "all")
    n_enc, n_all = count_nodes(onnx.load(str(exported))), count_nodes(trace_to_onnx(full, x).model)
    assert n_enc < 0.7 * n_all
    calls = []
    for up in enc.unet.up_blocks:
        up.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        enc(x)
    assert not calls  # no up block ran


@pytest.mark.parametrize("spec,count", [("encoder", 3), ("all", 7), ("16", 3), ("encoder:16", 1),
                                        ("8,4", 4)])
def test_layer_selection(tiny_sd, spec, count):  # noqa: F811
    w = _wrapper(tiny_sd, spec)
    assert len(w.selected) == count
    assert [layer.order for layer in w.selected] == sorted(layer.order for layer in w.selected)


@pytest.mark.parametrize("spec", ["", "decoder", "64", "16,x"])
def test_bad_layer_spec(tiny_sd, spec):  # noqa: F811
    with pytest.raises(ValueError, match="layers"):
        _wrapper(tiny_sd, spec)


def test_noise_option_changes_output(tiny_sd):  # noqa: F811
    from walkcut.export.configs import alphas_cumprod, load_architecture
    from walkcut.export.loading import load_components
    from walkcut.export.onnx_export import sample_image
    from walkcut.export.wrapper import AttentionExportModel

    c = load_components(str(tiny_sd))
    kw = {"image_size": TINY_IMAGE_SIZE, "attn_res": TINY_ATTN_RES}
    x = sample_image(TINY_IMAGE_SIZE)
    with torch.no_grad():
        clean = AttentionExportModel(c.unet, c.vae, c.prompt_embedding, **kw)(x)
        noisy = AttentionExportModel(c.unet, c.vae, c.prompt_embedding, noise=True,
                                     alphas_cumprod=alphas_cumprod(load_architecture("sd15")), **kw)(x)
    assert (clean - noisy).abs().max() > 1e-4
    with pytest.raises(ValueError, match="alphas_cumprod"):
        AttentionExportModel(c.unet, c.vae, c.prompt_embedding, noise=True, **kw)


@pytest.mark.parametrize("kw,match", [({"image_size": 100}, "image_size"), ({"attn_res": 3}, "attn_res"),
                                      ({"timestep": 1000}, "timestep")])
def test_wrapper_rejects_bad_values(tiny_sd, kw, match):  # noqa: F811
    from walkcut.export.loading import load_components
    from walkcut.export.wrapper import AttentionExportModel

    c = load_components(str(tiny_sd))
    args = {"image_size": TINY_IMAGE_SIZE, "attn_res": TINY_ATTN_RES} | kw
    with pytest.raises(ValueError, match=match):
        AttentionExportModel(c.unet, c.vae, c.prompt_embedding, **args)


@pytest.mark.parametrize("make", ["missing", "empty_dir", "bad_file"])
def test_bad_model_source_gives_clear_error(tmp_path, capsys, make):
    target = tmp_path / "weights"
    if make == "empty_dir":
        target.mkdir()
    elif make == "bad_file":
        target = tmp_path / "model.safetensors"
        target.write_bytes(b"not a checkpoint")
    out = tmp_path / "m.onnx"
    rc = main(["export", "--model", str(target), "--out", str(out), *SIZE_ARGS])
    err = capsys.readouterr().err
    assert rc == 2 and "Supply the weights" in err and str(target) in err
    assert not out.exists() and list(tmp_path.glob(".m.onnx*")) == []


def test_hub_id_offline_gives_clear_error(tmp_path, capsys):
    rc = main(["export", "--model", "walkcut-tests/no-such-model", "--offline", "--out",
               str(tmp_path / "m.onnx"), *SIZE_ARGS])
    err = capsys.readouterr().err
    assert rc == 2 and "walkcut-tests/no-such-model" in err and "HF_TOKEN" in err


def test_trt_without_tensorrt_fails_fast(tiny_sd, tmp_path, capsys):  # noqa: F811
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed")
    rc = _export(tiny_sd, tmp_path / "m.onnx", "--trt")
    assert rc == 2 and "TensorRT is not installed" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_trt_engine_build(exported, tmp_path):
    pytest.importorskip("tensorrt")
    import json
    import shutil

    from walkcut.runtime.sources.engine import read_contract
    from walkcut.export.trt import build_engine

    onnx_path = tmp_path / exported.name
    shutil.copy(exported, onnx_path)
    engine = build_engine(onnx_path, read_contract(onnx_path))
    sidecar = json.loads(engine.with_name(engine.name + ".json").read_text())
    assert engine.stat().st_size > 0 and sidecar["contract"]["attn_res"] == TINY_ATTN_RES


def test_export_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from walkcut.cli import build_parser\n"
            "build_parser().parse_args(['export', '--model', 'x', '--out', 'y.onnx'])")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("r,big_r", [(16, 8), (8, 8), (4, 8), (8, 32)])
def test_resample_known_answers(r, big_r):
    """Uniform stays uniform, identity pools to identity, rows stay stochastic, replication is exact."""
    from walkcut.export.aggregate import resample_attention

    n, m = r * r, big_r * big_r
    uniform = resample_attention(torch.full((1, n, n), 1.0 / n), r, big_r)
    torch.testing.assert_close(uniform, torch.full((1, m, m), 1.0 / m))
    eye = resample_attention(torch.eye(n)[None], r, big_r)
    torch.testing.assert_close(eye.sum(-1), torch.ones(1, m))
    if r >= big_r:
        torch.testing.assert_close(eye, torch.eye(m)[None])
    else:  # each coarse query is copied to its f x f block of fine queries
        f = big_r // r
        grid = eye.reshape(big_r, big_r, m)
        torch.testing.assert_close(grid[0, 0], grid[f - 1, f - 1])
        assert eye[0].argmax(-1)[0] == 0  # a query still attends most to its own place


def test_aggregate_weights_follow_resolution():
    from walkcut.export.aggregate import aggregate_attention, resolution_weights

    assert resolution_weights((64, 32, 16, 8)) == pytest.approx((8 / 15, 4 / 15, 2 / 15, 1 / 15))
    a = torch.eye(16)[None]  # r = 4: identity
    b = torch.full((1, 16, 16), 1 / 16)  # uniform
    out = aggregate_attention([(4, a), (4, b)], 4, (4,), (1.0,))  # same resolution: mean of layers
    torch.testing.assert_close(out, (a + b) / 2)


def test_failed_verification_leaves_no_model(tiny_sd, tmp_path, monkeypatch):  # noqa: F811
    from walkcut.export import onnx_export

    monkeypatch.setattr(onnx_export, "FP32_TOLERANCE", -1.0)  # no export can pass this
    out = tmp_path / "m.onnx"
    assert _export(tiny_sd, out) == 2
    assert list(tmp_path.iterdir()) == []
