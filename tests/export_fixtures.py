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
