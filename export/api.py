"""One call from weights to a verified ONNX model (and optionally a TensorRT engine)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from walkcut.runtime.sources.contract import ModelContract

from walkcut import __version__

from .configs import alphas_cumprod, load_architecture
from .loading import load_components, weights_hash
from .onnx_export import OPSET, ExportResult, export_onnx
from .wrapper import AttentionExportModel

logger = logging.getLogger(__name__)


def build_contract(wrapper: AttentionExportModel, *, model_id: str, model_hash: str, fp16: bool,
                   extra: dict | None = None) -> ModelContract:
    """The :class:`ModelContract` describing ``wrapper``'s graph."""
    return ModelContract(
        **wrapper.describe(), model_id=model_id, model_hash=model_hash,
        precision="fp16" if fp16 else "fp32", opset=OPSET, exporter_version=__version__,
        extra=dict(extra or {}),
    )


def export_model(model: str, out: str | Path, *, image_size: int = 512, attn_res: int = 32,
                 layers: str = "encoder", timestep: int = 300, noise: bool = False, noise_seed: int = 0,
                 fp16: bool = False, arch: str | None = None, local_files_only: bool = False,
                 token: str | None = None, progress: bool = True) -> ExportResult:
    """Load ``model``, wrap it, export to ``out`` and verify (see ``walkcut export --help``).

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
    # SD 1.x and 2.x share the training schedule; it only matters with --noise
    schedule = alphas_cumprod(load_architecture(components.arch or "sd15"))
    wrapper = AttentionExportModel(
        components.unet, components.vae, components.prompt_embedding, image_size=image_size,
        attn_res=attn_res, layers=layers, timestep=timestep, noise=noise, noise_seed=noise_seed,
        alphas_cumprod=schedule,
    ).eval()
    digest = weights_hash(components.unet, components.vae.encoder, components.vae.quant_conv,
                          progress=progress)
    extra = {
        "source": components.source,
        "arch": components.arch,
        "layer_names": [layer.name for layer in wrapper.selected],
        "noise_seed": noise_seed if noise else None,
        "torch": torch.__version__,
    }
    contract = build_contract(wrapper, model_id=components.model_id, model_hash=digest, fp16=fp16, extra=extra)
    return export_onnx(wrapper, out, contract, fp16=fp16, progress=progress)
