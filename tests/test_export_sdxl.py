"""SDXL-family export (SDXL base, SSD-1B, Segmind-Vega) on a tiny random SDXL-topology model.

The tiny model (``models/tiny-sdxl.json``) has the SDXL topology at toy widths: no attention in the
first down block, two transformer blocks per attention module in the last level, the ``text_time``
added embedding and two text encoders. It is saved in diffusers format and as one SDXL-layout
checkpoint, and loaded through the same paths as real weights. The full-size architectures are
checked on the meta device (layer lists, checkpoint detection) without building their weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import torch
from export_fixtures import (  # noqa: F401
    TINY_XL_ATTN_RES,
    TINY_XL_IMAGE_SIZE,
    _unet_key_to_ldm,
    tiny_xl,
    write_ldm_xl_checkpoint,
)

from walkcut.cli import main

SIZE_ARGS = ["--image-size", str(TINY_XL_IMAGE_SIZE), "--attn-res", str(TINY_XL_ATTN_RES), "--no-progress"]
N = TINY_XL_ATTN_RES**2


def _run(path: Path, image: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["attention"], {"image": image})[0]


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (1, 3, TINY_XL_IMAGE_SIZE, TINY_XL_IMAGE_SIZE)).astype(np.float32)


def _initializers(path: Path) -> dict:
    import onnx

    return {t.name: t for t in onnx.load(str(path)).graph.initializer}


@pytest.fixture(scope="module")
def exported_xl(tiny_xl, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("export_xl") / "tiny_xl.onnx"
    assert main(["export", "--model", str(tiny_xl), "--out", str(out), *SIZE_ARGS]) == 0
    return out


def test_folder_conditioning_matches_diffusers_sdxl_pipeline(tiny_xl):  # noqa: F811
    """Our empty-prompt conditioning is exactly what StableDiffusionXLPipeline computes."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
    from walkcut.export.loading import load_components
    from walkcut.export.wrapper import AttentionExportModel

    c = load_components(str(tiny_xl))
    assert c.family == "sdxl" and c.source == "folder"
    pipe = StableDiffusionXLPipeline(
        vae=c.vae, unet=c.unet, scheduler=EulerDiscreteScheduler(),
        text_encoder=CLIPTextModel.from_pretrained(tiny_xl / "text_encoder"),
        text_encoder_2=CLIPTextModelWithProjection.from_pretrained(tiny_xl / "text_encoder_2"),
        tokenizer=CLIPTokenizer.from_pretrained(tiny_xl / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(tiny_xl / "tokenizer_2"),
    )
    prompt, _, pooled, _ = pipe.encode_prompt("", do_classifier_free_guidance=False)
    torch.testing.assert_close(c.prompt_embedding, prompt, rtol=0, atol=0)
    torch.testing.assert_close(c.pooled_embedding, pooled, rtol=0, atol=0)
    s = TINY_XL_IMAGE_SIZE
    time_ids = pipe._get_add_time_ids((s, s), (0, 0), (s, s), dtype=torch.float32,
                                      text_encoder_projection_dim=pooled.shape[-1])
    w = AttentionExportModel(c.unet, c.vae, c.prompt_embedding, pooled_embedding=c.pooled_embedding,
                             image_size=s, attn_res=TINY_XL_ATTN_RES)
    torch.testing.assert_close(w.time_ids, time_ids, rtol=0, atol=0)


def test_ort_matches_torch_and_rows_sum_to_one(exported_xl, tiny_xl):  # noqa: F811
    from walkcut.export.loading import load_components
    from walkcut.export.wrapper import AttentionExportModel

    image = _image(3)
    got = _run(exported_xl, image)
    assert got.shape == (1, N, N) and got.dtype == np.float32
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
    c = load_components(str(tiny_xl))
    w = AttentionExportModel(c.unet, c.vae, c.prompt_embedding, pooled_embedding=c.pooled_embedding,
                             image_size=TINY_XL_IMAGE_SIZE, attn_res=TINY_XL_ATTN_RES).eval()
    with torch.no_grad():
        ref = w(torch.from_numpy(image)).numpy()
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4
    other = _run(exported_xl, _image(4))
    assert np.abs(other - got).max() > 1e-3 * np.abs(got).max()  # the image matters


def test_contract_records_family_and_conditioning(exported_xl):
    from walkcut.runtime.sources.engine import read_contract

    c = read_contract(exported_xl)
    c.check_runtime_support()
    s = TINY_XL_IMAGE_SIZE
    # latent 16: down block 0 has no attention; down 1 at 8; down 2 and mid at 4
    assert (c.image_size, c.attn_res, c.layers, c.resolutions) == (s, TINY_XL_ATTN_RES, "encoder", (8, 4))
    assert c.weights == pytest.approx((2 / 3, 1 / 3))
    assert c.extra["family"] == "sdxl" and c.extra["time_ids"] == [s, s, 0, 0, s, s]
    assert c.extra["vae_precision"] == "fp32" and c.extra["native_image_size"] == 1024
    names = c.extra["layer_names"]
    # every transformer block of the selected modules: 1 at 8, 2 (down 2) + 2 (mid) at 4
    assert names == ["down_blocks.1.attentions.0.transformer_blocks.0.attn1",
                     "down_blocks.2.attentions.0.transformer_blocks.0.attn1",
                     "down_blocks.2.attentions.0.transformer_blocks.1.attn1",
                     "mid_block.attentions.0.transformer_blocks.0.attn1",
                     "mid_block.attentions.0.transformer_blocks.1.attn1"]


def test_encoder_graph_holds_no_up_block(exported_xl):
    names = list(_initializers(exported_xl))
    assert any(n.startswith("unet.mid_block.attentions") for n in names)  # the mid block's attention is used
    assert not any(n.startswith(("unet.up_blocks", "unet.conv_out", "unet.conv_norm_out")) for n in names)


def test_segment_runs_on_the_exported_model(exported_xl, tmp_path):
    import cv2

    img = tmp_path / "scene.png"
    yy, xx = np.mgrid[0:96, 0:128]
    cv2.imwrite(str(img), np.stack([(xx > 64) * 200, (yy > 48) * 150, xx], -1).astype(np.uint8))
    out = tmp_path / "out"
    assert main(["segment", str(img), "--out", str(out), "--engine", str(exported_xl)]) == 0
    labels = cv2.imread(str(out / "scene_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels is not None and labels.shape == (96, 128)


def test_single_file_matches_folder_and_exports_fp16_with_fp32_vae(tiny_xl, tmp_path):  # noqa: F811
    from walkcut.export.loading import detect_checkpoint_arch, load_components
    from walkcut.runtime.sources.engine import read_contract

    ckpt = write_ldm_xl_checkpoint(tiny_xl, tmp_path / "tiny_xl.safetensors")
    assert detect_checkpoint_arch(ckpt) == "tiny-sdxl"  # from the UNet layout, header only
    from_file, from_folder = load_components(str(ckpt)), load_components(str(tiny_xl))
    assert from_file.source == "file" and from_file.arch == "tiny-sdxl"
    for a, b in ((from_file.unet, from_folder.unet), (from_file.vae, from_folder.vae)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)
    # conditioning from our tokenizer facts (models/tiny-sdxl.json) equals the real tokenizers'
    torch.testing.assert_close(from_file.prompt_embedding, from_folder.prompt_embedding)
    torch.testing.assert_close(from_file.pooled_embedding, from_folder.pooled_embedding)

    out = tmp_path / "half.onnx"
    assert main(["export", "--model", str(ckpt), "--out", str(out), "--fp16", *SIZE_ARGS]) == 0
    contract = read_contract(out)
    assert contract.precision == "fp16" and contract.extra["vae_precision"] == "fp32"
    assert contract.extra["source"] == "file" and contract.extra["arch"] == "tiny-sdxl"
    from onnx import TensorProto

    init = _initializers(out)
    vae = [t.data_type for n, t in init.items() if "vae_encoder" in n and n.endswith("weight")]
    unet = [t.data_type for n, t in init.items() if "unet" in n and n.endswith("weight")]
    assert vae and set(vae) == {TensorProto.FLOAT}  # SDXL's VAE overflows in fp16: kept float32
    assert unet and set(unet) == {TensorProto.FLOAT16}
    got = _run(out, _image(5))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-3)


@pytest.mark.slow  # builds and exports a random SDXL-family model: ~15 s
def test_random_weights_cli_truncates_after_last_layer(tmp_path, capsys):
    """``--random-weights`` needs no weights; ``encoder:8`` stops after down block 1."""
    from walkcut.runtime.sources.engine import read_contract

    out = tmp_path / "random.onnx"
    rc = main(["export", "--random-weights", "--arch", "tiny-sdxl", "--layers", "encoder:8",
               "--out", str(out), *SIZE_ARGS])
    assert rc == 0 and str(out) in capsys.readouterr().out
    c = read_contract(out)
    assert c.model_id == "random:tiny-sdxl" and c.extra["random_weights"] is True
    assert c.resolutions == (8,) and c.extra["source"] == "random"
    names = list(_initializers(out))
    assert any(n.startswith("unet.down_blocks.1.attentions") for n in names)
    assert not any(n.startswith(("unet.down_blocks.2", "unet.mid_block", "unet.up_blocks")) for n in names)
    np.testing.assert_allclose(_run(out, _image(0)).sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("argv", [["--random-weights"], ["--random-weights", "--arch", "vega", "--model", "x"], []])
def test_random_weights_usage_errors(tmp_path, capsys, argv):
    rc = main(["export", *argv, "--out", str(tmp_path / "m.onnx"), *SIZE_ARGS])
    assert rc == 2 and "--random-weights" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


# --- full-size architectures, meta device (no weights built) ----------------------------------
@pytest.mark.parametrize("arch,size,expected", [
    # {resolution: number of attn1 layers} of the encoder preset
    ("sdxl", 1024, {64: 4, 32: 30}), ("sdxl", 512, {32: 4, 16: 30}),
    ("ssd-1b", 1024, {64: 4, 32: 8}), ("ssd-1b", 512, {32: 4, 16: 8}),
    ("vega", 1024, {64: 2, 32: 4}), ("vega", 512, {32: 2, 16: 4}),
])
def test_full_size_encoder_layers(arch, size, expected):
    from walkcut.export.capture import select_layers, self_attention_layers
    from walkcut.export.configs import build_random_components, load_architecture

    a = load_architecture(arch)
    unet, _, _ = build_random_components(a, device="meta", text_encoder=False)
    layers = select_layers(self_attention_layers(unet, size // 8), "encoder")
    counts = {}
    for layer in layers:
        counts[layer.resolution] = counts.get(layer.resolution, 0) + 1
    assert counts == expected
    # SSD-1B and Vega have no mid-block attention: their encoder graph ends in down block 2
    assert (layers[-1].stage == "mid_block") == (arch == "sdxl")
    n_params = sum(p.numel() for p in unet.parameters()) / 1e9
    assert n_params == pytest.approx({"sdxl": 2.567, "ssd-1b": 1.331, "vega": 0.745}[arch], abs=0.002)


@pytest.mark.parametrize("arch", ["sdxl", "ssd-1b", "vega", "tiny-sdxl"])
def test_checkpoint_layout_detection(arch):
    """The original-layout UNet keys of each architecture are told apart (all are ``xl_base``)."""
    from walkcut.export.configs import build_random_components, load_architecture
    from walkcut.export.loading import _detect_xl_variant

    a = load_architecture(arch)
    unet, _, _ = build_random_components(a, device="meta", text_encoder=False)
    up_has_attn = ["CrossAttn" in t for t in unet.config.up_block_types]
    keys = ["model.diffusion_model." + _unet_key_to_ldm(k, unet.config.layers_per_block, up_has_attn)
            for k in unet.state_dict() if not k.startswith("add_embedding")]
    keys.append("conditioner.embedders.1.model.positional_embedding")
    assert _detect_xl_variant("x.safetensors", keys) == arch


def test_wrapper_needs_pooled_embedding_for_sdxl_only(tiny_xl):  # noqa: F811
    from walkcut.export.loading import load_components
    from walkcut.export.wrapper import AttentionExportModel

    c = load_components(str(tiny_xl))
    kw = {"image_size": TINY_XL_IMAGE_SIZE, "attn_res": TINY_XL_ATTN_RES}
    with pytest.raises(ValueError, match="pooled_embedding"):
        AttentionExportModel(c.unet, c.vae, c.prompt_embedding, **kw)
    with pytest.raises(ValueError, match="expects"):
        AttentionExportModel(c.unet, c.vae, c.prompt_embedding, pooled_embedding=c.pooled_embedding[:, :5], **kw)
