"""Loading Stable Diffusion weights through diffusers' own paths.

Three sources are accepted, the same ones diffusers users know:

- a hub id (``stable-diffusion-v1-5/stable-diffusion-v1-5``): ``from_pretrained`` per component,
  downloaded into the Hugging Face cache when online (gated repos need ``HF_TOKEN``);
- a local diffusers folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``);
- a single checkpoint file (``.safetensors`` / ``.ckpt``): ``StableDiffusionPipeline.from_single_file``
  with our architecture config from ``models/`` (no config download).

Only the UNet, the VAE and the text encoder are loaded (no safety checker). The text encoder is
used once, for the empty-prompt embedding, and then dropped.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .configs import ARCHITECTURES, CHECKPOINT_TYPE_TO_ARCH, load_architecture, write_diffusers_config_folder

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
_HOW_TO_SUPPLY = (
    "Supply the weights in one of these ways: (1) a local diffusers folder with unet/, vae/, "
    "text_encoder/ and tokenizer/ (e.g. `huggingface-cli download stable-diffusion-v1-5/"
    "stable-diffusion-v1-5 --local-dir sd15` on a machine with network); (2) a single checkpoint "
    "file such as v1-5-pruned-emaonly.safetensors (add --arch sd15 or sd2-base if detection fails); "
    "(3) a hub id while online (set HF_TOKEN for gated repositories)."
)


class ModelSourceError(ValueError):
    """The model argument names no usable weights; the message says how to supply them."""


@dataclass
class SDComponents:
    """What the exporter needs from a Stable Diffusion model."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    prompt_embedding: torch.Tensor  # (1, T, C) empty-prompt text-encoder output
    model_id: str
    source: str  # "hub", "folder" or "file"
    arch: str  # architecture name used for configs, or "" when the source had its own


def classify_source(model: str) -> str:
    """``folder``, ``file`` or ``hub`` for a ``--model`` argument; raise if a path is missing."""
    if not isinstance(model, str) or not model.strip():
        raise ModelSourceError(f"--model must be a hub id, folder or checkpoint file, got {model!r}")
    path = Path(model).expanduser()
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "file"
    looks_like_path = (
        model.startswith((".", "/", "~")) or "\\" in model or model.count("/") != 1
        or path.suffix.lower() in CHECKPOINT_SUFFIXES
    )
    if looks_like_path:
        raise ModelSourceError(f"model {model!r}: no such folder or file. {_HOW_TO_SUPPLY}")
    return "hub"


@torch.no_grad()
def empty_prompt_embedding(text_encoder: torch.nn.Module, token_ids: list[int]) -> torch.Tensor:
    """Last hidden state of the text encoder for the padded empty prompt, (1, T, C) float32.

    Matches diffusers' Stable Diffusion ``encode_prompt``: tokens padded to the maximum length, no
    attention mask (SD text encoders do not use one), ``last_hidden_state``.
    """
    ids = torch.tensor([token_ids], dtype=torch.int64)
    return text_encoder(ids)[0].float().detach()


def _tokenizer_ids(tokenizer) -> list[int]:
    n = tokenizer.model_max_length
    return list(tokenizer("", padding="max_length", max_length=n, truncation=True).input_ids)


def _load_pretrained(model: str, *, source: str, local_files_only: bool, token: str | None) -> SDComponents:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kw = {"local_files_only": local_files_only}
    if token:
        kw["token"] = token
    if source == "folder":
        missing = [s for s in ("unet", "vae", "text_encoder", "tokenizer") if not (Path(model) / s).is_dir()]
        if missing:
            raise ModelSourceError(
                f"folder {model!r} is not a diffusers Stable Diffusion folder: it lacks {missing}. "
                + _HOW_TO_SUPPLY
            )
    try:
        tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer", **kw)
        text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", **kw).eval()
        embedding = empty_prompt_embedding(text_encoder, _tokenizer_ids(tokenizer))
        del text_encoder
        vae = AutoencoderKL.from_pretrained(model, subfolder="vae", **kw).eval()
        unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", **kw).eval()
    except (OSError, ValueError) as exc:
        where = "hub id" if source == "hub" else "folder"
        raise ModelSourceError(
            f"could not load Stable Diffusion weights from {where} {model!r} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). {_HOW_TO_SUPPLY}"
        ) from exc
    return SDComponents(unet=unet, vae=vae, prompt_embedding=embedding, model_id=model, source=source, arch="")


def detect_checkpoint_arch(path: str | Path) -> str:
    """Architecture name (``sd15`` / ``sd2-base``) of a single checkpoint file, from its keys."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type, load_single_file_checkpoint

    checkpoint = load_single_file_checkpoint(str(path), local_files_only=True)
    kind = infer_diffusers_model_type(checkpoint)
    del checkpoint
    if kind not in CHECKPOINT_TYPE_TO_ARCH:
        raise ModelSourceError(
            f"checkpoint {str(path)!r} looks like a {kind!r} model; walkcut supports "
            f"{sorted(CHECKPOINT_TYPE_TO_ARCH)} (SD 1.x, SD 2.x base). Pass --arch to override."
        )
    return CHECKPOINT_TYPE_TO_ARCH[kind]


def _load_single_file(path: str, *, arch: str | None) -> SDComponents:
    from diffusers import StableDiffusionPipeline
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        arch_name = arch or detect_checkpoint_arch(path)
        architecture = load_architecture(arch_name)
        with tempfile.TemporaryDirectory(prefix="walkcut-config-") as cfg:
            write_diffusers_config_folder(architecture, cfg)
            pipe = StableDiffusionPipeline.from_single_file(
                path, config=cfg, local_files_only=True, tokenizer=None, safety_checker=None,
                feature_extractor=None, requires_safety_checker=False,
            )
    except ModelSourceError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError, SingleFileComponentError) as exc:
        raise ModelSourceError(
            f"could not load checkpoint file {path!r} ({type(exc).__name__}: {exc}). {_HOW_TO_SUPPLY}"
        ) from exc
    embedding = empty_prompt_embedding(pipe.text_encoder.eval(), architecture.empty_prompt_ids())
    return SDComponents(unet=pipe.unet.eval(), vae=pipe.vae.eval(), prompt_embedding=embedding,
                        model_id=path, source="file", arch=arch_name)


def load_components(model: str, *, arch: str | None = None, local_files_only: bool = False,
                    token: str | None = None) -> SDComponents:
    """Load UNet, VAE and the empty-prompt embedding from a hub id, folder or checkpoint file.

    Parameters
    ----------
    model : str
        Hub id, local diffusers folder, or ``.safetensors``/``.ckpt`` file.
    arch : str, optional
        Architecture of a single checkpoint file (``sd15``, ``sd2-base``, ``tiny`` or a JSON path);
        detected from the checkpoint's keys when omitted.
    local_files_only : bool
        Never touch the network (hub ids must then be in the local cache).
    token : str, optional
        Hugging Face token for gated repositories.

    Raises
    ------
    ModelSourceError
        If the weights cannot be found or read; the message says how to supply them.
    """
    if arch is not None and arch not in ARCHITECTURES and not Path(arch).is_file():
        raise ValueError(f"arch must be one of {ARCHITECTURES} or a JSON file, got {arch!r}")
    source = classify_source(model)
    logger.info("loading %s %s", source, model)
    if source == "file":
        return _load_single_file(str(Path(model).expanduser()), arch=arch)
    return _load_pretrained(model, source=source, local_files_only=local_files_only, token=token)


def weights_hash(*modules: torch.nn.Module, progress: bool = False) -> str:
    """Short SHA-256 over the parameters and buffers of ``modules`` (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    items = [(f"{i}.{k}", v) for i, m in enumerate(modules) for k, v in sorted(m.state_dict().items())]
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="hashing weights", unit="tensor", leave=False)
    for name, t in items:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
