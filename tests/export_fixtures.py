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
