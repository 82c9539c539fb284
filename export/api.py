"""One call from weights to a verified ONNX model (and optionally a TensorRT engine)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from walkcut.runtime.sources.contract import ModelContract

from walkcut import __version__
from walkcut.export.configs import alphas_cumprod, load_architecture
from walkcut.export.loading import SDComponents, load_components, random_components, weights_hash
from walkcut.export.onnx_export import OPSET, ExportResult, export_onnx
from walkcut.export.wrapper import AttentionExportModel

logger = logging.getLogger(__name__)

#: Native image side per family (what the model was trained at): the default S of an export.
NATIVE_IMAGE_SIZE = {"sd": 512, "sdxl": 1024}


def build_contract(wrapper: AttentionExportModel, *, model_id: str, model_hash: str, fp16: bool,
                   extra: dict | None = None) -> ModelContract:
    """The :class:`ModelContract` describing ``wrapper``'s graph."""
    return ModelContract(
        **wrapper.describe(), model_id=model_id, model_hash=model_hash,
        precision="fp16" if fp16 else "fp32", opset=OPSET, exporter_version=__version__,
        extra=dict(extra or {}),
    )


def default_image_size(components: SDComponents) -> int:
    """S when none is given: the family's native size (512 for SD 1.x/2.x, 1024 for the SDXL family)."""
    if components.arch:
        return load_architecture(components.arch).native_image_size
    return NATIVE_IMAGE_SIZE[components.family]


def export_components(components: SDComponents, out: str | Path, *, image_size: int | None = None,
                      attn_res: int = 32, layers: str = "encoder", timestep: int = 300, noise: bool = False,
                      noise_seed: int = 0, fp16: bool = False, progress: bool = True) -> ExportResult:
    """Wrap loaded ``components``, export to ``out`` and verify (the part after loading)."""
    native = default_image_size(components)
    size = native if image_size is None else image_size
    # SD 1.x, 2.x and the SDXL family share the training schedule; it only matters with --noise
    schedule = alphas_cumprod(load_architecture(components.arch or "sd15"))
    wrapper = AttentionExportModel(
        components.unet, components.vae, components.prompt_embedding,
        pooled_embedding=components.pooled_embedding, image_size=size, attn_res=attn_res, layers=layers,
        timestep=timestep, noise=noise, noise_seed=noise_seed, alphas_cumprod=schedule,
    ).eval()
    digest = weights_hash(components.unet, components.vae.encoder, components.vae.quant_conv,
                          progress=progress)
    extra = {
        "source": components.source,
        "arch": components.arch,
        "family": components.family,
        "native_image_size": native,
        "layer_names": [layer.name for layer in wrapper.selected],
        "noise_seed": noise_seed if noise else None,
        "torch": torch.__version__,
    }
    if components.family == "sdxl":
        extra["time_ids"] = [size, size, 0, 0, size, size]
        extra["vae_precision"] = "fp32" if not fp16 or wrapper.vae_fp32 else "fp16"
    if components.source == "random":
        extra["random_weights"] = True  # a model to try the pipeline with: its segments mean nothing
    contract = build_contract(wrapper, model_id=components.model_id, model_hash=digest, fp16=fp16, extra=extra)
    return export_onnx(wrapper, out, contract, fp16=fp16, progress=progress)


def export_model(model: str, out: str | Path, *, image_size: int | None = None, attn_res: int = 32,
                 layers: str = "encoder", timestep: int = 300, noise: bool = False, noise_seed: int = 0,
                 fp16: bool = False, arch: str | None = None, local_files_only: bool = False,
                 token: str | None = None, progress: bool = True) -> ExportResult:
    """Load ``model``, wrap it, export to ``out`` and verify (see ``walkcut export --help``).

    ``image_size`` defaults to the family's native size (512 for SD 1.x/2.x, 1024 for SDXL, SSD-1B
    and Segmind-Vega); the contract records both.

    Raises
    ------
    ModelSourceError
        If ``model`` names no usable weights.
    ValueError
        For a bad ``image_size``, ``attn_res``, ``layers`` or ``timestep``.
    VerificationError
        If the exported model disagrees with the torch wrapper.
    """
    torch.manual_seed(0)
    components = load_components(model, arch=arch, local_files_only=local_files_only, token=token)
    return export_components(components, out, image_size=image_size, attn_res=attn_res, layers=layers,
                             timestep=timestep, noise=noise, noise_seed=noise_seed, fp16=fp16, progress=progress)


def export_random(arch: str, out: str | Path, *, seed: int = 0, image_size: int | None = None,
                  attn_res: int = 32, layers: str = "encoder", timestep: int = 300, noise: bool = False,
                  noise_seed: int = 0, fp16: bool = False, progress: bool = True) -> ExportResult:
    """Export architecture ``arch`` with random weights: no download, a model to try walkcut with.

    The exported graph has the cost, size and contract of the real model, but its attention (and
    so its segments) is meaningless. ``model_id`` is ``random:<arch>`` and the contract's ``extra``
    says ``random_weights``.

    Raises
    ------
    ValueError
        For an unknown ``arch`` or bad export options.
    VerificationError
        If the exported model disagrees with the torch wrapper.
    """
    components = random_components(arch, seed=seed)
    return export_components(components, out, image_size=image_size, attn_res=attn_res, layers=layers,
                             timestep=timestep, noise=noise, noise_seed=noise_seed, fp16=fp16, progress=progress)
