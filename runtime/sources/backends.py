"""Engine backends: one small protocol, chosen by name.

=========== =================================================== ===============================
name        what runs the model                                 needs
=========== =================================================== ===============================
``ort-cpu`` onnxruntime, CPU execution provider                 ``onnxruntime`` (base install)
``ort-cuda`` onnxruntime, CUDA execution provider               ``pip install walkcut[gpu]``
``ort-trt`` onnxruntime, TensorRT execution provider (engine    ``walkcut[gpu]`` + TensorRT libs
            cache and timing cache on)
``trt``     native TensorRT engine (``NAME.engine`` + its JSON  ``pip install walkcut[trt]``
            file), device buffers through cuda-python
``auto``    the best of the above that is available here
=========== =================================================== ===============================

Every backend takes the preprocessed image ``(1, 3, S, S)`` float32 and returns the model's
``attention`` output ``(1, R*R, R*R)`` float32. ``auto`` logs its pick at INFO level; every fallback
(a provider that is listed but fails to start, an engine without TensorRT) is a logging warning. A
backend asked for by name that cannot run raises :class:`BackendUnavailable` with the fix.

GPU backends are gated, never emulated: their imports happen inside the constructors, so the
runtime imports without them, and their tests skip where the hardware or packages are absent.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "ort-cpu", "ort-cuda", "ort-trt", "trt")
#: Order ``auto`` tries for an ONNX file (best first); a ``.engine`` file always means ``trt``.
AUTO_ORDER = ("ort-trt", "ort-cuda", "ort-cpu")

_ORT_PROVIDER = {
    "ort-cpu": "CPUExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-trt": "TensorrtExecutionProvider",
}
_FIX = {
    "ort-cuda": "install the GPU build of onnxruntime: `pip uninstall onnxruntime && pip install walkcut[gpu]` "
                "(needs an NVIDIA GPU with CUDA 12 and cuDNN 9)",
    "ort-trt": "install the GPU build of onnxruntime and TensorRT: `pip uninstall onnxruntime && "
               "pip install walkcut[gpu,trt]` (on JetPack: the system TensorRT)",
    "trt": "install TensorRT and cuda-python: `pip install walkcut[trt]` (on JetPack: `apt install "
           "python3-libnvinfer` and `pip install cuda-python`), then build the engine with "
           "`walkcut export ... --trt`",
    "ort-cpu": "install onnxruntime: `pip install onnxruntime`",
}


class BackendUnavailable(RuntimeError):
    """A backend was asked for by name but cannot run on this machine; the message says the fix."""


@runtime_checkable
class Backend(Protocol):
    """What :class:`~walkcut.runtime.engine_source.EngineSource` needs from an engine."""

    name: str

    def run(self, image: np.ndarray) -> np.ndarray:
        """``image`` (1, 3, S, S) float32 -> ``attention`` (1, R*R, R*R) float32."""
        ...

    def describe(self) -> dict:
        """What runs the model (backend, providers / device, versions): for logs and benchmarks."""
        ...


def _ort_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def available_backends() -> list[str]:
    """Backend names whose packages are present here (the hardware is only checked when started)."""
    providers = _ort_providers()
    names = [b for b in ("ort-cpu", "ort-cuda", "ort-trt") if _ORT_PROVIDER[b] in providers]
    if _has_module("tensorrt") and (_has_module("cuda.bindings") or _has_module("cuda.cudart")):
        names.append("trt")
    return names


def _check_name(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


class OrtBackend:
    """onnxruntime session on one execution provider (the CPU provider stays behind as a fallback).

    Parameters
    ----------
    path : str or Path
        The ONNX model.
    name : {"ort-cpu", "ort-cuda", "ort-trt"}
    fp16 : bool
        Let the TensorRT EP build fp16 kernels (``ort-trt`` only).
    cache_dir : str or Path, optional
        Where the TensorRT EP keeps its engine and timing caches; default ``<model>.ort-trt-cache``
        beside the model, so the (minutes-long) engine build happens once per model and GPU.
    threads : int, optional
        Intra-op threads of the CPU provider (default: onnxruntime's choice).
    """

    def __init__(self, path, name: str = "ort-cpu", *, fp16: bool = False, cache_dir=None,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        if name not in _ORT_PROVIDER:
            raise ValueError(f"not an onnxruntime backend: {name!r}")
        self.name = name
        self.path = Path(path)
        provider = _ORT_PROVIDER[name]
        if provider not in ort.get_available_providers():
            raise BackendUnavailable(f"backend {name!r}: this onnxruntime ({ort.__version__}) has no "
                                     f"{provider}; {_FIX[name]}")
        providers: list = []
        if name == "ort-trt":
            cache = Path(cache_dir) if cache_dir else self.path.with_name(self.path.name + ".ort-trt-cache")
            cache.mkdir(parents=True, exist_ok=True)
            providers.append((provider, {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache),
                "trt_fp16_enable": bool(fp16),
            }))
            providers.append("CUDAExecutionProvider")
        elif name == "ort-cuda":
            providers.append(provider)
        providers.append("CPUExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's own warnings go through our checks below
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        active = self.session.get_providers()
        if active[0] != provider:
            # onnxruntime silently drops a provider whose libraries fail to load; make that visible.
            raise BackendUnavailable(f"backend {name!r}: {provider} is installed but did not start "
                                     f"(active: {active}); {_FIX[name]}")
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def run(self, image: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: image})[0]

    def describe(self) -> dict:
        import onnxruntime as ort

        return {"backend": self.name, "providers": self.session.get_providers(),
                "onnxruntime": ort.__version__}


class TrtBackend:
    """A serialized TensorRT engine run through the TensorRT Python API, buffers via cuda-python.

    Not run on our CI machines (no TensorRT there): written against the TensorRT 10 tensor API
    (``set_tensor_address`` / ``execute_async_v3``), which TensorRT 11 keeps.
    """

    def __init__(self, engine_path) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendUnavailable(f"backend 'trt': tensorrt is not installed; {_FIX['trt']}") from exc
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            try:
                from cuda import cudart  # cuda-python < 12.6
            except ImportError as exc:
                raise BackendUnavailable(f"backend 'trt': cuda-python is not installed; {_FIX['trt']}") from exc
        self.name = "trt"
        self.path = Path(engine_path)
        self._trt, self._cudart = trt, cudart
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        self.engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise BackendUnavailable(f"{self.path}: TensorRT could not load the engine (built with another "
                                     f"TensorRT version or for another GPU?); rebuild it with "
                                     f"`walkcut export ... --trt` on this machine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == mode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == mode.OUTPUT)
        self.input_shape = tuple(self.engine.get_tensor_shape(self.input_name))
        self.output_shape = tuple(self.engine.get_tensor_shape(self.output_name))
        self._stream = self._check(cudart.cudaStreamCreate())
        self._host_out = np.empty(self.output_shape, dtype=np.float32)
        self._d_in = self._check(cudart.cudaMalloc(int(np.prod(self.input_shape)) * 4))
        self._d_out = self._check(cudart.cudaMalloc(self._host_out.nbytes))
        self.context.set_tensor_address(self.input_name, int(self._d_in))
        self.context.set_tensor_address(self.output_name, int(self._d_out))

    def _check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA call failed with error {err} ({self.path})")
        return rest[0] if len(rest) == 1 else (rest or None)

    def run(self, image: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        image = np.ascontiguousarray(image, dtype=np.float32)
        if image.shape != self.input_shape:
            raise ValueError(f"{self.path}: input shape {image.shape}, engine expects {self.input_shape}")
        kind_h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        kind_d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(cudart.cudaMemcpyAsync(self._d_in, image.ctypes.data, image.nbytes, kind_h2d, self._stream))
        if not self.context.execute_async_v3(int(self._stream)):
            raise RuntimeError(f"{self.path}: TensorRT execution failed")
        self._check(cudart.cudaMemcpyAsync(self._host_out.ctypes.data, self._d_out, self._host_out.nbytes,
                                           kind_d2h, self._stream))
        self._check(cudart.cudaStreamSynchronize(self._stream))
        return self._host_out.copy()

    def describe(self) -> dict:
        return {"backend": "trt", "tensorrt": self._trt.__version__, "engine": str(self.path)}

    def __del__(self) -> None:  # best effort: the process may be exiting
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for ptr in (getattr(self, "_d_in", None), getattr(self, "_d_out", None)):
            if ptr is not None:
                cudart.cudaFree(ptr)
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)


def create_backend(path, backend: str = "auto", *, fp16: bool = False, threads: int | None = None) -> Backend:
    """Start the backend ``backend`` for the model at ``path`` (``.onnx`` or ``.engine``).

    ``auto`` tries ``trt`` for a ``.engine`` file and ``ort-trt -> ort-cuda -> ort-cpu`` for an ONNX
    file, warning at each fallback and logging the pick. A named backend that cannot run raises
    :class:`BackendUnavailable` whose message gives the fix.
    """
    _check_name(backend)
    path = Path(path)
    is_engine = path.suffix == ".engine"
    if backend != "auto":
        if is_engine != (backend == "trt"):
            want = "a TensorRT .engine file" if backend == "trt" else "an .onnx file"
            raise ValueError(f"backend {backend!r} needs {want}, got {path}")
        if backend == "trt":
            return TrtBackend(path)
        return OrtBackend(path, backend, fp16=fp16, threads=threads)
    if is_engine:
        try:
            chosen = TrtBackend(path)
        except BackendUnavailable as exc:
            onnx = path.with_suffix(".onnx")
            if not onnx.exists():
                raise
            logger.warning("%s; falling back to %s through onnxruntime", exc, onnx)
            return create_backend(onnx, "auto", fp16=fp16, threads=threads)
        logger.info("backend auto: picked trt for %s", path)
        return chosen
    present = set(_ort_providers())
    candidates = [b for b in AUTO_ORDER if _ORT_PROVIDER[b] in present]
    for i, name in enumerate(candidates):
        try:
            chosen = OrtBackend(path, name, fp16=fp16, threads=threads)
        except BackendUnavailable as exc:
            if i + 1 == len(candidates):
                raise
            logger.warning("%s; falling back to %s", exc, candidates[i + 1])
            continue
        logger.info("backend auto: picked %s for %s (available: %s)", name, path.name, ", ".join(candidates))
        return chosen
    raise BackendUnavailable(f"no backend can run {path}: {_FIX['ort-cpu']}")


def default_threads() -> int | None:
    """``WALKCUT_THREADS`` if set (an integer >= 1), else None (the library's own choice)."""
    value = os.environ.get("WALKCUT_THREADS")
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"WALKCUT_THREADS must be an integer >= 1, got {value!r}") from None
    if n < 1:
        raise ValueError(f"WALKCUT_THREADS must be an integer >= 1, got {value!r}")
    return n
