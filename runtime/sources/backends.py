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

IO binding (``ort-cuda`` by default, any onnxruntime backend on request): the contract fixes every
shape, so the input and output live in buffers allocated once on the provider's device and reused
by every call; the image goes up with one host-to-device copy, the attention stays on the device
(in the graph's own output type, float16 included) until one device-to-host copy into a host buffer
that is also reused (page-locked where onnxruntime can allocate it so). With fixed device buffers,
onnxruntime's CUDA graph capture (``cuda_graph=True``, provider option ``enable_cuda_graph``) can
replay the whole pass as one launch. ``WALKCUT_IO_BINDING`` and ``WALKCUT_CUDA_GRAPH`` (0 or 1) set
the defaults from the environment, so the command line can switch them without new flags.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
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
    # onnxruntime and onnxruntime-gpu install the same Python package: the CPU build must go first,
    # and reinstalling walkcut[gpu] would bring it back (it is a base dependency).
    "ort-cuda": "install the GPU build of onnxruntime in place of the CPU one: `pip uninstall -y onnxruntime "
                "&& pip install onnxruntime-gpu` (needs an NVIDIA GPU and the CUDA / cuDNN versions that "
                "onnxruntime-gpu release was built for; on Jetson see docs/jetson.md)",
    "ort-trt": "install the GPU build of onnxruntime and TensorRT: `pip uninstall -y onnxruntime && "
               "pip install onnxruntime-gpu tensorrt` (on JetPack: the system TensorRT, docs/jetson.md)",
    "trt": "install TensorRT and cuda-python: `pip install walkcut[trt]` (on JetPack: `apt install "
           "python3-libnvinfer` and `pip install cuda-python`), then build the engine with "
           "`walkcut export ... --trt`",
    "ort-cpu": "install onnxruntime: `pip install onnxruntime`",
}


class BackendUnavailable(RuntimeError):
    """A backend was asked for by name but cannot run on this machine; the message says the fix."""


@runtime_checkable
class Backend(Protocol):
    """What :class:`~walkcut.runtime.sources.engine.EngineSource` needs from an engine."""

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


def _env_flag(name: str) -> bool | None:
    """``name`` from the environment as a bool (``0``/``1``), None when unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if value not in ("0", "1"):
        raise ValueError(f"{name} must be 0 or 1, got {value!r}")
    return value == "1"


_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _static_shape(dims, name: str, what: str) -> tuple[int, ...]:
    """A graph's declared shape with a symbolic batch dimension read as 1 (the contract's batch)."""
    shape = []
    for i, d in enumerate(dims):
        if isinstance(d, int) and d > 0:
            shape.append(d)
        elif i == 0:
            shape.append(1)
        else:
            raise ValueError(f"IO binding needs static shapes, but {what} {name!r} is declared {list(dims)}; "
                             f"open the model with EngineSource.from_path (its contract gives the shapes) "
                             f"or pass io_shapes")
    return tuple(shape)


class _IOBound:
    """Fixed buffers bound once to one session: the IO-binding path of :class:`OrtBackend`.

    ``device`` buffers (``cuda`` on the GPU; ``cpu`` when the CPU provider runs, which takes the
    same steps so the tests exercise this code) hold the input and the output at fixed addresses,
    which CUDA graph replay needs. The output is read back into one reused host buffer.
    """

    def __init__(self, session, input_name: str, output_name: str, input_shape, output_shape,
                 output_dtype, device: str) -> None:
        import onnxruntime as ort

        self.session = session
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(output_shape)
        self.output_dtype = np.dtype(output_dtype)
        self.device = device
        self._ort = ort
        value = ort.OrtValue.ortvalue_from_shape_and_type
        self.input_value = value(list(self.input_shape), np.float32, device, 0)  # (1, 3, S, S)
        self.output_value = value(list(self.output_shape), self.output_dtype, device, 0)  # (1, n, n)
        self.host_value, self.pinned = self._host_buffer(ort, device)
        self.host_out = self.host_value.numpy()  # a view of the host buffer (checked in _host_buffer)
        self.binding = session.io_binding()
        self.binding.bind_ortvalue_input(input_name, self.input_value)
        self.binding.bind_ortvalue_output(output_name, self.output_value)
        self.readback = None  # how the output reaches the host buffer; chosen on the first call
        self.calls = 0

    def _host_buffer(self, ort, device: str):
        """The reused host buffer for the output copy: page-locked when onnxruntime offers it."""
        shape, dtype = list(self.output_shape), self.output_dtype
        if device == "cuda":
            try:
                ep = next(d for d in ort.get_ep_devices() if d.ep_name == "CUDAExecutionProvider")
                info = ep.memory_info(ort.OrtDeviceMemoryType.HOST_ACCESSIBLE)
                if info is not None:
                    pinned = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, memory_info=info)
                    if pinned.numpy().ctypes.data == pinned.data_ptr():
                        return pinned, True
                    logger.warning("onnxruntime's page-locked host buffer is not visible to numpy without a "
                                   "copy; the attention copy uses pageable memory (slower device-to-host copy)")
            except (StopIteration, AttributeError, TypeError, RuntimeError) as exc:
                # onnxruntime < 1.23 has no EP devices; older ones no memory_info argument
                logger.warning("no page-locked host buffer from this onnxruntime (%s); the attention copy "
                               "uses pageable memory (slower device-to-host copy)", exc)
        host = np.empty(self.output_shape, dtype)
        return ort.OrtValue.ortvalue_from_numpy(host), False

    def _read_back(self) -> None:
        """Copy the device output into the host buffer: one copy, no allocation where possible."""
        if self.readback == "numpy":
            np.copyto(self.host_out, self.output_value.numpy())
            return
        try:
            self.host_value.update_inplace(self.output_value)
            self.readback = "update_inplace"
        except (TypeError, RuntimeError) as exc:
            if self.readback is not None:
                raise
            # an onnxruntime whose update_inplace takes numpy arrays only: one extra host allocation
            logger.warning("OrtValue.update_inplace cannot copy from the device here (%s); reading the "
                           "attention through OrtValue.numpy() (one extra host copy per call)", exc)
            self.readback = "numpy"
            np.copyto(self.host_out, self.output_value.numpy())

    def run(self, image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.dtype != np.float32:
            raise TypeError(f"the engine input must be a float32 numpy array, got "
                            f"{getattr(image, 'dtype', type(image).__name__)}")
        if image.shape != self.input_shape:
            raise ValueError(f"engine input has shape {image.shape}, the model's contract fixes "
                             f"{self.input_shape}; preprocess the image with the model's contract")
        self.input_value.update_inplace(np.ascontiguousarray(image))  # host -> device, fixed address
        self.session.run_with_iobinding(self.binding)
        self._read_back()
        self.calls += 1
        return self.host_out


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
    io_binding : bool, optional
        Run through fixed, reused input/output buffers on the provider's device (see the module
        notes). Default: on for ``ort-cuda``, off for ``ort-cpu`` (where it only adds a copy) and
        ``ort-trt``, unless ``WALKCUT_IO_BINDING`` says otherwise.
    cuda_graph : bool, optional
        Capture the pass into a CUDA graph on the first call and replay it afterwards (onnxruntime's
        ``enable_cuda_graph``; ``ort-cuda`` only; implies IO binding). Default ``WALKCUT_CUDA_GRAPH``
        or off. Needs every node of the model on the CUDA provider; a model that cannot be captured
        raises :class:`BackendUnavailable`.
    io_shapes : (input_shape, output_shape), optional
        The shapes to bind; default the graph's declared shapes (a symbolic batch read as 1).
        :meth:`EngineSource.from_path` passes the contract's.

    Notes
    -----
    The bound buffers are shared by every caller of one backend, so bound runs take a lock (the
    video pipeline's worker threads share one source): the engine runs one pass at a time, which
    is what one GPU does anyway, while the cuts of other frames go on in the other threads.
    """

    def __init__(self, path, name: str = "ort-cpu", *, fp16: bool = False, cache_dir=None,
                 threads: int | None = None, io_binding: bool | None = None, cuda_graph: bool | None = None,
                 io_shapes=None) -> None:
        import onnxruntime as ort

        if name not in _ORT_PROVIDER:
            raise ValueError(f"not an onnxruntime backend: {name!r}")
        self.name = name
        self.path = Path(path)
        provider = _ORT_PROVIDER[name]
        if provider not in ort.get_available_providers():
            raise BackendUnavailable(f"backend {name!r}: this onnxruntime ({ort.__version__}) has no "
                                     f"{provider}; {_FIX[name]}")
        if cuda_graph is None:
            cuda_graph = bool(_env_flag("WALKCUT_CUDA_GRAPH")) and name == "ort-cuda"
        if cuda_graph and name != "ort-cuda":
            raise ValueError(f"cuda_graph needs the 'ort-cuda' backend, not {name!r}")
        if io_binding is None:
            env = _env_flag("WALKCUT_IO_BINDING")
            io_binding = env if env is not None else name == "ort-cuda"
        if cuda_graph and not io_binding:
            raise ValueError("cuda_graph needs IO binding (fixed device buffers); do not turn io_binding off")
        self.io_binding, self.cuda_graph = bool(io_binding), bool(cuda_graph)
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
            providers.append((provider, {"enable_cuda_graph": "1"}) if self.cuda_graph else provider)
        providers.append("CPUExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's own warnings go through our checks below
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail / RuntimeException types
            if self.cuda_graph and "graph" in str(exc).lower():
                raise BackendUnavailable(f"backend 'ort-cuda': onnxruntime cannot capture {self.path.name} in a "
                                         f"CUDA graph ({str(exc).strip().splitlines()[-1]}); run without "
                                         f"cuda_graph (WALKCUT_CUDA_GRAPH=0)") from exc
            raise
        active = self.session.get_providers()
        if active[0] != provider:
            # onnxruntime silently drops a provider whose libraries fail to load; make that visible.
            raise BackendUnavailable(f"backend {name!r}: {provider} is installed but did not start "
                                     f"(active: {active}); {_FIX[name]}")
        self.input_name = self.session.get_inputs()[0].name
        self._output_name = self.session.get_outputs()[0].name
        self._io_shapes = io_shapes
        self._device = "cpu" if name == "ort-cpu" else "cuda"
        self._bound: _IOBound | None = None
        self._lock = threading.Lock()
        if self.io_binding:
            self._bound = self._bind()  # shape problems surface now, not on the first frame

    @property
    def output_name(self) -> str:
        return self._output_name

    @output_name.setter
    def output_name(self, name: str) -> None:
        # EngineSource names the contract's output after construction; rebind if it differs
        if name != self._output_name:
            self._output_name = name
            if self.io_binding:
                self._bound = self._bind()

    def _bind(self) -> _IOBound:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if self._output_name not in outputs:
            raise ValueError(f"{self.path}: the graph has no output {self._output_name!r} (outputs: {list(outputs)})")
        out = outputs[self._output_name]
        if out.type not in _NUMPY_TYPES:
            raise ValueError(f"{self.path}: output {out.name!r} has type {out.type}; IO binding handles "
                             f"{sorted(_NUMPY_TYPES)}")
        if self._io_shapes is not None:
            in_shape, out_shape = (tuple(int(d) for d in s) for s in self._io_shapes)
        else:
            in_shape = _static_shape(inputs[self.input_name].shape, self.input_name, "input")
            out_shape = _static_shape(out.shape, out.name, "output")
        return _IOBound(self.session, self.input_name, out.name, in_shape, out_shape,
                        _NUMPY_TYPES[out.type], self._device)

    def run(self, image: np.ndarray) -> np.ndarray:
        if self._bound is None:
            return self.session.run([self._output_name], {self.input_name: image})[0]
        with self._lock:
            host = self._bound.run(image)  # (1, n, n), the reused host buffer
            return host.astype(np.float32)  # the caller's own array; float16 widened here, once

    def describe(self) -> dict:
        import onnxruntime as ort

        info = {"backend": self.name, "providers": self.session.get_providers(),
                "onnxruntime": ort.__version__, "io_binding": self.io_binding, "cuda_graph": self.cuda_graph}
        if self._bound is not None:
            info.update(pinned_host_buffer=self._bound.pinned, readback=self._bound.readback,
                        output_dtype=str(self._bound.output_dtype))
        return info


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


def create_backend(path, backend: str = "auto", *, fp16: bool = False, threads: int | None = None,
                   **ort_options) -> Backend:
    """Start the backend ``backend`` for the model at ``path`` (``.onnx`` or ``.engine``).

    ``auto`` tries ``trt`` for a ``.engine`` file and ``ort-trt -> ort-cuda -> ort-cpu`` for an ONNX
    file, warning at each fallback and logging the pick. A named backend that cannot run raises
    :class:`BackendUnavailable` whose message gives the fix. ``ort_options`` (``io_binding``,
    ``cuda_graph``, ``io_shapes``) go to :class:`OrtBackend`; ``cuda_graph`` applies to ``ort-cuda``
    only, so ``auto`` drops it for the other providers.
    """
    unknown = set(ort_options) - {"io_binding", "cuda_graph", "io_shapes"}
    if unknown:
        raise TypeError(f"create_backend got unknown options {sorted(unknown)}")
    _check_name(backend)
    path = Path(path)
    is_engine = path.suffix == ".engine"
    if backend != "auto":
        if is_engine != (backend == "trt"):
            want = "a TensorRT .engine file" if backend == "trt" else "an .onnx file"
            raise ValueError(f"backend {backend!r} needs {want}, got {path}")
        if backend == "trt":
            return TrtBackend(path)
        return OrtBackend(path, backend, fp16=fp16, threads=threads, **ort_options)
    if is_engine:
        try:
            chosen = TrtBackend(path)
        except BackendUnavailable as exc:
            onnx = path.with_suffix(".onnx")
            if not onnx.exists():
                raise
            logger.warning("%s; falling back to %s through onnxruntime", exc, onnx)
            return create_backend(onnx, "auto", fp16=fp16, threads=threads, **ort_options)
        logger.info("backend auto: picked trt for %s", path)
        return chosen
    present = set(_ort_providers())
    candidates = [b for b in AUTO_ORDER if _ORT_PROVIDER[b] in present]
    for i, name in enumerate(candidates):
        try:
            options = ort_options if name == "ort-cuda" else {k: v for k, v in ort_options.items()
                                                              if k != "cuda_graph"}
            chosen = OrtBackend(path, name, fp16=fp16, threads=threads, **options)
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
