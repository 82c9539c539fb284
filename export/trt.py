"""TensorRT engine build from an exported ONNX model (``walkcut export --trt``).

``tensorrt`` is imported lazily: it is an optional dependency (``pip install walkcut[trt]``, or the
system package on JetPack). Two generations are handled:

- TensorRT 10 (JetPack 6): a weakly typed network; fp16 comes from the ``BuilderFlag.FP16`` flag.
- TensorRT 11 and later: networks are strongly typed and the fp16 builder flag is gone; precision
  comes from the ONNX file itself, so an fp16 engine needs the fp16 ONNX export (``--fp16``).

The engine is written as ``<name>.engine`` with ``<name>.engine.json`` beside it: the ONNX contract
plus the TensorRT version and precision. Both are written atomically. Not run on our CI (no TensorRT).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from walkcut.runtime.imageio import write_all_or_none
from walkcut.runtime.sources.contract import ModelContract

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "TensorRT is not installed. Install it with `pip install walkcut[trt]` (NVIDIA's wheels need a "
    "CUDA GPU and network access to pypi.nvidia.com) or use the system package on JetPack "
    "(`apt install python3-libnvinfer`); then re-run with --trt. The ONNX model works without it."
)


def require_tensorrt():
    """Import and return ``tensorrt``; raise RuntimeError with the install hint if it is missing."""
    try:
        import tensorrt
    except ImportError as exc:
        raise RuntimeError(INSTALL_HINT) from exc
    return tensorrt


def engine_paths(onnx_path: str | Path) -> tuple[Path, Path]:
    """``(<name>.engine, <name>.engine.json)`` beside ``onnx_path``."""
    onnx_path = Path(onnx_path)
    engine = onnx_path.with_suffix(".engine")
    return engine, engine.with_name(engine.name + ".json")


def build_engine(onnx_path: str | Path, contract: ModelContract, *, fp16: bool | None = None,
                 workspace_gib: float = 4.0) -> Path:
    """Build and save a TensorRT engine for ``onnx_path``; return the engine path.

    Parameters
    ----------
    onnx_path : path
        An exported walkcut model (its external data, if any, beside it).
    contract : ModelContract
        The model's contract, copied into the JSON file beside the engine.
    fp16 : bool, optional
        Ask for fp16 kernels (default: the contract's precision). On TensorRT >= 11 this must match
        the ONNX file's precision, since the network is strongly typed.
    workspace_gib : float
        Builder workspace memory limit.

    Raises
    ------
    RuntimeError
        If TensorRT is missing, the ONNX file does not parse, or the build fails.
    ValueError
        If fp16 is requested on TensorRT >= 11 for an fp32 ONNX model.
    """
    trt = require_tensorrt()
    onnx_path = Path(onnx_path)
    fp16 = contract.precision == "fp16" if fp16 is None else fp16
    major = int(trt.__version__.split(".")[0])
    strongly_typed = major >= 11
    if strongly_typed and fp16 and contract.precision != "fp16":
        raise ValueError(
            f"TensorRT {trt.__version__} builds strongly typed networks: an fp16 engine needs the fp16 "
            "ONNX model; re-export with --fp16"
        )
    log = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(log)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log)
    # parse_from_file resolves <name>.onnx.data relative to the model
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 1024**3))
    if fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    logger.info("building TensorRT %s engine (%s, %s)", trt.__version__, "fp16" if fp16 else "fp32",
                "strongly typed" if strongly_typed else "builder flags")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    engine_path, json_path = engine_paths(onnx_path)
    sidecar = {
        "contract": json.loads(contract.to_json()),
        "tensorrt_version": trt.__version__,
        "precision": "fp16" if fp16 else "fp32",
        "strongly_typed": strongly_typed,
        "onnx": onnx_path.name,
    }
    # The engine and its JSON are swapped in together: a failed write leaves the old pair, never
    # a new engine beside an old contract.
    write_all_or_none([(engine_path, bytes(serialized)),
                       (json_path, json.dumps(sidecar, indent=2, sort_keys=True).encode())])
    return engine_path
