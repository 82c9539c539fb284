"""The export wrapper: image -> VAE latent -> one truncated UNet pass -> aggregated self-attention.

:class:`AttentionExportModel` wraps the diffusers modules without editing them (only the ``attn1``
processors of the selected layers are swapped, see :mod:`walkcut.export.capture`). The same module
is traced to ONNX, timed in eager torch, and is the reference the ONNX output is checked against.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from walkcut.export.aggregate import aggregate_attention, check_grid, resolution_weights
from walkcut.export.capture import CaptureState, _CaptureComplete, install_capture, select_layers, self_attention_layers

logger = logging.getLogger(__name__)


class AttentionExportModel(nn.Module):
    """Image (1, 3, S, S) in [-1, 1] -> ``attention`` (1, R*R, R*R), rows summing to 1.

    Parameters
    ----------
    unet : diffusers.UNet2DConditionModel
    vae : diffusers.AutoencoderKL
        Only its encoder and ``quant_conv`` are kept.
    prompt_embedding : torch.Tensor
        (1, T, C) text-encoder output for the empty prompt; baked into the graph as a constant.
    pooled_embedding : torch.Tensor, optional
        (1, P) pooled empty-prompt embedding of an SDXL-family UNet (``addition_embed_type``
        ``text_time``); required for those, refused for the others. Baked in with the size/crop
        time ids ``(S, S, 0, 0, S, S)``: original size = target size = S, no crop.
    image_size : int
        S, a positive multiple of 64.
    attn_res : int
        R, the output grid side.
    layers : str
        ``encoder`` (down blocks + mid block, default), ``all``, or resolutions such as ``64,32``
        (optionally ``encoder:64,32``).
    timestep : int
        Diffusion timestep of the UNet pass (default 300).
    noise : bool
        Add fixed Gaussian noise to the latent at ``timestep`` (default off: the clean latent).
    noise_seed : int
        Seed of that noise (it is a constant of the graph).
    alphas_cumprod : torch.Tensor, optional
        Training schedule; required when ``noise`` is on.

    Notes
    -----
    SDXL-family UNets hold several transformer blocks per attention module (SDXL: 2 at the 64 grid
    and 10 at the 32 grid for S = 1024). Every ``attn1`` of every transformer block of the selected
    modules is captured, and all layers of one resolution are averaged with equal weight (the same
    rule as SD's two layers per block). Their VAE is kept in float32 by :meth:`to_fp16` when its
    config says ``force_upcast`` (SDXL's VAE overflows in fp16), as diffusers' SDXL pipelines do.
    """

    def __init__(self, unet, vae, prompt_embedding: torch.Tensor, *, pooled_embedding: torch.Tensor | None = None,
                 image_size: int = 512, attn_res: int = 32, layers: str = "encoder", timestep: int = 300,
                 noise: bool = False, noise_seed: int = 0, alphas_cumprod: torch.Tensor | None = None) -> None:
        super().__init__()
        if not isinstance(image_size, int) or image_size <= 0 or image_size % 64:
            raise ValueError(f"image_size must be a positive multiple of 64, got {image_size!r}")
        if not isinstance(attn_res, int) or attn_res < 2:
            raise ValueError(f"attn_res must be an integer >= 2, got {attn_res!r}")
        n_train = len(alphas_cumprod) if alphas_cumprod is not None else 1000
        if not isinstance(timestep, int) or not 0 <= timestep < n_train:
            raise ValueError(f"timestep must be an integer in [0, {n_train}), got {timestep!r}")
        if prompt_embedding.ndim != 3 or prompt_embedding.shape[0] != 1:
            raise ValueError(f"prompt_embedding must be (1, T, C), got {tuple(prompt_embedding.shape)}")
        self.image_size = image_size
        self.attn_res = attn_res
        self.layers_spec = layers
        self.timestep = timestep
        self.noise = bool(noise)
        self.scaling_factor = float(vae.config.scaling_factor)
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_channels = int(vae.config.latent_channels)
        latent_size = image_size // vae_factor

        self.vae_encoder = vae.encoder
        self.quant_conv = vae.quant_conv if getattr(vae.config, "use_quant_conv", True) else None
        self.unet = unet
        self.register_buffer("prompt_embedding", prompt_embedding.detach().clone(), persistent=False)
        self.register_buffer("t", torch.tensor(timestep, dtype=torch.int64, device=prompt_embedding.device), persistent=False)
        self.xl = unet.config.get("addition_embed_type") == "text_time"
        self._set_added_conditioning(unet, pooled_embedding, image_size)
        # diffusers' SDXL pipelines run a force_upcast VAE in float32; SD pipelines ignore the flag
        self.vae_fp32 = self.xl and bool(getattr(vae.config, "force_upcast", False))
        if self.noise:
            if alphas_cumprod is None:
                raise ValueError("noise=True needs alphas_cumprod (the training schedule)")
            abar = float(alphas_cumprod[timestep])
            self.signal, self.noise_scale = abar**0.5, (1.0 - abar) ** 0.5
            gen = torch.Generator().manual_seed(noise_seed)
            eps = torch.randn(1, self.latent_channels, latent_size, latent_size, generator=gen)
            self.register_buffer("eps", eps, persistent=False)

        self.selected = select_layers(self_attention_layers(unet, latent_size), layers)
        self.resolutions = tuple(sorted({layer.resolution for layer in self.selected}, reverse=True))
        for res in self.resolutions:
            check_grid(res, attn_res)
        self.weights = resolution_weights(self.resolutions)
        self._check_plain_unet(unet)
        self._state = CaptureState()
        install_capture(unet, self.selected, self._state)
        # the block holding the last selected layer: the traced graph stops after it
        last = self.selected[-1].name.split(".")
        self._last_block = ("mid_block", 0) if last[0] == "mid_block" else (last[0], int(last[1]))
        logger.info("capturing %d self-attention layers at resolutions %s (weights %s)",
                    len(self.selected), self.resolutions, [round(w, 4) for w in self.weights])

    def _set_added_conditioning(self, unet, pooled: torch.Tensor | None, image_size: int) -> None:
        if not self.xl:
            if pooled is not None:
                raise ValueError("pooled_embedding is only for SDXL-family UNets (addition_embed_type 'text_time')")
            return
        if pooled is None or pooled.ndim != 2 or pooled.shape[0] != 1:
            raise ValueError(
                "this UNet is SDXL-family (addition_embed_type 'text_time'): pass pooled_embedding (1, P), "
                f"got {None if pooled is None else tuple(pooled.shape)}"
            )
        # (1, 6): original size (h, w), crop top-left (0, 0), target size (h, w), as diffusers' _get_add_time_ids
        time_ids = torch.tensor([[image_size, image_size, 0, 0, image_size, image_size]],
                                dtype=pooled.dtype, device=pooled.device)
        expected = unet.add_embedding.linear_1.in_features
        got = pooled.shape[-1] + time_ids.shape[-1] * int(unet.config.addition_time_embed_dim)
        if got != expected:
            raise ValueError(f"pooled_embedding has {pooled.shape[-1]} channels; the UNet's added embedding "
                             f"expects {expected} = pooled + 6 x {unet.config.addition_time_embed_dim}")
        self.register_buffer("pooled_embedding", pooled.detach().clone(), persistent=False)
        self.register_buffer("time_ids", time_ids, persistent=False)

    def _added_cond_kwargs(self) -> dict | None:
        if not self.xl:
            return None
        return {"text_embeds": self.pooled_embedding, "time_ids": self.time_ids}

    def to_fp16(self) -> AttentionExportModel:
        """Half precision, except a ``force_upcast`` SDXL VAE encoder, which stays float32."""
        self.half()
        if self.vae_fp32:
            self.vae_encoder.float()
            if self.quant_conv is not None:
                self.quant_conv.float()
        return self

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(self.vae_encoder.conv_in.weight.dtype)
        # VAE encode, posterior mean: the first half of the moments (what latent_dist.mean returns)
        moments = self.vae_encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        latent = moments[:, : self.latent_channels] * self.scaling_factor
        latent = latent.to(self.prompt_embedding.dtype)  # the UNet's dtype (differs with an fp32 VAE)
        if self.noise:
            latent = self.signal * latent + self.noise_scale * self.eps.to(latent.dtype)
        self._state.store.clear()
        if self._state.tracing:
            self._run_unet_blocks(latent)
        else:
            try:
                # eager: diffusers' own UNet forward, stopped by the last selected layer
                self.unet(latent, self.t, encoder_hidden_states=self.prompt_embedding,
                          added_cond_kwargs=self._added_cond_kwargs(), return_dict=False)
            except _CaptureComplete:
                pass
            else:
                raise RuntimeError("the UNet ran to the end without reaching the last selected layer")
        captured = list(self._state.store)
        self._state.store.clear()
        return aggregate_attention(captured, self.attn_res, self.resolutions, self.weights)

    @staticmethod
    def _check_plain_unet(unet) -> None:
        cfg = unet.config
        extras = {k: cfg.get(k) for k in ("class_embed_type", "addition_embed_type", "encoder_hid_dim_type",
                                          "time_cond_proj_dim") if cfg.get(k) is not None}
        if extras.get("addition_embed_type") == "text_time":  # SDXL family: handled (pooled + time ids)
            del extras["addition_embed_type"]
        if extras or cfg.get("center_input_sample"):
            raise ValueError(f"UNet variant not supported (only text-conditioned SD and SDXL UNets): {extras}")

    def _run_unet_blocks(self, latent: torch.Tensor) -> None:
        """The SD UNet forward, block by block, up to the block of the last selected layer.

        Used while tracing, where the eager path's exception cannot be traced: it is diffusers'
        ``UNet2DConditionModel.forward`` for a text-conditioned UNet (no class embedding, no
        adapters; SDXL's added text/time embedding through diffusers' own ``get_aug_embed``), cut
        short. Verification compares it with the eager path.
        """
        unet, ehs = self.unet, self.prompt_embedding
        emb = unet.time_embedding(unet.get_time_embed(sample=latent, timestep=self.t), None)
        if self.xl:
            emb = emb + unet.get_aug_embed(emb=emb, encoder_hidden_states=ehs,
                                           added_cond_kwargs=self._added_cond_kwargs())
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        sample = unet.conv_in(latent)
        skips = (sample,)
        for i, block in enumerate(unet.down_blocks):
            if getattr(block, "has_cross_attention", False):
                sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=ehs)
            else:
                sample, res = block(hidden_states=sample, temb=emb)
            skips += res
            if self._last_block == ("down_blocks", i):
                return
        if unet.mid_block is not None:
            if getattr(unet.mid_block, "has_cross_attention", False):
                sample = unet.mid_block(sample, emb, encoder_hidden_states=ehs)
            else:  # SSD-1B / Segmind-Vega: a single resnet, no attention
                sample = unet.mid_block(sample, emb)
        if self._last_block == ("mid_block", 0):
            return
        for i, block in enumerate(unet.up_blocks):
            res, skips = skips[-len(block.resnets):], skips[: -len(block.resnets)]
            if getattr(block, "has_cross_attention", False):
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res,
                               encoder_hidden_states=ehs)
            else:
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res)
            if self._last_block == ("up_blocks", i):
                return
        raise RuntimeError("the last selected layer was not reached")

    def describe(self) -> dict:
        """Contract fields this wrapper fixes (image size, grid, layers, weights, timestep, noise)."""
        return {
            "image_size": self.image_size,
            "attn_res": self.attn_res,
            "layers": self.layers_spec,
            "resolutions": self.resolutions,
            "weights": self.weights,
            "timestep": self.timestep,
            "noise": self.noise,
        }
