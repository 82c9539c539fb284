"""The model contract: what an exported attention model takes and gives, stored inside the model.

The exporter writes a :class:`ModelContract` as JSON into the ONNX metadata under
:data:`walkcut.runtime.defaults.METADATA_KEY` (and into a JSON file beside a TensorRT engine); the runtime reads it back
and refuses a model whose contract it cannot honour. One :class:`GraphIO` object describes the
graph's inputs and outputs for the exporter, the TensorRT builder and the tests alike.
:func:`check_cut_settings` checks the values of a contract's ``cut_defaults`` (a model that carries
a setting the cuts would refuse is refused when it is read, not at its first image).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

from walkcut.runtime import defaults as _d
from walkcut.runtime.cuts.graph import MODES
from walkcut.runtime.cuts.hierarchy import AUTO_RULES
from walkcut.runtime.upsample import METHODS as UPSAMPLE_METHODS


class ContractError(ValueError):
    """The model's contract is missing, malformed, or asks for something this runtime cannot do."""


def _whole(value, low: int) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= low


def check_cut_settings(values: Mapping[str, Any], *, source: str = "cut_defaults") -> None:
    """Raise :class:`ContractError` unless ``values`` are valid settings of :data:`CUT_DEFAULT_KEYS
    <walkcut.runtime.defaults.CUT_DEFAULT_KEYS>` (unknown keys included); ``source`` names them in
    the message.

    Accepted: ``mode`` one of walk, dot, cosine; ``power`` an integer >= 1; ``threshold`` a finite
    number >= 0 or an automatic rule (auto-ncut, auto-mincut); ``min_size`` and ``max_segments``
    integers >= 1; ``upsample`` joint-bilateral or nearest.
    """
    if not isinstance(values, Mapping):
        raise ContractError(f"{source} must be a JSON object, got {values!r}")
    unknown = sorted(set(values) - set(_d.CUT_DEFAULT_KEYS))
    if unknown:
        raise ContractError(f"{source} has unknown keys {unknown} (known: {list(_d.CUT_DEFAULT_KEYS)})")
    checks = {
        "mode": (lambda v: v in MODES, f"one of {', '.join(MODES)}"),
        "power": (lambda v: _whole(v, 1), "an integer >= 1"),
        "threshold": (lambda v: v in AUTO_RULES if isinstance(v, str) else (
            isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) and v >= 0),
            f"a finite number >= 0 or one of {', '.join(AUTO_RULES)}"),
        "min_size": (lambda v: _whole(v, 1), "an integer >= 1"),
        "max_segments": (lambda v: _whole(v, 1), "an integer >= 1"),
        "upsample": (lambda v: v in UPSAMPLE_METHODS, f"one of {', '.join(UPSAMPLE_METHODS)}"),
    }
    for key, value in values.items():
        ok, expected = checks[key]
        if not ok(value):
            raise ContractError(f"{source}: {key} must be {expected}, got {value!r}; re-export the model "
                                f"with a valid setting (or override it with the matching option)")


@dataclass(frozen=True)
class GraphIO:
    """Names, shapes and dtypes of the exported graph: image (1, 3, S, S) -> attention (1, R*R, R*R)."""

    image_size: int
    attn_res: int
    input_name: str = _d.INPUT_NAME
    output_name: str = _d.OUTPUT_NAME
    input_dtype: str = "float32"
    output_dtype: str = "float32"

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.image_size, self.image_size)

    @property
    def n_nodes(self) -> int:
        return self.attn_res * self.attn_res

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (1, self.n_nodes, self.n_nodes)


@dataclass(frozen=True)
class ModelContract:
    """Everything the runtime must know to feed the model and read its output.

    Attributes
    ----------
    image_size : int
        S: the model takes a square RGB image of S x S pixels (a multiple of 64 for the UNet, of
        ``attn_res`` for a vision transformer: S = R x patch size).
    attn_res : int
        R: the output is a row-stochastic (R*R, R*R) transition matrix over an R x R patch grid,
        nodes in row-major order.
    layers : str
        Layer preset (``encoder``, ``all``) or a comma list of attention resolutions (``64,32``); for a
        vision transformer ``all``, ``lastN`` or a comma list of 0-based layer indices (the indices
        themselves in ``extra["layer_indices"]``).
    resolutions : tuple of int
        Self-attention grid sizes that were aggregated (e.g. ``(64, 32, 16, 8)``).
    weights : tuple of float
        Aggregation weight of each entry of ``resolutions`` (sum 1).
    timestep : int
        Diffusion timestep of the single UNet pass (a vision transformer keeps the default; unused).
    noise : bool
        Whether noise was added to the latent at ``timestep`` (``False``: clean latent; always
        ``False`` for a vision transformer).
    model_id : str
        Hub id, folder or file the weights came from.
    model_hash : str
        SHA-256 over the UNet + VAE-encoder weights (short hex), identifying the exact weights.
    normalization : str
        How pixels are scaled: ``"minus_one_to_one"`` means ``x / 127.5 - 1``; ``"imagenet"``
        ``(x / 255 - mean) / std`` with the ImageNet statistics; ``"zero_to_one"`` ``x / 255``.
    color_order : str
        Channel order the model expects (``"RGB"``).
    precision : str
        ``"fp32"``, ``"fp16"`` or ``"int8"`` (weights of the matrix products quantised to 8 bits,
        dynamic activations; contract version 2) — inputs and outputs stay float32 either way.
    opset : int
        ONNX opset of the graph.
    exporter_version : str
        walkcut version that wrote the model.
    backbone : str
        ``"unet"`` (Stable Diffusion) or ``"vit"`` (a vision transformer) (contract version 2).
    cut_defaults : dict
        The cut settings tuned for this backbone (keys of ``CUT_DEFAULT_KEYS``: mode, power,
        threshold, min_size, max_segments, upsample); the runtime uses them where the caller gives
        none (contract version 2; empty: the package defaults).
    """

    image_size: int
    attn_res: int
    layers: str = "encoder"
    resolutions: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    timestep: int = 300
    noise: bool = False
    model_id: str = ""
    model_hash: str = ""
    normalization: str = "minus_one_to_one"
    color_order: str = "RGB"
    precision: str = "fp32"
    opset: int = 20
    exporter_version: str = ""
    contract_version: int = _d.CONTRACT_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)
    backbone: str = "unet"
    cut_defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backbone not in _d.BACKBONES:
            raise ContractError(f"backbone must be one of {_d.BACKBONES}, got {self.backbone!r}")
        if not isinstance(self.attn_res, int) or self.attn_res < 2:
            raise ContractError(f"attn_res must be an integer >= 2, got {self.attn_res!r}")
        if self.backbone == "unet":
            if not isinstance(self.image_size, int) or self.image_size <= 0 or self.image_size % 64:
                raise ContractError(f"image_size must be a positive multiple of 64, got {self.image_size!r}")
        elif not isinstance(self.image_size, int) or self.image_size <= 0 or self.image_size % self.attn_res:
            raise ContractError(f"image_size of a vision transformer must be a positive multiple of attn_res "
                                f"({self.attn_res}: S = R x patch size), got {self.image_size!r}")
        check_cut_settings(self.cut_defaults, source="cut_defaults")
        if len(self.weights) != len(self.resolutions):
            raise ContractError(
                f"weights {self.weights!r} and resolutions {self.resolutions!r} differ in length"
            )

    @property
    def io(self) -> GraphIO:
        return GraphIO(image_size=self.image_size, attn_res=self.attn_res)

    # --- serialisation -------------------------------------------------------------------------
    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["resolutions"] = list(self.resolutions)
        d["weights"] = list(self.weights)
        d["extra"] = dict(self.extra)
        d["cut_defaults"] = dict(self.cut_defaults)
        return json.dumps(d, sort_keys=True)

    def to_metadata(self) -> dict[str, str]:
        """The ONNX ``metadata_props`` entries that carry this contract."""
        return {_d.METADATA_KEY: self.to_json()}

    @classmethod
    def from_json(cls, text: str, *, source: str = "model") -> ModelContract:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(f"{source}: the walkcut contract is not valid JSON ({exc})") from exc
        if not isinstance(d, dict):
            raise ContractError(f"{source}: the walkcut contract must be a JSON object")
        version = d.get("contract_version")
        if version not in _d.SUPPORTED_CONTRACT_VERSIONS:
            raise ContractError(
                f"{source}: contract version {version!r} is not supported by this runtime "
                f"(reads {' and '.join(map(str, _d.SUPPORTED_CONTRACT_VERSIONS))}); re-export the model with "
                f"this walkcut version (`walkcut export ...`)"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        if version == 1:  # fields added in version 2 are not part of a version-1 contract
            known -= {"backbone", "cut_defaults"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ContractError(f"{source}: unknown contract fields {unknown}; re-export the model")
        missing = [k for k in ("image_size", "attn_res") if k not in d]
        if missing:
            raise ContractError(f"{source}: contract lacks {missing}; re-export the model")
        d["resolutions"] = tuple(int(r) for r in d.get("resolutions", ()))
        d["weights"] = tuple(float(w) for w in d.get("weights", ()))
        try:
            return cls(**d)
        except ContractError as exc:  # a field's value: name the model it came from
            raise ContractError(f"{source}: {exc}") from None
        except TypeError as exc:
            raise ContractError(f"{source}: malformed contract ({exc}); re-export the model") from exc

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], *, source: str = "model") -> ModelContract:
        """Read the contract from ONNX metadata; raise :class:`ContractError` naming the fix."""
        if _d.METADATA_KEY not in metadata:
            raise ContractError(
                f"{source} is not a walkcut model: its metadata has no {_d.METADATA_KEY!r} entry. "
                f"Export one with `walkcut export --model <SD weights> --out models/NAME.onnx`."
            )
        return cls.from_json(metadata[_d.METADATA_KEY], source=source)

    def check_runtime_support(self, *, source: str = "model") -> None:
        """Raise :class:`ContractError` if this runtime cannot honour the contract."""
        if self.normalization not in _d.NORMALIZATIONS:
            raise ContractError(
                f"{source}: normalization {self.normalization!r} is not supported (expects one of "
                f"{', '.join(_d.NORMALIZATIONS)}); re-export with this walkcut version"
            )
        if self.color_order not in ("RGB", "BGR"):
            raise ContractError(f"{source}: color_order {self.color_order!r} is not RGB or BGR; re-export")
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ContractError(f"{source}: precision {self.precision!r} is not fp32, fp16 or int8; re-export")
