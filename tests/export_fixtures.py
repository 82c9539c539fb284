"""A tiny random Stable Diffusion model in diffusers format, for the export tests (no download).

Built from ``models/tiny.json``: UNet (3 levels, 1 layer per block), VAE (factor 8), a 2-layer CLIP
text encoder and a CLIP tokenizer with a hand-written 1000-id vocabulary. Saved with
``save_pretrained`` so the tests load it through the same diffusers path as real weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY_IMAGE_SIZE = 128  # latent 16: attention at 16, 8 and 4
TINY_ATTN_RES = 8


def _write_tokenizer(folder: Path, arch) -> None:
    from transformers import CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": 26 + i for i, c in enumerate(letters)})
    tok = arch.tokenizer
    vocab["<|startoftext|>"] = tok["bos_token_id"]
    vocab["<|endoftext|>"] = tok["eos_token_id"]
    raw = folder / "raw"
    raw.mkdir(parents=True)
    (raw / "vocab.json").write_text(json.dumps(vocab))
    (raw / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt"),
                              model_max_length=tok["model_max_length"])
    tokenizer.save_pretrained(str(folder / "tokenizer"))


def build_tiny_pipeline(folder: Path) -> Path:
    """Write a tiny random SD model (diffusers layout) into ``folder`` and return it."""
    import torch
    from walkcut.export.configs import build_random_components, load_architecture

    arch = load_architecture("tiny")
    unet, vae, text_encoder = build_random_components(arch, seed=0)
    with torch.no_grad():  # random init leaves some layers at zero; perturb so every path matters
        gen = torch.Generator().manual_seed(1)
        for module in (unet, vae):
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    unet.save_pretrained(str(folder / "unet"))
    vae.save_pretrained(str(folder / "vae"))
    text_encoder.save_pretrained(str(folder / "text_encoder"))
    _write_tokenizer(folder, arch)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """Folder of the tiny random SD model, built once per test session."""
    pytest.importorskip("diffusers")
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd"))


_RESNET_TO_LDM = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                  ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
_VAE_ATTN = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _unet_key_to_ldm(key: str, per_block: int, up_has_attn: list[bool]) -> str:
    parts = key.split(".")
    for d, ldm in _UNET_TOP.items():
        if key.startswith(d + "."):
            return ldm + key[len(d):]

    def resnet(rest: str) -> str:
        for d, ldm in _RESNET_TO_LDM:
            rest = rest.replace(d, ldm)
        return rest

    stage, rest = parts[0], ".".join(parts[4:]) if parts[0] != "mid_block" else ".".join(parts[3:])
    if stage == "down_blocks":
        b, kind, j = int(parts[1]), parts[2], int(parts[3])
        if kind == "downsamplers":
            return f"input_blocks.{b * (per_block + 1) + per_block + 1}.0.op.{'.'.join(parts[5:])}"
        n = b * (per_block + 1) + j + 1
        return f"input_blocks.{n}.0.{resnet(rest)}" if kind == "resnets" else f"input_blocks.{n}.1.{rest}"
    if stage == "mid_block":
        kind, j = parts[1], int(parts[2])
        return f"middle_block.{2 * j}.{resnet(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
    b, kind, j = int(parts[1]), parts[2], int(parts[3])
    if kind == "upsamplers":
        n = b * (per_block + 1) + per_block
        return f"output_blocks.{n}.{2 if up_has_attn[b] else 1}.conv.{'.'.join(parts[5:])}"
    n = b * (per_block + 1) + j
    return f"output_blocks.{n}.0.{resnet(rest)}" if kind == "resnets" else f"output_blocks.{n}.1.{rest}"


def _vae_key_to_ldm(key: str, n_blocks: int) -> str:
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    key = key.replace("downsamplers.0", "downsample").replace("upsamplers.0", "upsample")
    for k in range(2):
        key = key.replace(f"mid_block.resnets.{k}", f"mid.block_{k + 1}")
    if "mid_block.attentions.0" in key:
        key = key.replace("mid_block.attentions.0", "mid.attn_1")
        for d, ldm in _VAE_ATTN:
            key = key.replace(f".{d}.", f".{ldm}.")
    parts = key.split(".")
    if parts[1] in ("down_blocks", "up_blocks"):
        i = int(parts[2])
        if parts[1] == "up_blocks":
            i = n_blocks - 1 - i  # LDM numbers decoder levels from the bottom
        parts[1:3] = ["down" if parts[1] == "down_blocks" else "up", str(i)]
        key = ".".join(parts).replace(".resnets.", ".block.")
    return key


def write_ldm_checkpoint(folder: Path, path: Path) -> Path:
    """Write the diffusers model in ``folder`` as one original-layout (LDM) .safetensors file.

    The inverse of diffusers' single-file conversion, for the tiny test model: it lets the tests
    load a single checkpoint file through ``from_single_file`` and compare with the folder load.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder")
    per_block = unet.config.layers_per_block
    up_has_attn = ["CrossAttn" in t for t in unet.config.up_block_types]
    state = {}
    for k, v in unet.state_dict().items():
        state["model.diffusion_model." + _unet_key_to_ldm(k, per_block, up_has_attn)] = v
    n_blocks = len(vae.config.block_out_channels)
    for k, v in vae.state_dict().items():
        if ".mid_block.attentions.0." in k and v.ndim == 2:
            v = v[:, :, None, None]  # LDM keeps the VAE attention projections as 1x1 convolutions
        state["first_stage_model." + _vae_key_to_ldm(k, n_blocks)] = v
    for k, v in text_encoder.state_dict().items():
        k = k if k.startswith("text_model.") else "text_model." + k  # transformers 5 drops the prefix
        state["cond_stage_model.transformer." + k] = v
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


# --- SDXL family ------------------------------------------------------------------------------
TINY_XL_IMAGE_SIZE = 128  # latent 16: no attention at 16, attention at 8 (down 1) and 4 (down 2, mid)
TINY_XL_ATTN_RES = 8


def _write_tokenizer_2(folder: Path, arch) -> None:
    """Second tokenizer: SDXL pads it with ``!`` (id 0) instead of the end-of-text token."""
    from transformers import CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"!": 0}
    vocab.update({c: 1 + i for i, c in enumerate(letters)})
    vocab.update({c + "</w>": 27 + i for i, c in enumerate(letters)})
    tok = arch.tokenizer_2
    vocab["<|startoftext|>"] = tok["bos_token_id"]
    vocab["<|endoftext|>"] = tok["eos_token_id"]
    raw = folder / "raw_2"
    raw.mkdir(parents=True)
    (raw / "vocab.json").write_text(json.dumps(vocab))
    (raw / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt"), pad_token="!",
                              model_max_length=tok["model_max_length"])
    tokenizer.save_pretrained(str(folder / "tokenizer_2"))


def build_tiny_xl_pipeline(folder: Path) -> Path:
    """Write a tiny random SDXL-topology model (diffusers layout, two text encoders) into ``folder``."""
    import torch
    from walkcut.export.configs import build_random_components, build_random_text_encoders, load_architecture

    arch = load_architecture("tiny-sdxl")
    unet, vae, _ = build_random_components(arch, seed=0, text_encoder=False)
    text_encoder, text_encoder_2 = build_random_text_encoders(arch, seed=1)
    with torch.no_grad():  # as for the SD fixture: no layer left at zero
        gen = torch.Generator().manual_seed(2)
        for module in (unet, vae):
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    unet.save_pretrained(str(folder / "unet"))
    vae.save_pretrained(str(folder / "vae"))
    text_encoder.save_pretrained(str(folder / "text_encoder"))
    text_encoder_2.save_pretrained(str(folder / "text_encoder_2"))
    _write_tokenizer(folder, arch)
    _write_tokenizer_2(folder, arch)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    return folder


@pytest.fixture(scope="session")
def tiny_xl(tmp_path_factory) -> Path:
    """Folder of the tiny random SDXL-topology model, built once per test session."""
    pytest.importorskip("diffusers")
    return build_tiny_xl_pipeline(tmp_path_factory.mktemp("tiny_xl"))


def _open_clip_state(text_encoder_2) -> dict:
    """``CLIPTextModelWithProjection`` weights in the OpenCLIP layout SDXL checkpoints use."""
    import torch

    out = {}
    sd = text_encoder_2.state_dict()
    top = {"text_model.embeddings.position_embedding.weight": "positional_embedding",
           "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
           "text_model.final_layer_norm.weight": "ln_final.weight",
           "text_model.final_layer_norm.bias": "ln_final.bias"}
    for k, ldm in top.items():
        out[ldm] = sd[k]
    out["text_projection"] = sd["text_projection.weight"].T.contiguous()  # OpenCLIP multiplies x @ P
    n_layers = text_encoder_2.config.num_hidden_layers
    for i in range(n_layers):
        d, o = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):  # OpenCLIP fuses q, k, v into one in_proj
            out[o + f"attn.in_proj_{kind}"] = torch.cat([sd[d + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
            out[o + f"attn.out_proj.{kind}"] = sd[d + f"self_attn.out_proj.{kind}"]
            out[o + f"ln_1.{kind}"] = sd[d + f"layer_norm1.{kind}"]
            out[o + f"ln_2.{kind}"] = sd[d + f"layer_norm2.{kind}"]
            out[o + f"mlp.c_fc.{kind}"] = sd[d + f"mlp.fc1.{kind}"]
            out[o + f"mlp.c_proj.{kind}"] = sd[d + f"mlp.fc2.{kind}"]
    return out


def write_ldm_xl_checkpoint(folder: Path, path: Path) -> Path:
    """Write the diffusers SDXL-topology model in ``folder`` as one SDXL-layout .safetensors file.

    Keys as SDXL checkpoints have them: ``model.diffusion_model.`` (UNet, ``label_emb`` for the
    added embedding), ``first_stage_model.`` (VAE), ``conditioner.embedders.0.transformer.`` (CLIP
    ViT-L) and ``conditioner.embedders.1.model.`` (OpenCLIP bigG).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder")
    text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2")
    per_block = unet.config.layers_per_block
    up_has_attn = ["CrossAttn" in t for t in unet.config.up_block_types]
    state = {}
    for k, v in unet.state_dict().items():
        if k.startswith("add_embedding.linear_"):
            ldm = "label_emb.0." + ("0" if k.startswith("add_embedding.linear_1") else "2") + k[len("add_embedding.linear_1"):]
        else:
            ldm = _unet_key_to_ldm(k, per_block, up_has_attn)
        state["model.diffusion_model." + ldm] = v
    n_blocks = len(vae.config.block_out_channels)
    for k, v in vae.state_dict().items():
        if ".mid_block.attentions.0." in k and v.ndim == 2:
            v = v[:, :, None, None]
        state["first_stage_model." + _vae_key_to_ldm(k, n_blocks)] = v
    for k, v in text_encoder.state_dict().items():
        if k.endswith("position_ids"):
            continue
        k = k if k.startswith("text_model.") else "text_model." + k
        state["conditioner.embedders.0.transformer." + k] = v
    for k, v in _open_clip_state(text_encoder_2).items():
        state["conditioner.embedders.1.model." + k] = v
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path
