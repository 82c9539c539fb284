"""Architecture configs of the Stable Diffusion families walkcut supports (``models/*.json``).

Each JSON file holds the diffusers/transformers configs of one family (``unet``, ``vae``,
``text_encoder``), the tokenizer facts the empty prompt needs (``tokenizer``: special token ids and
maximum length) and the noise schedule (``scheduler``). They serve three purposes:

- a single checkpoint file carries weights but no configs: :func:`write_diffusers_config_folder`
  turns an architecture into the config folder ``from_single_file(config=...)`` reads;
- benchmarks and the GPU check build the full architecture with random weights (speed does not
  depend on the weights), without any download;
- tests build the ``tiny`` architecture.

The JSON files are packaged data of :mod:`walkcut.models` and are read through the installed package
(:func:`packaged_architecture`, ``importlib.resources``); :mod:`walkcut.export.vit_spec` reads the
DINOv2 ones the same way.

This module imports torch only inside :func:`build_random_components`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ARCHITECTURES = ("sd15", "sd2-base", "tiny", "sdxl", "ssd-1b", "vega", "tiny-sdxl")
#: Architectures of the SDXL family (two text encoders, ``text_time`` added conditioning).
XL_ARCHITECTURES = ("sdxl", "ssd-1b", "vega", "tiny-sdxl")
#: Checkpoint family reported by diffusers' ``infer_diffusers_model_type`` -> our architecture name.
#: ``xl_base`` covers SDXL, SSD-1B and Segmind-Vega alike; :func:`walkcut.export.loading.detect_checkpoint_arch`
#: tells them apart by their transformer depths.
CHECKPOINT_TYPE_TO_ARCH = {"v1": "sd15", "v2": "sd2-base", "xl_base": "sdxl"}


def packaged_architecture(name: str) -> resources.abc.Traversable:
    """The JSON file of a named architecture, packaged data of ``walkcut.models`` (folder ``models/``,
    mapped by pyproject's package-dir; read through the installed package, never by path)."""
    return resources.files("walkcut.models") / f"{name}.json"


@dataclass(frozen=True)
class Architecture:
    """One Stable Diffusion family: component configs plus tokenizer and schedule facts."""

    name: str
    family: str
    hub_id: str
    unet: Mapping[str, Any]
    vae: Mapping[str, Any]
    text_encoder: Mapping[str, Any]
    tokenizer: Mapping[str, Any]
    scheduler: Mapping[str, Any]
    text_encoder_2: Mapping[str, Any] | None = None  # SDXL family: OpenCLIP bigG with projection
    tokenizer_2: Mapping[str, Any] | None = None
    native_image_size: int = 512  # the size the family was trained at (contract default)

    @property
    def is_xl(self) -> bool:
        """SDXL family: two text encoders and the ``text_time`` added conditioning."""
        return self.text_encoder_2 is not None

    @property
    def vae_factor(self) -> int:
        """Pixels per latent cell: 2 ** (number of VAE encoder blocks - 1)."""
        return 2 ** (len(self.vae["block_out_channels"]) - 1)

    def empty_prompt_ids(self, which: int = 1) -> list[int]:
        """Token ids of ``""`` padded to the maximum length, as CLIP's tokenizer produces them.

        ``which=2`` gives the ids of the second tokenizer (SDXL pads it with ``!``, id 0).
        """
        tok = self.tokenizer if which == 1 else self.tokenizer_2
        if tok is None:
            raise ValueError(f"architecture {self.name!r} has no second tokenizer")
        n = int(tok["model_max_length"])
        return [int(tok["bos_token_id"]), int(tok["eos_token_id"])] + [int(tok["pad_token_id"])] * (n - 2)


def load_architecture(name_or_path: str | Path) -> Architecture:
    """Read an architecture by name (one of :data:`ARCHITECTURES`) or from a JSON path.

    Raises
    ------
    ValueError
        If ``name_or_path`` is neither a known name nor an existing JSON file.
    """
    path = Path(name_or_path)
    if str(name_or_path) in ARCHITECTURES:
        path = packaged_architecture(str(name_or_path))
    elif not path.is_file():
        raise ValueError(
            f"architecture {str(name_or_path)!r} is neither one of {ARCHITECTURES} nor a JSON file"
        )
    data = json.loads(path.read_text())
    keys = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"architecture file {path} lacks {missing}")
    if ("text_encoder_2" in data) != ("tokenizer_2" in data):
        raise ValueError(f"architecture file {path} must give both text_encoder_2 and tokenizer_2, or neither")
    return Architecture(
        name=data.get("name", Path(path.name).stem),
        family=data.get("family", ""),
        hub_id=data.get("hub_id", ""),
        text_encoder_2=data.get("text_encoder_2"),
        tokenizer_2=data.get("tokenizer_2"),
        native_image_size=int(data.get("native_image_size", 512)),
        **{k: data[k] for k in keys},
    )


def write_diffusers_config_folder(arch: Architecture, folder: str | Path) -> Path:
    """Write ``arch`` as a diffusers pipeline config folder (configs only, no weights).

    The folder is what ``StableDiffusionPipeline.from_single_file(..., config=folder)`` (or the
    ``StableDiffusionXLPipeline`` one for the SDXL family) reads to build the components a
    checkpoint file's weights are converted into.
    """
    folder = Path(folder)
    parts = [("unet", arch.unet), ("vae", arch.vae), ("text_encoder", arch.text_encoder)]
    if arch.is_xl:
        parts.append(("text_encoder_2", arch.text_encoder_2))
    for sub, cfg in parts:
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / "config.json").write_text(json.dumps(dict(cfg), indent=2))
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(dict(arch.scheduler), indent=2))
    index = {
        "_class_name": "StableDiffusionPipeline",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", arch.scheduler.get("_class_name", "PNDMScheduler")],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": [None, None],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if arch.is_xl:
        for key in ("safety_checker", "feature_extractor", "requires_safety_checker"):
            del index[key]
        index.update({
            "_class_name": "StableDiffusionXLPipeline",
            "force_zeros_for_empty_prompt": True,
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer_2": [None, None],
            "image_encoder": [None, None],
        })
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def alphas_cumprod(arch: Architecture):
    """Cumulative signal fraction (alpha-bar) of the training schedule, as a float64 torch tensor."""
    import torch

    s = arch.scheduler
    n = int(s.get("num_train_timesteps", 1000))
    if s.get("beta_schedule", "scaled_linear") == "scaled_linear":
        betas = torch.linspace(s["beta_start"] ** 0.5, s["beta_end"] ** 0.5, n, dtype=torch.float64) ** 2
    elif s["beta_schedule"] == "linear":
        betas = torch.linspace(s["beta_start"], s["beta_end"], n, dtype=torch.float64)
    else:
        raise ValueError(f"beta_schedule {s['beta_schedule']!r} is not supported")
    return torch.cumprod(1.0 - betas, dim=0)


def build_random_components(arch: Architecture, *, seed: int = 0, device: str = "cpu",
                            text_encoder: bool = True):
    """UNet, VAE and CLIP text encoder of ``arch`` with random weights (no download, no tokenizer).

    Returns
    -------
    unet, vae, text_encoder : torch.nn.Module
        In eval mode, float32, on ``device``; ``text_encoder`` is None when not asked for.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(dict(arch.unet))
        vae = AutoencoderKL.from_config(dict(arch.vae))
        te_cfg = {k: v for k, v in arch.text_encoder.items() if k not in ("architectures", "model_type")}
        te = CLIPTextModel(CLIPTextConfig(**te_cfg)).eval() if text_encoder else None
    return unet.eval(), vae.eval(), te


def build_random_text_encoders(arch: Architecture, *, seed: int = 0, device: str = "cpu"):
    """Both text encoders of an SDXL-family ``arch`` with random weights (no UNet, no VAE).

    Returns
    -------
    text_encoder : transformers.CLIPTextModel
    text_encoder_2 : transformers.CLIPTextModelWithProjection
    """
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if not arch.is_xl:
        raise ValueError(f"architecture {arch.name!r} has a single text encoder")

    def config(cfg):
        return CLIPTextConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})

    torch.manual_seed(seed)
    with torch.device(device):
        te1 = CLIPTextModel(config(arch.text_encoder))
        te2 = CLIPTextModelWithProjection(config(arch.text_encoder_2))
    return te1.eval(), te2.eval()
