"""DINOv2 backbones (transformers): image -> patch-to-patch self-attention, exported and verified.

:class:`ViTAttentionModel` wraps a transformers ``Dinov2Model`` or ``Dinov2WithRegistersModel``
without editing it: it runs the model's own embeddings (which interpolate the position embeddings
to the input size) and its first layers, up to the last selected one, itself, and records each
selected layer's attention probabilities with a forward hook on the layer's ``attention`` module
(eager attention returns them). Nothing after the last selected layer is in the module, so nothing
after it is in the exported graph.

Aggregation, per selected layer: the softmax probabilities (1, heads, T, T), T = prefix + R*R
tokens (CLS, then the register tokens, then the patches in row-major order); mean over heads; the
patch-to-patch block (prefix rows and columns dropped). Then the mean over the selected layers
(equal weights) and the rows renormalised to sum 1 (the dropped prefix columns held some of each
row's mass): ``attention`` (1, R*R, R*R), R = S / patch size.

Loading: a hub id (``facebook/dinov2-small``, ``facebook/dinov2-with-registers-base``) or a folder
written by ``save_pretrained``, through ``AutoModel.from_pretrained(..., attn_implementation="eager")``;
or a named architecture (``models/dinov2-*.json``) with random weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from walkcut.runtime import defaults
from walkcut.runtime.sources.contract import ModelContract

from walkcut import __version__
from walkcut.export.loading import ModelSourceError, _first_line, classify_source, weights_hash
from walkcut.export.onnx_export import OPSET, ExportResult, export_onnx
from walkcut.export.vit_spec import DINOV2_MODEL_TYPES, load_vit_architecture, parse_layers

logger = logging.getLogger(__name__)

#: S when none is given: DINOv2 was pretrained mostly at 224 px (a short last phase at 518), and at
#: patch 14 it gives a 16 x 16 grid (256 nodes), the size the cuts handle in milliseconds.
DEFAULT_IMAGE_SIZE = 224

_HOW_TO_SUPPLY = (
    "Supply DINOv2 weights in one of these ways: (1) a local folder written by transformers' "
    "save_pretrained, with config.json of model_type dinov2 or dinov2_with_registers (e.g. "
    "`huggingface-cli download facebook/dinov2-small --local-dir dinov2-small` on a machine with network); "
    "(2) a hub id such as facebook/dinov2-small while online. To try walkcut without weights, use "
    "--random-weights --arch dinov2-s (or dinov2-b, dinov2-l, with -reg for registers)."
)


@dataclass
class ViTComponents:
    """A loaded vision transformer and where it came from."""

    model: nn.Module  # transformers Dinov2Model / Dinov2WithRegistersModel, eager attention
    model_id: str
    source: str  # "hub", "folder" or "random"
    arch: str  # architecture name for random weights, "" when the source had its own config
    family: str = "dinov2"


def _use_eager_attention(model: nn.Module) -> None:
    """Eager attention: the only implementation that returns the probabilities."""
    if getattr(model.config, "_attn_implementation", None) == "eager":
        return
    if not hasattr(model, "set_attn_implementation"):
        raise ValueError("this transformers version cannot switch the model to eager attention; load it "
                         "with attn_implementation='eager'")
    model.set_attn_implementation("eager")


def load_dinov2(model: str, *, local_files_only: bool = False, token: str | None = None) -> ViTComponents:
    """Load a DINOv2 model (with or without registers) from a hub id or a ``save_pretrained`` folder.

    Raises
    ------
    ModelSourceError
        If the weights cannot be found or read, or are not a DINOv2 model; the message says how to
        supply them.
    """
    from transformers import AutoModel

    source = classify_source(model)
    if source == "file":
        raise ModelSourceError(f"{model!r} is a file; a DINOv2 model is a folder or a hub id. {_HOW_TO_SUPPLY}")
    kw = {"local_files_only": local_files_only, "attn_implementation": "eager"}
    if token:
        kw["token"] = token
    where = "hub id" if source == "hub" else "folder"
    try:
        loaded = AutoModel.from_pretrained(model, **kw).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise ModelSourceError(
            f"could not load DINOv2 weights from {where} {model!r} ({_first_line(exc)}). {_HOW_TO_SUPPLY}"
        ) from exc
    model_type = getattr(loaded.config, "model_type", None)
    if model_type not in DINOV2_MODEL_TYPES:
        raise ModelSourceError(f"{where} {model!r} holds a {model_type!r} model, not DINOv2 "
                               f"({' or '.join(DINOV2_MODEL_TYPES)}). {_HOW_TO_SUPPLY}")
    return ViTComponents(model=loaded, model_id=model, source=source, arch="")


def build_dinov2(config: dict, *, seed: int = 0, device: str = "cpu") -> nn.Module:
    """A DINOv2 model (``model_type`` in ``config`` says whether with registers), random weights, eager."""
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    kind = config.get("model_type")
    if kind not in DINOV2_MODEL_TYPES:
        raise ValueError(f"config model_type must be one of {DINOV2_MODEL_TYPES}, got {kind!r}")
    config_cls, model_cls = ((Dinov2Config, Dinov2Model) if kind == "dinov2"
                             else (Dinov2WithRegistersConfig, Dinov2WithRegistersModel))
    fields = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    torch.manual_seed(seed)
    with torch.device(device):
        model = model_cls(config_cls(**fields, attn_implementation="eager"))
    return model.eval()


def random_dinov2(arch: str, *, seed: int = 0) -> ViTComponents:
    """Named architecture ``arch`` (or a JSON file) with random weights: nothing is downloaded.

    The model has the size and cost of the real one; its attention (and so its segments) is meaningless.
    """
    architecture = load_vit_architecture(arch)
    model = build_dinov2(architecture.config, seed=seed)
    return ViTComponents(model=model, model_id=f"random:{architecture.name}", source="random",
                         arch=architecture.name, family=architecture.family)


def patch_size_of(config) -> int:
    """The (square) patch side of a transformers ViT config."""
    patch = config.patch_size
    if isinstance(patch, (list, tuple)):
        if len(patch) != 2 or patch[0] != patch[1]:
            raise ValueError(f"only square patches are supported, got patch_size {patch!r}")
        patch = patch[0]
    return int(patch)


def resolve_image_size(patch_size: int, image_size: int | None = None, attn_res: int | None = None) -> int:
    """S from the options: ``image_size``, else ``attn_res`` x patch, else :data:`DEFAULT_IMAGE_SIZE`.

    Raises
    ------
    ValueError
        When ``image_size`` and ``attn_res`` are both given and ``image_size != attn_res * patch``,
        or ``attn_res`` is not an integer >= 2.
    """
    if attn_res is not None:
        if not isinstance(attn_res, int) or isinstance(attn_res, bool) or attn_res < 2:
            raise ValueError(f"attn_res must be an integer >= 2, got {attn_res!r}")
        if image_size is not None and image_size != attn_res * patch_size:
            raise ValueError(f"a vision transformer's grid is image_size / patch size: image_size {image_size!r} "
                             f"with patch {patch_size} gives R = {image_size / patch_size:g}, not attn_res "
                             f"{attn_res}; give one of the two")
        return attn_res * patch_size
    return DEFAULT_IMAGE_SIZE if image_size is None else image_size


class ViTAttentionModel(nn.Module):
    """Image (1, 3, S, S), ImageNet-normalised -> ``attention`` (1, R*R, R*R), rows summing to 1.

    Parameters
    ----------
    model : transformers.Dinov2Model or Dinov2WithRegistersModel
        With eager attention (switched to it if the model allows). Its embeddings and first layers
        are held by this module (shared, not copied); the later layers and the final layer norm are not.
    image_size : int
        S, a multiple of the patch size with R = S / patch in [2, ``MAX_ATTN_RES``]. The position
        embeddings are interpolated by the model's own embeddings when S differs from the config's.
    layers : str
        ``all``, ``lastN`` or a comma list of 0-based layer indices (:func:`parse_layers`).

    Notes
    -----
    The model's hidden states after layer k feed layer k + 1, so every layer up to the last selected
    one runs; only the selected ones' probabilities are kept. Heads and layers are averaged with
    equal weights. Renormalising after dropping the prefix columns gives each patch the distribution
    of its attention over patches alone (its attention to CLS and registers is discarded, not spread).
    """

    def __init__(self, model: nn.Module, *, image_size: int = DEFAULT_IMAGE_SIZE, layers: str = "all") -> None:
        super().__init__()
        config = model.config
        if getattr(config, "model_type", None) not in DINOV2_MODEL_TYPES:
            raise ValueError(f"model must be a transformers DINOv2 model ({' or '.join(DINOV2_MODEL_TYPES)}), "
                             f"got model_type {getattr(config, 'model_type', None)!r}")
        patch = patch_size_of(config)
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0 \
                or image_size % patch:
            hint = ""
            if isinstance(image_size, int) and image_size > patch:
                low = image_size // patch * patch
                hint = f"; the nearest are {low} and {low + patch}"
            raise ValueError(f"image_size must be a positive multiple of the patch size {patch} (S = R x {patch}), "
                             f"got {image_size!r}{hint}")
        res = image_size // patch
        if not 2 <= res <= defaults.MAX_ATTN_RES:
            raise ValueError(f"image_size {image_size} gives a {res} x {res} grid (patch {patch}); the runtime cuts "
                             f"grids of 2 to {defaults.MAX_ATTN_RES} (image_size {2 * patch} to "
                             f"{defaults.MAX_ATTN_RES * patch})")
        _use_eager_attention(model)
        n_layers = len(model.encoder.layer)
        self.layer_indices = parse_layers(layers, n_layers)
        self.layers_spec = layers
        self.n_layers = n_layers
        self.image_size = image_size
        self.attn_res = res
        self.patch_size = patch
        self.register_tokens = int(getattr(config, "num_register_tokens", 0) or 0)
        self.prefix_tokens = 1 + self.register_tokens  # CLS, then the registers, then the patches
        self.embeddings = model.embeddings
        # only the layers that run: the later ones (and the final layer norm) are not part of this module
        self.layers = nn.ModuleList(model.encoder.layer[: self.layer_indices[-1] + 1])
        self._store: list[torch.Tensor] = []
        self._recording = False
        self._hooks = [self.layers[i].attention.register_forward_hook(self._record) for i in self.layer_indices]
        logger.info("DINOv2: %d of %d layers %s, S = %d, R = %d, %d prefix tokens", len(self.layer_indices), n_layers,
                    list(self.layer_indices), image_size, res, self.prefix_tokens)

    def _record(self, module, args, output) -> None:
        if not self._recording:  # the model used outside this wrapper: nothing to keep
            return
        probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if probs is None:
            raise RuntimeError("the attention module returned no probabilities: the model does not run eager "
                               "attention (load it with attn_implementation='eager')")
        self._store.append(probs)

    def to_fp16(self) -> ViTAttentionModel:
        """Half-precision weights and compute; the input and the aggregation stay float32."""
        return self.half()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        hidden = self.embeddings(image)  # casts to the weights' dtype; interpolates positions for this S
        self._store.clear()
        self._recording = True
        try:
            for layer in self.layers:
                # output_attentions: transformers 4.x layers return the probabilities only when asked
                out = layer(hidden, output_attentions=True)
                hidden = out[0] if isinstance(out, tuple) else out
            captured = list(self._store)
        finally:
            self._recording = False
            self._store.clear()
        return self.aggregate(captured)

    def aggregate(self, probs: list[torch.Tensor]) -> torch.Tensor:
        """Selected layers' probabilities, each (1, heads, T, T) -> (1, R*R, R*R), rows summing to 1."""
        n, p = self.attn_res * self.attn_res, self.prefix_tokens
        if len(probs) != len(self.layer_indices):
            raise RuntimeError(f"captured {len(probs)} attention maps, expected {len(self.layer_indices)}")
        total = None
        for a in probs:
            if a.shape[-1] != p + n or a.shape[-2] != p + n:
                raise RuntimeError(f"attention over {a.shape[-1]} tokens, expected {p} prefix + {n} patches")
            block = a.float().mean(dim=1)[:, p:, p:]  # (1, n, n): heads averaged, patches only
            total = block if total is None else total + block
        mean = total / len(probs)
        return mean / mean.sum(dim=-1, keepdim=True)


def build_vit_contract(wrapper: ViTAttentionModel, components: ViTComponents, *, model_hash: str,
                       fp16: bool) -> ModelContract:
    """The :class:`ModelContract` of a DINOv2 export.

    ``timestep`` and ``noise`` keep their defaults: they describe a diffusion pass and mean nothing
    for a vision transformer (the runtime does not read them).
    """
    extra = {
        "family": components.family,
        "arch": components.arch,
        "source": components.source,
        "patch_size": wrapper.patch_size,
        "prefix_tokens": wrapper.prefix_tokens,
        "register_tokens": wrapper.register_tokens,
        "layer_indices": list(wrapper.layer_indices),
        "num_layers": wrapper.n_layers,
        "torch": torch.__version__,
    }
    if components.source == "random":
        extra["random_weights"] = True  # a model to try the pipeline with: its segments mean nothing
    return ModelContract(
        backbone="vit", image_size=wrapper.image_size, attn_res=wrapper.attn_res, normalization="imagenet",
        layers=wrapper.layers_spec, resolutions=(wrapper.attn_res,), weights=(1.0,),
        model_id=components.model_id, model_hash=model_hash, precision="fp16" if fp16 else "fp32",
        opset=OPSET, exporter_version=__version__, cut_defaults=dict(defaults.VIT_CUT_DEFAULTS), extra=extra,
    )


def export_vit_components(components: ViTComponents, out: str | Path, *, image_size: int | None = None,
                          attn_res: int | None = None, layers: str | None = None, fp16: bool = False,
                          progress: bool = True) -> ExportResult:
    """Wrap a loaded DINOv2, export to ``out`` and verify (the part after loading).

    ``layers`` defaults to ``walkcut.runtime.defaults.VIT_LAYERS``; ``image_size`` to ``attn_res`` x
    patch when only ``attn_res`` is given, else to :data:`DEFAULT_IMAGE_SIZE`.
    """
    model = components.model
    size = resolve_image_size(patch_size_of(model.config), image_size, attn_res)
    wrapper = ViTAttentionModel(model, image_size=size,
                                layers=defaults.VIT_LAYERS if layers is None else layers).eval()
    digest = weights_hash(model, progress=progress)  # the whole model: it identifies the checkpoint
    contract = build_vit_contract(wrapper, components, model_hash=digest, fp16=fp16)
    return export_onnx(wrapper, out, contract, fp16=fp16, progress=progress)


def export_vit_model(model: str, out: str | Path, *, image_size: int | None = None, attn_res: int | None = None,
                     layers: str | None = None, fp16: bool = False, local_files_only: bool = False,
                     token: str | None = None, progress: bool = True) -> ExportResult:
    """Load the DINOv2 ``model`` (hub id or folder), export its attention to ``out`` and verify.

    Raises
    ------
    ModelSourceError
        If ``model`` names no usable DINOv2 weights.
    ValueError
        For a bad ``image_size``, ``attn_res`` or ``layers``.
    VerificationError
        If the exported model disagrees with the torch wrapper.
    """
    components = load_dinov2(model, local_files_only=local_files_only, token=token)
    return export_vit_components(components, out, image_size=image_size, attn_res=attn_res, layers=layers,
                                 fp16=fp16, progress=progress)


def export_vit_random(arch: str, out: str | Path, *, seed: int = 0, image_size: int | None = None,
                      attn_res: int | None = None, layers: str | None = None, fp16: bool = False,
                      progress: bool = True) -> ExportResult:
    """Export DINOv2 architecture ``arch`` with random weights (``model_id`` ``random:<arch>``).

    Raises
    ------
    ValueError
        For an unknown ``arch`` or bad export options.
    VerificationError
        If the exported model disagrees with the torch wrapper.
    """
    components = random_dinov2(arch, seed=seed)
    return export_vit_components(components, out, image_size=image_size, attn_res=attn_res, layers=layers,
                                 fp16=fp16, progress=progress)
