"""What a vision-transformer export is made of, without torch: named architectures, source
recognition and layer selection.

The command line reads this module before it imports torch: it decides from ``--model`` / ``--arch``
alone whether a source is a DINOv2 model (:func:`is_dinov2_source`), and a bad ``--layers`` is a
plain ``ValueError`` from :func:`parse_layers`.

Architectures (``models/dinov2-*.json``) hold a transformers ``Dinov2Config`` (or
``Dinov2WithRegistersConfig``) under ``config``: ``dinov2-s``, ``dinov2-b``, ``dinov2-l`` (and
``-reg``: with 4 register tokens) have the published hyper-parameters; ``dinov2-tiny`` (and
``dinov2-tiny-reg``) are toy widths for the tests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from walkcut.export.configs import packaged_architecture

#: ``model_type`` of the transformers configs the DINOv2 exporter reads.
DINOV2_MODEL_TYPES = ("dinov2", "dinov2_with_registers")
#: Named DINOv2 architectures (``models/<name>.json``) for ``--random-weights --arch``.
VIT_ARCHITECTURES = ("dinov2-s", "dinov2-b", "dinov2-l", "dinov2-s-reg", "dinov2-b-reg", "dinov2-l-reg",
                     "dinov2-tiny", "dinov2-tiny-reg")

_LAST_RE = re.compile(r"^last(\d+)$")


@dataclass(frozen=True)
class ViTArchitecture:
    """One named vision-transformer architecture: its transformers config and where it comes from."""

    name: str
    family: str  # "dinov2"
    hub_id: str
    config: dict[str, Any]

    @property
    def model_type(self) -> str:
        return self.config["model_type"]


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _is_vit_architecture_file(path: Path) -> bool:
    data = _read_json(path) if path.suffix.lower() == ".json" and path.is_file() else None
    config = data.get("config") if data else None
    return isinstance(config, dict) and config.get("model_type") in DINOV2_MODEL_TYPES


def load_vit_architecture(name_or_path: str | Path) -> ViTArchitecture:
    """Read a ViT architecture by name (one of :data:`VIT_ARCHITECTURES`) or from a JSON path.

    Raises
    ------
    ValueError
        If ``name_or_path`` is neither a known name nor a JSON file whose ``config`` has a DINOv2
        ``model_type``.
    """
    if str(name_or_path) in VIT_ARCHITECTURES:
        path = packaged_architecture(str(name_or_path))
    else:
        path = Path(name_or_path)
        if not _is_vit_architecture_file(path):
            raise ValueError(f"architecture {str(name_or_path)!r} is neither one of {VIT_ARCHITECTURES} nor a JSON "
                             f"file with a 'config' of model_type {' or '.join(DINOV2_MODEL_TYPES)}")
    data = _read_json(path)
    if data is None or not isinstance(data.get("config"), dict):
        raise ValueError(f"architecture file {path} has no 'config' object")
    return ViTArchitecture(name=data.get("name", Path(path.name).stem), family=data.get("family", "dinov2"),
                           hub_id=data.get("hub_id", ""), config=dict(data["config"]))


def is_dinov2_source(model: str | None, arch: str | None = None) -> bool:
    """Whether ``walkcut export --model MODEL`` / ``--arch ARCH`` names a DINOv2 model.

    - no ``model`` (``--random-weights``): ``arch`` is a DINOv2 architecture name or JSON file;
    - a folder: its ``config.json`` has ``model_type`` ``dinov2`` or ``dinov2_with_registers``
      (what ``Dinov2Model.save_pretrained`` writes);
    - a hub id (``owner/name``, not an existing path): its name contains ``dinov2``
      (``facebook/dinov2-small``, ``facebook/dinov2-with-registers-base``), as no file is read before
      loading;
    - a file (a Stable Diffusion checkpoint, an ``.onnx`` model): never.
    """
    if not model:
        return bool(arch) and (arch in VIT_ARCHITECTURES or _is_vit_architecture_file(Path(arch)))
    path = Path(model).expanduser()
    if path.is_dir():
        config = _read_json(path / "config.json")
        return bool(config) and config.get("model_type") in DINOV2_MODEL_TYPES
    if path.exists():
        return False
    return model.count("/") == 1 and "dinov2" in model.split("/")[1].lower()


def parse_layers(spec: str, n_layers: int) -> tuple[int, ...]:
    """The 0-based indices, ascending, of the transformer layers that ``spec`` selects.

    Parameters
    ----------
    spec : str
        ``all`` (every layer), ``lasthalf`` (layers ``n_layers // 2`` onwards), ``lastN`` (the N
        last layers, 1 <= N <= ``n_layers``), or a comma
        list of distinct 0-based layer indices (``0,5,11``).
    n_layers : int
        Number of layers of the model.

    Raises
    ------
    ValueError
        Naming ``spec`` and the valid range, for anything else.
    """
    if not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
    usage = (f"layers must be 'all', 'lasthalf', 'lastN' (1 <= N <= {n_layers}) or a comma list of distinct layer "
             f"indices in 0..{n_layers - 1}")
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{usage}, got {spec!r}")
    text = spec.strip().lower()
    if text == "all":
        return tuple(range(n_layers))
    if text == "lasthalf":  # the later half: 6..11 of 12 layers, 12..23 of 24
        return tuple(range(n_layers // 2, n_layers))
    last = _LAST_RE.match(text)
    if last:
        n = int(last.group(1))
        if not 1 <= n <= n_layers:
            raise ValueError(f"{usage}, got {spec!r}: the model has {n_layers} layers")
        return tuple(range(n_layers - n, n_layers))
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise ValueError(f"{usage}, got {spec!r}")
    indices = [int(p) for p in parts]
    out_of_range = [i for i in indices if i >= n_layers]
    if out_of_range:
        raise ValueError(f"{usage}, got {spec!r}: {out_of_range} out of range")
    if len(set(indices)) != len(indices):
        raise ValueError(f"{usage}, got {spec!r}: an index repeats")
    return tuple(sorted(indices))
