"""DINOv2 export on tiny random models: CLI, ONNX vs torch vs transformers' own attentions, truncation.

The tiny architectures (``models/dinov2-tiny.json``, ``dinov2-tiny-reg.json``: 4 layers, width 32,
patch 8, an 8 x 8 position grid; the second with 2 register tokens) are exported through
``--random-weights --arch`` and through a folder written by ``save_pretrained``. The folder models
get larger weights than the random initialisation, so their attention is far from uniform and every
weight is distinct (the truncation test recognises weights by their values).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import torch
from walkcut.runtime import defaults
from walkcut.runtime.sources.contract import ModelContract

from walkcut.cli import main
from walkcut.export.vit_spec import parse_layers

REPO = Path(__file__).resolve().parents[1]
PATCH = 8  # the tiny architectures' patch size
NATIVE = 64  # their position grid: 8 x 8 patches, no interpolation at S = 64
ARCHS = ("dinov2-tiny", "dinov2-tiny-reg")


def _run(path: Path, image: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["attention"], {"image": image})[0]


def _image(size: int, seed: int) -> np.ndarray:
    """An ImageNet-normalised-looking input: values of about unit scale around 0."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, (1, 3, size, size)).astype(np.float32)


def _contract(path: Path) -> ModelContract:
    from walkcut.runtime.sources.engine import read_contract

    return read_contract(path)


def reference_attention(model, image: np.ndarray, indices, prefix: int) -> np.ndarray:
    """The aggregation computed from transformers' own ``output_attentions``, in float64.

    Head mean, patch-to-patch block (the ``prefix`` CLS + register tokens dropped), mean over the
    layers ``indices``, rows renormalised.
    """
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(image), output_attentions=True)
    n = (image.shape[-1] // PATCH) ** 2
    assert out.attentions[0].shape[-1] == prefix + n  # the prefix count is right
    maps = [out.attentions[i][0].double().mean(0)[prefix:, prefix:] for i in indices]
    mean = torch.stack(maps).mean(0)
    return (mean / mean.sum(-1, keepdim=True)).numpy()[None]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())


def _build_folder(folder: Path, arch: str) -> Path:
    from walkcut.export.vit import build_dinov2
    from walkcut.export.vit_spec import load_vit_architecture

    model = build_dinov2(load_vit_architecture(arch).config, seed=3)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():  # peaked attention, and no two weights alike (the random init repeats 0s and 1s)
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if p.ndim >= 2 else 0.05) + (p if p.ndim < 2 else 0))
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module", params=ARCHS)
def tiny_folder(request, tmp_path_factory) -> Path:
    """A tiny DINOv2 (without / with registers) saved with ``save_pretrained``."""
    return _build_folder(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module", params=ARCHS)
def random_export(request, tmp_path_factory):
    """(arch, path) of ``walkcut export --random-weights --arch ARCH`` at S = 64, default layers."""
    out = tmp_path_factory.mktemp("vit") / f"{request.param}.onnx"
    assert main(["export", "--random-weights", "--arch", request.param, "--image-size", str(NATIVE),
                 "--out", str(out), "--no-progress"]) == 0
    return request.param, out


#: The folder exports: S = 48 (6 x 6 grid, position embeddings interpolated from 8 x 8), layers 0 and 2
#: of 4, so layer 3 must be absent from the graph.
FOLDER_S, FOLDER_LAYERS = 48, "0,2"


@pytest.fixture(scope="module")
def folder_export(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("vit_folder") / "m.onnx"
    assert main(["export", "--model", str(tiny_folder), "--image-size", str(FOLDER_S), "--layers", FOLDER_LAYERS,
                 "--out", str(out), "--no-progress"]) == 0
    return tiny_folder, out


# --- through --random-weights --arch ----------------------------------------------------------------

def test_random_export_matches_transformers_attentions(random_export):
    from walkcut.export.vit import build_dinov2
    from walkcut.export.vit_spec import load_vit_architecture

    arch, path = random_export
    image = _image(NATIVE, 1)
    got = _run(path, image)
    n = (NATIVE // PATCH) ** 2
    assert got.shape == (1, n, n) and got.dtype == np.float32
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
    config = load_vit_architecture(arch).config
    model = build_dinov2(config, seed=0)  # the exporter's seed: the same weights
    default_layers = parse_layers(defaults.VIT_LAYERS, 4)  # the export's default layer set
    ref = reference_attention(model, image, default_layers, 1 + config.get("num_register_tokens", 0))
    assert _rel(got, ref) < 1e-4


def test_random_export_contract(random_export):
    from walkcut.export.loading import weights_hash
    from walkcut.export.vit import build_dinov2
    from walkcut.export.vit_spec import load_vit_architecture

    arch, path = random_export
    c = _contract(path)
    registers = 2 if arch.endswith("-reg") else 0
    assert (c.backbone, c.image_size, c.attn_res, c.normalization) == ("vit", NATIVE, NATIVE // PATCH, "imagenet")
    assert (c.layers, c.resolutions, c.weights) == (defaults.VIT_LAYERS, (8,), (1.0,))
    assert (c.model_id, c.precision, c.opset, c.contract_version) == (f"random:{arch}", "fp32", 20, 2)
    assert dict(c.cut_defaults) == defaults.VIT_CUT_DEFAULTS
    assert c.model_hash == weights_hash(build_dinov2(load_vit_architecture(arch).config, seed=0))
    extra = dict(c.extra)
    assert extra["family"] == "dinov2" and extra["arch"] == arch and extra["random_weights"] is True
    assert (extra["patch_size"], extra["prefix_tokens"], extra["register_tokens"]) == (PATCH, 1 + registers, registers)
    assert extra["layer_indices"] == list(parse_layers(defaults.VIT_LAYERS, 4)) and extra["torch"] == torch.__version__
    c.check_runtime_support()


def test_segment_runs_on_the_export(random_export, tmp_path):
    _, path = random_export
    out = tmp_path / "seg"
    assert main(["segment", str(REPO / "examples" / "coffee.jpg"), "--engine", str(path), "--out", str(out)]) == 0
    import cv2

    labels = cv2.imread(str(out / "coffee_labels.png"), cv2.IMREAD_UNCHANGED)
    image = cv2.imread(str(REPO / "examples" / "coffee.jpg"))
    assert labels.shape == image.shape[:2] and (out / "coffee_overlay.png").exists()


# --- through a save_pretrained folder ---------------------------------------------------------------

def test_folder_export_matches_torch_and_transformers(folder_export):
    from transformers import AutoModel
    from walkcut.export.vit import ViTAttentionModel

    folder, path = folder_export
    model = AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    prefix = 1 + int(getattr(model.config, "num_register_tokens", 0))
    n = (FOLDER_S // PATCH) ** 2
    for seed in (0, 1):
        image = _image(FOLDER_S, seed)
        got = _run(path, image)
        np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
        with torch.no_grad():
            wrapped = ViTAttentionModel(model, image_size=FOLDER_S, layers=FOLDER_LAYERS)(torch.from_numpy(image))
        ref = reference_attention(model, image, (0, 2), prefix)
        assert _rel(got, wrapped.numpy()) < 1e-4 and _rel(got, ref) < 1e-4
        assert got.max() > 5.0 / n  # the attention is peaked: the comparisons above are not of near-constants
    assert _rel(_run(path, _image(FOLDER_S, 0)), _run(path, _image(FOLDER_S, 1))) > 1e-2


def test_folder_export_contract(folder_export):
    folder, path = folder_export
    c = _contract(path)
    assert (c.backbone, c.image_size, c.attn_res, c.layers) == ("vit", FOLDER_S, FOLDER_S // PATCH, FOLDER_LAYERS)
    assert c.model_id == str(folder) and len(c.model_hash) == 16
    extra = dict(c.extra)
    assert extra["layer_indices"] == [0, 2] and extra["num_layers"] == 4 and extra["source"] == "folder"
    assert "random_weights" not in extra and extra["arch"] == ""


def _value_keys(arrays) -> set:
    """Order-free fingerprints of arrays (sorted values): the exporter may transpose or rename weights."""
    return {np.sort(np.asarray(a, dtype=np.float32).ravel()).round(6).tobytes() for a in arrays}


def test_folder_graph_stops_after_the_last_selected_layer(folder_export):
    """Layers 0 and 2 selected: layer 3 and the final norm are absent, and of layer 2 only what its
    probabilities need (queries and keys) is there; its values, output projection and MLP are pruned."""
    import onnx
    from onnx import numpy_helper
    from transformers import AutoModel

    folder, path = folder_export
    model = AutoModel.from_pretrained(str(folder))
    in_graph = _value_keys(numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer)

    query_key = ("q_proj", "k_proj", "query", "key")  # transformers 5 and 4.x names

    def matrices(module, keep=lambda name: True):  # the 2-D weights of the sub-modules ``keep`` accepts
        return [p.detach().numpy() for n, p in module.named_parameters() if p.ndim == 2 and keep(n.split(".")[-2])]

    last = model.encoder.layer[2]
    kept = (matrices(model.encoder.layer[0]) + matrices(model.encoder.layer[1])
            + matrices(last, lambda name: name in query_key))
    assert len(kept) == 14 and _value_keys(kept) <= in_graph  # the check sees the weights that are there
    pruned = matrices(model.encoder.layer[3]) + matrices(last, lambda name: name not in query_key)
    assert len(pruned) == 10 and not (_value_keys(pruned) & in_graph)
    assert not (_value_keys([model.layernorm.weight.detach().numpy()]) & in_graph)


# --- options, errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [32, 48, 64, 96])
@pytest.mark.parametrize("spec,indices", [("all", (0, 1, 2, 3)), ("last2", (2, 3)), ("1", (1,)), ("3,0", (0, 3))])
def test_wrapper_matches_transformers_at_any_multiple_of_the_patch(tmp_path_factory, arch, size, spec, indices):
    from walkcut.export.vit import ViTAttentionModel

    model = _cached_model(tmp_path_factory, arch)
    wrapper = ViTAttentionModel(model, image_size=size, layers=spec).eval()
    assert wrapper.layer_indices == indices and len(wrapper.layers) == indices[-1] + 1
    image = _image(size, 2)
    with torch.no_grad():
        got = wrapper(torch.from_numpy(image)).numpy()
    assert got.shape == (1, (size // PATCH) ** 2, (size // PATCH) ** 2)
    ref = reference_attention(model, image, indices, wrapper.prefix_tokens)
    assert _rel(got, ref) < 1e-5


_MODELS: dict = {}


def _cached_model(tmp_path_factory, arch):
    if arch not in _MODELS:
        from transformers import AutoModel

        folder = _build_folder(tmp_path_factory.mktemp(f"{arch}_w"), arch)
        _MODELS[arch] = AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    return _MODELS[arch]


def test_bad_image_size_is_refused_with_the_nearest_sizes(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    rc = main(["export", "--random-weights", "--arch", "dinov2-tiny", "--image-size", "50", "--out", str(out),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "multiple of the patch size 8" in err and "got 50" in err and "48 and 56" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("size,match", [(0, "multiple of the patch size"), (8, "1 x 1 grid"),
                                        (True, "multiple of the patch size"), ("64", "multiple of the patch size"),
                                        (8 * 97, "97 x 97 grid")])
def test_wrapper_rejects_bad_sizes(tmp_path_factory, size, match):
    from walkcut.export.vit import ViTAttentionModel

    with pytest.raises(ValueError, match=match):
        ViTAttentionModel(_cached_model(tmp_path_factory, "dinov2-tiny"), image_size=size)


def test_parse_layers_known_answers():
    from walkcut.export.vit_spec import parse_layers

    assert parse_layers("all", 12) == tuple(range(12))
    assert parse_layers("lasthalf", 12) == tuple(range(6, 12)) and parse_layers("lasthalf", 5) == (2, 3, 4)
    assert parse_layers("last4", 12) == (8, 9, 10, 11)
    assert parse_layers(" LAST1 ", 3) == (2,)
    assert parse_layers("11,0,5", 12) == (0, 5, 11)


@pytest.mark.parametrize("spec", ["", "  ", "last0", "last5", "4", "0,0", "-1", "1,,2", "first2", "encoder", None, 3])
def test_parse_layers_refuses_with_the_value(spec):
    from walkcut.export.vit_spec import parse_layers

    with pytest.raises(ValueError, match=r"layers must be .*got") as info:
        parse_layers(spec, 4)
    assert repr(spec) in str(info.value)


def test_defaults_apply_when_options_are_left_out(monkeypatch, tmp_path):
    """S defaults to 224, layers to walkcut.runtime.defaults.VIT_LAYERS, read when the export runs."""
    from walkcut.export import vit

    seen = {}
    monkeypatch.setattr(defaults, "VIT_LAYERS", "last2")
    monkeypatch.setattr(vit, "export_onnx", lambda wrapper, out, contract, **kw: seen.update(w=wrapper, c=contract))
    vit.export_vit_random("dinov2-tiny", tmp_path / "m.onnx", progress=False)
    assert seen["c"].image_size == vit.DEFAULT_IMAGE_SIZE == 224 and seen["c"].attn_res == 224 // PATCH
    assert seen["c"].layers == "last2" and seen["w"].layer_indices == (2, 3)
    vit.export_vit_random("dinov2-tiny", tmp_path / "m.onnx", attn_res=6, progress=False)  # S = R x patch
    assert seen["c"].image_size == 48


@pytest.mark.parametrize("args,match", [
    (["--timestep", "10"], "--timestep"),
    (["--noise"], "--noise"),
    (["--image-size", "64", "--attn-res", "6"], "not attn_res 6"),
    (["--layers", "last9"], "layers must be"),
])
def test_cli_refuses_options_a_vit_cannot_honour(tmp_path, capsys, args, match):
    out = tmp_path / "m.onnx"
    rc = main(["export", "--random-weights", "--arch", "dinov2-tiny", "--out", str(out), "--no-progress", *args])
    assert rc == 2 and match in capsys.readouterr().err and not out.exists()


def test_cli_refuses_arch_with_a_dinov2_folder(tiny_folder, tmp_path, capsys):
    rc = main(["export", "--model", str(tiny_folder), "--arch", "dinov2-s", "--out", str(tmp_path / "m.onnx")])
    assert rc == 2 and "--arch is for --random-weights" in capsys.readouterr().err


def test_hub_id_offline_gives_clear_error(tmp_path, capsys):
    rc = main(["export", "--model", "facebook/dinov2-small", "--offline", "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "facebook/dinov2-small" in err and "save_pretrained" in err


def test_source_recognition(tiny_folder, tmp_path):
    from walkcut.export.vit_spec import is_dinov2_source

    assert is_dinov2_source(str(tiny_folder))
    assert is_dinov2_source("facebook/dinov2-small") and is_dinov2_source("facebook/dinov2-with-registers-large")
    assert is_dinov2_source(None, "dinov2-b-reg") and not is_dinov2_source(None, "sd15")
    assert not is_dinov2_source("stable-diffusion-v1-5/stable-diffusion-v1-5")
    sd = tmp_path / "sd"
    (sd / "unet").mkdir(parents=True)
    assert not is_dinov2_source(str(sd))
    vit_json = tmp_path / "other.json"  # a ViT architecture file outside models/
    vit_json.write_text(json.dumps({"config": {"model_type": "dinov2", "hidden_size": 8}}))
    assert is_dinov2_source(None, str(vit_json))
    onnx_file = tmp_path / "dinov2.onnx"  # an existing file is never a DINOv2 source here
    onnx_file.write_bytes(b"")
    assert not is_dinov2_source(str(onnx_file))


def test_folder_of_another_model_type_is_refused(tmp_path):
    from walkcut.export.loading import ModelSourceError
    from walkcut.export.vit import load_dinov2

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelSourceError, match="Supply DINOv2 weights"):
        load_dinov2(str(tmp_path))


def test_folder_with_a_classification_head_loads_its_base_model(tmp_path):
    from transformers import Dinov2Config, Dinov2ForImageClassification
    from walkcut.export.vit import load_dinov2
    from walkcut.export.vit_spec import load_vit_architecture

    fields = {k: v for k, v in load_vit_architecture("dinov2-tiny").config.items()
              if k not in ("model_type", "architectures")}
    classifier = Dinov2ForImageClassification(Dinov2Config(**fields, num_labels=3))
    classifier.save_pretrained(str(tmp_path))
    loaded = load_dinov2(str(tmp_path)).model
    assert type(loaded).__name__ == "Dinov2Model" and loaded.config._attn_implementation == "eager"
    torch.testing.assert_close(loaded.encoder.layer[3].mlp.fc2.weight, classifier.dinov2.encoder.layer[3].mlp.fc2.weight)


@pytest.mark.parametrize("name,low,high", [("dinov2-s", 21e6, 23e6), ("dinov2-b", 85e6, 88e6),
                                           ("dinov2-l", 300e6, 306e6)])
def test_published_architectures_have_the_published_sizes(name, low, high):
    """DINOv2 paper: ViT-S/14 21 M, ViT-B/14 86 M, ViT-L/14 300 M parameters (built on the meta device)."""
    from walkcut.export.vit import build_dinov2
    from walkcut.export.vit_spec import load_vit_architecture

    for variant in (name, f"{name}-reg"):
        arch = load_vit_architecture(variant)
        model = build_dinov2(arch.config, device="meta")
        assert low <= sum(p.numel() for p in model.parameters()) <= high
        assert model.config.patch_size == 14 and model.config._attn_implementation == "eager"
        assert getattr(model.config, "num_register_tokens", 0) == (4 if variant.endswith("-reg") else 0)
        assert arch.hub_id.startswith("facebook/dinov2-")


def test_fp16_export_close_to_fp32(folder_export, tmp_path):
    from walkcut.export.onnx_export import FP16_TOLERANCE

    folder, full = folder_export
    out = tmp_path / "half.onnx"
    assert main(["export", "--model", str(folder), "--image-size", str(FOLDER_S), "--layers", FOLDER_LAYERS,
                 "--fp16", "--out", str(out), "--no-progress"]) == 0
    assert _contract(out).precision == "fp16"
    image = _image(FOLDER_S, 5)
    half, ref = _run(out, image), _run(full, image)
    assert half.dtype == np.float32
    np.testing.assert_allclose(half.sum(-1), 1.0, atol=1e-3)
    assert _rel(half, ref) < FP16_TOLERANCE


def test_failed_verification_leaves_no_model(monkeypatch, tmp_path):
    from walkcut.export import onnx_export

    monkeypatch.setattr(onnx_export, "FP32_TOLERANCE", -1.0)  # no export can pass this
    out = tmp_path / "m.onnx"
    assert main(["export", "--random-weights", "--arch", "dinov2-tiny", "--image-size", "32", "--out", str(out),
                 "--no-progress"]) == 2
    assert list(tmp_path.iterdir()) == []
