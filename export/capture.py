"""Self-attention capture: which UNet layers to read and the processor that reads them.

A Stable Diffusion UNet has one self-attention layer (``attn1``) per transformer block. SD 1.x at
512 px has 16: down blocks 2+2+2 at 64/32/16, the mid block 1 at 8, up blocks 3+3+3 at 16/32/64.
The capture processor replaces the fused kernel of the selected ``attn1`` layers with explicit
probabilities ``softmax(Q K^T / sqrt(d))``; cross-attention (``attn2``) and the model's weights are
left as they are. After the last selected layer in execution order the processor raises
:class:`_CaptureComplete`, so nothing after it runs (in eager mode and in the traced graph).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

_STAGE_ORDER = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
_NAME_RE = re.compile(
    r"^(?P<stage>down_blocks|mid_block|up_blocks)(?:\.(?P<block>\d+))?\.attentions\.(?P<attn>\d+)"
    r"\.transformer_blocks\.(?P<tb>\d+)\.attn1$"
)


class _CaptureComplete(Exception):
    """Raised by the last selected layer's processor: the rest of the UNet is not needed."""


@dataclass(frozen=True)
class SelfAttentionLayer:
    """One ``attn1`` module of the UNet.

    Attributes
    ----------
    name : str
        Module path, e.g. ``down_blocks.0.attentions.1.transformer_blocks.0.attn1``.
    stage : str
        ``down_blocks``, ``mid_block`` or ``up_blocks``.
    resolution : int
        Side of its square token grid (64 for the first down block of SD at 512 px).
    order : tuple of int
        Execution order key.
    """

    name: str
    stage: str
    resolution: int
    order: tuple[int, ...]

    @property
    def in_encoder(self) -> bool:
        return self.stage != "up_blocks"


def self_attention_layers(unet: torch.nn.Module, latent_size: int) -> list[SelfAttentionLayer]:
    """All ``attn1`` layers of ``unet`` in execution order, with their grid resolution.

    ``latent_size`` is the latent side (image side / VAE factor). The resolution follows from the
    block index: every down block but the last halves the grid, every up block but the last doubles it.
    """
    n_down = len(unet.down_blocks)
    n_up = len(unet.up_blocks)
    layers = []
    for name, _ in unet.named_modules():
        m = _NAME_RE.match(name)
        if not m:
            continue
        stage = m["stage"]
        block = int(m["block"] or 0)
        level = {"down_blocks": block, "mid_block": n_down - 1, "up_blocks": n_up - 1 - block}[stage]
        res = latent_size // 2**level
        order = (_STAGE_ORDER[stage], block, int(m["attn"]), int(m["tb"]))
        layers.append(SelfAttentionLayer(name=name, stage=stage, resolution=res, order=order))
    layers.sort(key=lambda layer: layer.order)
    return layers


def select_layers(layers: list[SelfAttentionLayer], spec: str) -> list[SelfAttentionLayer]:
    """Layers chosen by ``spec``: ``encoder``, ``all``, ``64,32`` (any stage) or ``encoder:64,32``.

    Raises
    ------
    ValueError
        If ``spec`` is malformed or selects no layer.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"layers must be 'encoder', 'all' or a comma list of resolutions, got {spec!r}")
    spec = spec.strip()
    pool = layers
    res_part = spec
    if spec.startswith("encoder"):
        pool = [layer for layer in layers if layer.in_encoder]
        res_part = spec[len("encoder"):].lstrip(":")
    elif spec == "all":
        res_part = ""
    if not res_part:
        chosen = list(pool)
    else:
        try:
            wanted = {int(tok) for tok in res_part.split(",") if tok.strip()}
        except ValueError:
            raise ValueError(f"layers {spec!r}: resolutions must be integers, e.g. '64,32'") from None
        available = sorted({layer.resolution for layer in pool}, reverse=True)
        unknown = sorted(wanted - set(available), reverse=True)
        if unknown:
            raise ValueError(f"layers {spec!r}: resolutions {unknown} not in this model ({available})")
        chosen = [layer for layer in pool if layer.resolution in wanted]
    if not chosen:
        raise ValueError(f"layers {spec!r} selects no self-attention layer")
    return chosen


class CaptureState:
    """What the capture processors share: the captured tensors and how the last layer stops.

    ``tracing`` is set by the exporter: ``torch.export`` cannot trace an exception unwinding
    through nested modules, so while tracing the last layer returns its input unchanged instead
    (a dead value the exporter prunes) and the wrapper stops after that layer's block.
    """

    def __init__(self) -> None:
        self.store: list = []
        self.tracing = False


class CaptureSelfAttnProcessor:
    """Attention processor for ``attn1`` that records head-averaged probabilities.

    Parameters
    ----------
    state : CaptureState
        Its ``store`` receives ``(resolution, probs)`` with ``probs`` (B, N, N) float32, N = resolution**2.
    resolution : int
        Expected grid side; checked against the sequence length.
    last : bool
        Stop once recorded (the output of this layer is not needed): raise :class:`_CaptureComplete`
        in eager mode, return the input unchanged while tracing.

    Notes
    -----
    Scores are formed in the model's dtype with the query pre-scaled by ``1/sqrt(d)`` (as fused
    kernels do, keeping fp16 scores small) and the softmax runs in float32, so rows sum to 1 in
    fp16 exports too.
    """

    def __init__(self, state: CaptureState, resolution: int, *, last: bool = False) -> None:
        self.state = state
        self.resolution = resolution
        self.last = last

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
            raise RuntimeError("capture processor is for unmasked self-attention on (B, N, C) tokens")
        b, n, _ = hidden_states.shape
        if n != self.resolution**2:
            raise RuntimeError(f"self-attention has {n} tokens, expected {self.resolution}**2")
        h = attn.heads
        q = attn.to_q(hidden_states)
        k = attn.to_k(hidden_states)
        d = q.shape[-1] // h
        q = q.view(b, n, h, d).transpose(1, 2) * attn.scale  # (B, h, N, d)
        k = k.view(b, n, h, d).transpose(1, 2)
        probs = torch.softmax((q @ k.transpose(-1, -2)).float(), dim=-1)  # (B, h, N, N) float32
        self.state.store.append((self.resolution, probs.mean(dim=1)))
        if self.last:
            if self.state.tracing:
                return hidden_states  # dead value: nothing downstream reaches the graph output
            raise _CaptureComplete
        v = attn.to_v(hidden_states).view(b, n, h, d).transpose(1, 2)
        out = (probs.to(v.dtype) @ v).transpose(1, 2).reshape(b, n, h * d)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


def install_capture(unet: torch.nn.Module, selected: list[SelfAttentionLayer], state: CaptureState) -> None:
    """Swap the processors of ``selected`` layers (execution order) for capturing ones.

    Every other ``attn1`` gets diffusers' default processor back, so a UNet wrapped a second time
    (another preset) keeps no stale capture processor.
    """
    from diffusers.models.attention_processor import AttnProcessor2_0

    modules = dict(unet.named_modules())
    chosen = {layer.name for layer in selected}
    for name, module in modules.items():
        if _NAME_RE.match(name) and name not in chosen and isinstance(module.processor, CaptureSelfAttnProcessor):
            module.set_processor(AttnProcessor2_0())
    for i, layer in enumerate(selected):
        attn = modules[layer.name]
        unsupported = [a for a in ("spatial_norm", "group_norm", "norm_q", "norm_k")
                       if getattr(attn, a, None) is not None]
        if unsupported or getattr(attn, "residual_connection", False) or attn.rescale_output_factor != 1.0:
            raise ValueError(f"{layer.name}: attention variant not supported for capture ({unsupported})")
        attn.set_processor(CaptureSelfAttnProcessor(state, layer.resolution, last=i == len(selected) - 1))
