"""Loading Stable Diffusion weights through diffusers' own paths.

Three sources are accepted, the same ones diffusers users know:

- a hub id (``stable-diffusion-v1-5/stable-diffusion-v1-5``): ``from_pretrained`` per component,
  downloaded into the Hugging Face cache when online (gated repos need ``HF_TOKEN``);
- a local diffusers folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``);
- a single checkpoint file (``.safetensors`` / ``.ckpt``): ``StableDiffusionPipeline.from_single_file``
  (``StableDiffusionXLPipeline.from_single_file`` for the SDXL family) with our architecture config
  from ``models/`` (no config download).

Only the UNet, the VAE and the text encoder(s) are loaded (no safety checker). The text encoders
are used once, for the empty-prompt conditioning, and then dropped.

SDXL family (SDXL base, SSD-1B, Segmind-Vega): a folder or hub repository with ``text_encoder_2``
is loaded component by component, like SD (one text encoder in memory at a time, instead of the
whole ``StableDiffusionXLPipeline``); the conditioning is what that pipeline's ``encode_prompt("")``
returns (a test checks it): the penultimate hidden states of both text encoders concatenated
(1, 77, 768 + 1280) and the projected pooled output of ``text_encoder_2`` (1, 1280).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from walkcut.export.configs import (
    ARCHITECTURES,
    CHECKPOINT_TYPE_TO_ARCH,
    XL_ARCHITECTURES,
    build_random_components,
    build_random_text_encoders,
    load_architecture,
    write_diffusers_config_folder,
)

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
_HOW_TO_SUPPLY = (
    "Supply the weights in one of these ways: (1) a local diffusers folder with unet/, vae/, "
    "text_encoder/ and tokenizer/ (e.g. `huggingface-cli download stable-diffusion-v1-5/"
    "stable-diffusion-v1-5 --local-dir sd15` on a machine with network); (2) a single checkpoint "
    "file such as v1-5-pruned-emaonly.safetensors or SSD-1B.safetensors (add --arch sd15, sd2-base, "
    "sdxl, ssd-1b or vega if detection fails); (3) a hub id while online (set HF_TOKEN for gated "
    "repositories). To try walkcut without weights, use --random-weights --arch NAME."
)


def _first_line(exc: BaseException) -> str:
    """``"TypeName: first line of the message"`` for an error message that stays one line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class ModelSourceError(ValueError):
    """The model argument names no usable weights; the message says how to supply them."""


@dataclass
class SDComponents:
    """What the exporter needs from a Stable Diffusion model."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    prompt_embedding: torch.Tensor  # (1, T, C) empty-prompt text-encoder output
    model_id: str
    source: str  # "hub", "folder", "file" or "random"
    arch: str  # architecture name used for configs, or "" when the source had its own
    pooled_embedding: torch.Tensor | None = None  # (1, P) SDXL family: text_encoder_2's projection

    @property
    def family(self) -> str:
        """``sdxl`` for the SDXL family (added text/time conditioning), ``sd`` for SD 1.x/2.x."""
        return "sdxl" if self.pooled_embedding is not None else "sd"


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


@torch.no_grad()
def empty_prompt_embedding_xl(text_encoder: torch.nn.Module, text_encoder_2: torch.nn.Module,
                              token_ids: list[int], token_ids_2: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL conditioning of the empty prompt: ``(prompt (1, T, C1 + C2), pooled (1, P))``, float32.

    Matches ``StableDiffusionXLPipeline.encode_prompt`` without clip skip: each encoder's
    penultimate hidden state (``hidden_states[-2]``), concatenated on channels, and the projected
    pooled output (``text_embeds``) of the second encoder.
    """
    out1 = text_encoder(torch.tensor([token_ids], dtype=torch.int64), output_hidden_states=True)
    out2 = text_encoder_2(torch.tensor([token_ids_2], dtype=torch.int64), output_hidden_states=True)
    prompt = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1)
    return prompt.float().detach(), out2.text_embeds.float().detach()


def _tokenizer_ids(tokenizer) -> list[int]:
    n = tokenizer.model_max_length
    return list(tokenizer("", padding="max_length", max_length=n, truncation=True).input_ids)


def _load_pretrained(model: str, *, source: str, local_files_only: bool, token: str | None) -> SDComponents:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kw = {"local_files_only": local_files_only}
    if token:
        kw["token"] = token
    if _has_second_text_encoder(model, source=source, kw=kw):
        return _load_pretrained_xl(model, source=source, kw=kw)
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
            f"could not load Stable Diffusion weights from {where} {model!r} ({_first_line(exc)}). {_HOW_TO_SUPPLY}"
        ) from exc
    return SDComponents(unet=unet, vae=vae, prompt_embedding=embedding, model_id=model, source=source, arch="")


def _has_second_text_encoder(model: str, *, source: str, kw: dict) -> bool:
    """Whether a folder or hub repository is an SDXL-family pipeline (it has ``text_encoder_2``)."""
    if source == "folder":
        return (Path(model) / "text_encoder_2").is_dir()
    from diffusers import DiffusionPipeline

    try:  # model_index.json only (a few hundred bytes)
        index = DiffusionPipeline.load_config(model, **kw)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(
            f"could not read model_index.json of hub id {model!r} ({_first_line(exc)}). {_HOW_TO_SUPPLY}"
        ) from exc
    return "text_encoder_2" in index


def _load_pretrained_xl(model: str, *, source: str, kw: dict) -> SDComponents:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    parts = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
    if source == "folder":
        missing = [s for s in parts if not (Path(model) / s).is_dir()]
        if missing:
            raise ModelSourceError(
                f"folder {model!r} is not a diffusers SDXL folder: it lacks {missing}. " + _HOW_TO_SUPPLY
            )
    try:
        ids = _tokenizer_ids(CLIPTokenizer.from_pretrained(model, subfolder="tokenizer", **kw))
        ids_2 = _tokenizer_ids(CLIPTokenizer.from_pretrained(model, subfolder="tokenizer_2", **kw))
        text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", **kw).eval()
        text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(model, subfolder="text_encoder_2", **kw).eval()
        embedding, pooled = empty_prompt_embedding_xl(text_encoder, text_encoder_2, ids, ids_2)
        del text_encoder, text_encoder_2
        vae = AutoencoderKL.from_pretrained(model, subfolder="vae", **kw).eval()
        unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", **kw).eval()
    except (OSError, ValueError) as exc:
        where = "hub id" if source == "hub" else "folder"
        raise ModelSourceError(
            f"could not load SDXL weights from {where} {model!r} ({_first_line(exc)}). {_HOW_TO_SUPPLY}"
        ) from exc
    return SDComponents(unet=unet, vae=vae, prompt_embedding=embedding, pooled_embedding=pooled,
                        model_id=model, source=source, arch="")


def _checkpoint_keys(path: str) -> list[str]:
    if path.lower().endswith(".safetensors"):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(path, framework="pt") as f:  # the header only: no tensor is read
                return list(f.keys())
        except SafetensorError as exc:  # not an OSError: say what is wrong in the loader's terms
            raise ValueError(f"not a readable .safetensors file ({exc})") from exc
    from diffusers.loaders.single_file_utils import load_single_file_checkpoint

    return list(load_single_file_checkpoint(path, local_files_only=True).keys())


def _detect_xl_variant(path: str, keys: list[str]) -> str:
    """SDXL, SSD-1B or Segmind-Vega from the UNet's key layout (all three look like ``xl_base``).

    They differ in the transformer depth of the last down level (the deepest ``input_blocks`` entry
    with a transformer: 10, 4, 2) and in whether the mid block has attention (``middle_block.1``:
    SDXL only).
    """
    prefix = "model.diffusion_model."
    depths: dict[int, set[str]] = {}
    for k in keys:
        if k.startswith(prefix + "input_blocks.") and ".transformer_blocks." in k:
            block = int(k[len(prefix + "input_blocks."):].split(".")[0])
            depths.setdefault(block, set()).add(k.split(".transformer_blocks.")[1].split(".")[0])
    depth = len(depths[max(depths)]) if depths else 0
    mid_attention = any(k.startswith(prefix + "middle_block.1.") for k in keys)
    for name in XL_ARCHITECTURES:
        unet = load_architecture(name).unet
        if (unet["transformer_layers_per_block"][-1] == depth
                and (unet.get("mid_block_type") == "UNetMidBlock2DCrossAttn") == mid_attention):
            return name
    raise ModelSourceError(
        f"checkpoint {path!r} has an SDXL-family layout that matches none of {XL_ARCHITECTURES} "
        f"(last-level transformer depth {depth}, mid-block attention {mid_attention}). Pass --arch "
        f"with a JSON architecture file describing it."
    )


def detect_checkpoint_arch(path: str | Path) -> str:
    """Architecture name (``sd15``, ``sd2-base``, ``sdxl``, ``ssd-1b``, ``vega``) of a checkpoint file."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type, load_single_file_checkpoint

    path = str(path)
    keys = _checkpoint_keys(path)
    if any(k.startswith("conditioner.embedders.1.model.") for k in keys):  # OpenCLIP bigG: SDXL family
        return _detect_xl_variant(path, keys)
    checkpoint = load_single_file_checkpoint(path, local_files_only=True)
    kind = infer_diffusers_model_type(checkpoint)
    del checkpoint
    if kind not in CHECKPOINT_TYPE_TO_ARCH:
        raise ModelSourceError(
            f"checkpoint {path!r} looks like a {kind!r} model; walkcut supports "
            f"{sorted(CHECKPOINT_TYPE_TO_ARCH)} (SD 1.x, SD 2.x base, SDXL family). Pass --arch to override."
        )
    return CHECKPOINT_TYPE_TO_ARCH[kind]


def _load_single_file(path: str, *, arch: str | None) -> SDComponents:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        arch_name = arch or detect_checkpoint_arch(path)
        architecture = load_architecture(arch_name)
        with tempfile.TemporaryDirectory(prefix="walkcut-config-") as cfg:
            write_diffusers_config_folder(architecture, cfg)
            if architecture.is_xl:
                pipe = StableDiffusionXLPipeline.from_single_file(
                    path, config=cfg, local_files_only=True, tokenizer=None, tokenizer_2=None,
                )
            else:
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
    pooled = None
    if architecture.is_xl:
        embedding, pooled = empty_prompt_embedding_xl(
            pipe.text_encoder.eval(), pipe.text_encoder_2.eval(), architecture.empty_prompt_ids(1),
            architecture.empty_prompt_ids(2))
    else:
        embedding = empty_prompt_embedding(pipe.text_encoder.eval(), architecture.empty_prompt_ids())
    return SDComponents(unet=pipe.unet.eval(), vae=pipe.vae.eval(), prompt_embedding=embedding,
                        pooled_embedding=pooled, model_id=path, source="file", arch=arch_name)


def random_components(arch: str, *, seed: int = 0) -> SDComponents:
    """The components of architecture ``arch`` with random weights: nothing is downloaded.

    For trying walkcut without weights and for benchmarks (cost does not depend on the weights);
    the segments such a model gives are meaningless. The text encoders are random too; the
    conditioning is computed from them exactly as for real weights, one encoder at a time.
    """
    architecture = load_architecture(arch)
    pooled = None
    if architecture.is_xl:  # encoders first and dropped before the UNet is built: a lower peak
        text_encoder, text_encoder_2 = build_random_text_encoders(architecture, seed=seed + 1)
        embedding, pooled = empty_prompt_embedding_xl(
            text_encoder, text_encoder_2, architecture.empty_prompt_ids(1), architecture.empty_prompt_ids(2))
        del text_encoder, text_encoder_2
        unet, vae, _ = build_random_components(architecture, seed=seed, text_encoder=False)
    else:
        unet, vae, text_encoder = build_random_components(architecture, seed=seed)
        embedding = empty_prompt_embedding(text_encoder, architecture.empty_prompt_ids())
        del text_encoder
    return SDComponents(unet=unet, vae=vae, prompt_embedding=embedding, pooled_embedding=pooled,
                        model_id=f"random:{architecture.name}", source="random", arch=architecture.name)


def load_components(model: str, *, arch: str | None = None, local_files_only: bool = False,
                    token: str | None = None) -> SDComponents:
    """Load UNet, VAE and the empty-prompt embedding from a hub id, folder or checkpoint file.

    Parameters
    ----------
    model : str
        Hub id, local diffusers folder, or ``.safetensors``/``.ckpt`` file.
    arch : str, optional
        Architecture of a single checkpoint file (one of :data:`~walkcut.export.configs.ARCHITECTURES`
        or a JSON path); detected from the checkpoint's keys when omitted.
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
