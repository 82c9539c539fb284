"""TensorRT builder logic against a stand-in ``tensorrt`` module (the real one is not installable here).

Checks what the builder asks TensorRT for: TensorRT 10 gets the fp16 builder flag on a weakly typed
network; TensorRT 11 gets a strongly typed network and no flag. Whether real TensorRT accepts the
graph is not tested here (see bench/RESULTS_export.md).
"""

from __future__ import annotations

import json
import types

import pytest
from walkcut.runtime.sources.contract import ModelContract


def _fake_tensorrt(version: str, record: dict):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Config:
        def set_memory_pool_limit(self, pool, size):
            record["workspace"] = size

        def set_flag(self, flag):
            record.setdefault("flags", []).append(flag)

    class Builder:
        def __init__(self, log):
            pass

        def create_network(self, flags):
            record["network_flags"] = flags
            return object()

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            return b"engine-bytes"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, log):
            pass

        def parse_from_file(self, path):
            record["parsed"] = path
            return True

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(FP16="fp16")
    return trt


def _contract(precision: str) -> ModelContract:
    return ModelContract(image_size=128, attn_res=8, resolutions=(16, 8), weights=(2 / 3, 1 / 3),
                         precision=precision)


@pytest.mark.parametrize("version,precision,network_flags,builder_flags", [
    ("10.3.0", "fp16", 0, ["fp16"]),
    ("10.3.0", "fp32", 0, []),
    ("11.0.0", "fp16", 1, []),
    ("11.0.0", "fp32", 1, []),
])
def test_engine_flags_per_tensorrt_generation(monkeypatch, tmp_path, version, precision, network_flags,
                                              builder_flags):
    from walkcut.export.trt import build_engine

    record: dict = {}
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", _fake_tensorrt(version, record))
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"onnx")
    engine = build_engine(onnx_path, _contract(precision))
    assert record["network_flags"] == network_flags and record.get("flags", []) == builder_flags
    assert engine == tmp_path / "m.engine" and engine.read_bytes() == b"engine-bytes"
    sidecar = json.loads((tmp_path / "m.engine.json").read_text())
    assert sidecar["tensorrt_version"] == version and sidecar["precision"] == precision
    assert ModelContract.from_json(json.dumps(sidecar["contract"])) == _contract(precision)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json", "m.onnx"]


def test_tensorrt11_fp16_needs_fp16_onnx(monkeypatch, tmp_path):
    from walkcut.export.trt import build_engine

    monkeypatch.setitem(__import__("sys").modules, "tensorrt", _fake_tensorrt("11.1.0", {}))
    with pytest.raises(ValueError, match="--fp16"):
        build_engine(tmp_path / "m.onnx", _contract("fp32"), fp16=True)


def test_missing_tensorrt_names_the_fix(monkeypatch):
    from walkcut.export.trt import require_tensorrt

    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)
    with pytest.raises(RuntimeError, match="pip install walkcut\\[trt\\]"):
        require_tensorrt()
