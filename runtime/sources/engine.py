"""``EngineSource``: the random walk from an exported attention model (ONNX or TensorRT engine).

``EngineSource.from_path("models/sd15.onnx")`` reads the model's contract, refuses a file that is
not a walkcut model or whose contract this runtime cannot honour (the message says what to
re-export), starts a backend (:mod:`walkcut.runtime.sources.backends`) and checks the graph's inputs and
outputs against the contract. ``transition(image_rgb)`` then preprocesses the image
(:mod:`walkcut.runtime.sources.preprocess`), runs the engine and validates its output with
:func:`validate_attention`: a finite, non-negative, row-stochastic ``(R*R, R*R)`` matrix, else
:class:`EngineOutputError` naming the model.

:class:`EngineSpec` is the picklable description of an engine source (model path, backend,
threads): it reads the contract without starting anything, and :meth:`EngineSpec.open` starts the
backend where it is called (a worker process, a Ray actor, a thread). A model's contract may carry
its own cut settings (``cut_defaults``, contract version 2); the source and its spec expose them as
``cut_defaults``, which :class:`~walkcut.runtime.segmenter.Segmenter` uses where the caller gives none.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import MappingProxyType

import numpy as np
from walkcut.runtime.cuts.graph import check_transition_matrix
from walkcut.runtime.defaults import MAX_ATTN_RES, ROW_TOL
from walkcut.runtime.sources.backends import BACKENDS, Backend, create_backend, default_threads
from walkcut.runtime.sources.contract import ContractError, ModelContract
from walkcut.runtime.sources.pixels import Transition
from walkcut.runtime.sources.preprocess import preprocess

logger = logging.getLogger(__name__)


_REEXPORT = "re-export it with `walkcut export --model <SD weights> --out models/NAME.onnx`"


class EngineOutputError(ValueError):
    """The engine returned something that is not a transition matrix (NaN, wrong shape, ...)."""


# --- ONNX metadata without loading the graph ------------------------------------------------------
# ModelProto fields (onnx.proto): 1 ir_version, 7 graph, 14 metadata_props (StringStringEntryProto:
# 1 key, 2 value). Reading them directly skips the weights (gigabytes for SD), so refusing a wrong
# file is instant and needs neither the `onnx` package nor an inference session.

def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        b = buf[pos]
        result |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return result, pos
        shift += 7


def _read_varint(f) -> int | None:
    result = shift = 0
    while True:
        byte = f.read(1)
        if not byte:
            if shift == 0:
                return None
            raise ValueError("truncated varint")
        b = byte[0]
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError("bad varint")


def _string_pair(buf: bytes) -> tuple[str, str]:
    pos, key, value = 0, "", ""
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        if tag & 7 != 2:
            raise ValueError("bad metadata entry")
        n, pos = _varint(buf, pos)
        text = bytes(buf[pos:pos + n]).decode("utf-8")
        pos += n
        if tag >> 3 == 1:
            key = text
        elif tag >> 3 == 2:
            value = text
    return key, value


def read_onnx_metadata(path) -> dict[str, str]:
    """``metadata_props`` of the ONNX file at ``path``, reading past (not into) the graph.

    Raises
    ------
    ContractError
        The file is not an ONNX model.
    """
    path = Path(path)
    size = path.stat().st_size
    meta: dict[str, str] = {}
    seen: set[int] = set()
    try:
        with open(path, "rb") as f:
            while True:
                tag = _read_varint(f)
                if tag is None:
                    break
                field_no, wire = tag >> 3, tag & 7
                if field_no == 0:
                    raise ValueError("field 0")
                seen.add(field_no)
                if wire == 0:
                    if _read_varint(f) is None:
                        raise ValueError("truncated")
                elif wire == 1:
                    f.seek(8, 1)
                elif wire == 5:
                    f.seek(4, 1)
                elif wire == 2:
                    n = _read_varint(f)
                    if n is None or f.tell() + n > size:
                        raise ValueError("length past the end of the file")
                    if field_no == 14:
                        key, value = _string_pair(f.read(n))
                        meta[key] = value
                    else:
                        f.seek(n, 1)
                else:
                    raise ValueError(f"wire type {wire}")
                if f.tell() > size:
                    raise ValueError("past the end of the file")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ContractError(f"{path} is not an ONNX model ({exc})") from None
    if not {1, 7} <= seen:
        raise ContractError(f"{path} is not an ONNX model (no IR version or graph)")
    return meta


def read_contract(path) -> ModelContract:
    """The contract of a walkcut ``.onnx`` model or ``.engine`` (from ``NAME.engine.json``)."""
    path = Path(path)
    if not path.exists():
        raise ContractError(f"{path}: no such model file")
    if path.is_dir():
        raise ContractError(f"{path}: is a directory, expected an .onnx or .engine file")
    if path.suffix == ".engine":
        side = path.with_name(path.name + ".json")
        if not side.exists():
            raise ContractError(f"{path}: its contract file {side.name} is missing; rebuild the engine "
                                f"with `walkcut export ... --trt`, which writes both")
        try:
            sidecar = json.loads(side.read_text())
            text = json.dumps(sidecar["contract"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ContractError(f"{side}: not a walkcut engine contract ({exc!r}); rebuild the engine") from None
        return ModelContract.from_json(text, source=str(path))
    return ModelContract.from_metadata(read_onnx_metadata(path), source=str(path))


def check_contract(contract: ModelContract, *, source: str) -> None:
    """Raise :class:`ContractError` if this runtime cannot run a model with ``contract``."""
    contract.check_runtime_support(source=source)
    if contract.attn_res > MAX_ATTN_RES:
        raise ContractError(f"{source}: output grid R = {contract.attn_res} is larger than this runtime "
                            f"handles (R <= {MAX_ATTN_RES}); re-export with `--attn-res 32` or 64")


def validate_attention(out, contract: ModelContract, *, name: str = "model") -> np.ndarray:
    """The transition matrix in an engine's raw output, checked against the model's contract.

    Parameters
    ----------
    out : array_like, (1, R*R, R*R)
        What the model's graph returned for one image.
    contract : ModelContract
        The model's contract (fixes ``R``).
    name : str
        How errors name the model (its path).

    Returns
    -------
    (R*R, R*R) ndarray
        Finite, non-negative, every row summing to 1: rows within ``ROW_TOL`` of 1 (fp16 rounding)
        are renormalised, so the cuts see exact row sums.

    Raises
    ------
    EngineOutputError
        Wrong shape, NaN/Inf, negative entries, rows that do not sum to 1, or an all-zero row;
        the message names the model and what to do.
    """
    n = contract.io.n_nodes
    out = np.asarray(out)
    if out.shape != (1, n, n):
        raise EngineOutputError(f"{name}: engine output has shape {out.shape}, contract says "
                                f"{(1, n, n)}; {_REEXPORT}")
    P = out[0]  # (n, n)
    bad = ~np.isfinite(P)
    if bad.any():  # the likely cause differs from a malformed matrix: say so
        raise EngineOutputError(f"{name}: engine output has {int(bad.sum())} NaN/Inf values of {P.size} "
                                f"(corrupt weights or fp16 overflow?); try the fp32 export or another backend")
    try:
        # The one validator of transition matrices.
        P = check_transition_matrix(P, row_tol=ROW_TOL, name=f"{name}: engine output")
    except (TypeError, ValueError) as exc:
        raise EngineOutputError(f"{exc}; it is not a row-stochastic attention; {_REEXPORT}") from exc
    empty = np.flatnonzero(P.sum(axis=1) == 0)  # the validator allows them; softmax rows never are
    if empty.size:
        raise EngineOutputError(f"{name}: engine output row {int(empty[0])} is all zeros; it is not a "
                                f"row-stochastic attention; {_REEXPORT}")
    return P


def _static_dims(shape) -> tuple:
    return tuple(d if isinstance(d, int) else None for d in shape)


class EngineSource:
    """Transition matrices from an attention engine; plugs into :class:`~walkcut.runtime.segmenter.Segmenter`.

    Parameters
    ----------
    backend : Backend
        A started backend (see :func:`~walkcut.runtime.sources.backends.create_backend`).
    contract : ModelContract
        The model's contract (input size, normalisation, colour order, output grid).
    name : str
        How errors name the model (its path).

    Attributes
    ----------
    last_timings : dict
        Seconds of the last ``transition`` call in this thread: ``preprocess`` and ``engine`` (run +
        output checks). Per thread, so video workers sharing one source each see their own.
    """

    def __init__(self, backend: Backend, contract: ModelContract, *, name: str = "model") -> None:
        check_contract(contract, source=name)
        self.backend = backend
        self.contract = contract
        self.name = name
        self._local = threading.local()
        self._check_io()

    @classmethod
    def from_path(cls, path, *, backend: str = "auto", threads: int | None = None) -> EngineSource:
        """Read the contract of ``path`` (``.onnx`` or ``.engine``), check it, start ``backend``."""
        contract = read_contract(path)
        check_contract(contract, source=str(path))
        # the contract fixes the shapes, so an IO-bound backend can allocate its buffers once
        options = {} if Path(path).suffix == ".engine" else {"io_shapes": (contract.io.input_shape,
                                                                           contract.io.output_shape)}
        started = create_backend(path, backend, fp16=contract.precision == "fp16",
                                 threads=threads if threads is not None else default_threads(), **options)
        return cls(started, contract, name=str(path))

    @property
    def last_timings(self) -> dict[str, float]:
        return getattr(self._local, "timings", {})

    @property
    def grid_shape(self) -> tuple[int, int]:
        return (self.contract.attn_res, self.contract.attn_res)

    @property
    def cut_defaults(self) -> Mapping:
        """The model's own cut settings (its contract's ``cut_defaults``; empty for version-1 models)."""
        return MappingProxyType(dict(self.contract.cut_defaults))

    def _check_io(self) -> None:
        io = self.contract.io
        session = getattr(self.backend, "session", None)
        if session is None:  # the trt backend checks shapes at run time
            return
        inputs, outputs = session.get_inputs(), session.get_outputs()
        problems = []
        if len(inputs) != 1 or inputs[0].type != "tensor(float)":
            problems.append(f"inputs {[(i.name, i.type) for i in inputs]} (expects one float32 image)")
        elif _static_dims(inputs[0].shape) not in (io.input_shape, (None, 3, io.image_size, io.image_size)):
            problems.append(f"input shape {inputs[0].shape} (contract: {list(io.input_shape)})")
        names = [o.name for o in outputs]
        if io.output_name not in names:
            problems.append(f"outputs {names} (expects {io.output_name!r})")
        else:
            out = outputs[names.index(io.output_name)]
            dims = _static_dims(out.shape)
            if out.type != "tensor(float)" or any(d is not None and d != e for d, e in zip(dims, io.output_shape)) \
                    or len(dims) != 3:
                problems.append(f"output {out.name} {out.type} {out.shape} (contract: float32 {list(io.output_shape)})")
        if problems:
            raise ContractError(f"{self.name}: the graph does not match its walkcut contract: "
                                f"{'; '.join(problems)}; {_REEXPORT}")
        self.backend.output_name = io.output_name

    def transition(self, image_rgb: np.ndarray) -> Transition:
        """Random walk over the R x R patch grid of ``image_rgb`` ((H, W, 3) uint8 RGB)."""
        t0 = time.perf_counter()
        x = preprocess(image_rgb, self.contract)  # (1, 3, S, S)
        t1 = time.perf_counter()
        out = self.backend.run(x)
        P = validate_attention(out, self.contract, name=self.name)
        t2 = time.perf_counter()
        self._local.timings = {"preprocess": t1 - t0, "engine": t2 - t1}
        return Transition(P=P, grid_shape=self.grid_shape, stationary=None, cell_colors=None)

    def describe(self) -> dict:
        return {"model": self.name, "image_size": self.contract.image_size, "attn_res": self.contract.attn_res,
                "precision": self.contract.precision, "model_hash": self.contract.model_hash,
                **self.backend.describe()}


@dataclass(frozen=True)
class EngineSpec:
    """How to open an :class:`EngineSource`: picklable, so it travels to worker processes and Ray
    actors, where :meth:`open` starts the backend (a started backend itself cannot be pickled).

    Parameters
    ----------
    model : str or path
        The exported model: ``.onnx``, or a TensorRT ``.engine`` with its ``.json`` beside it.
    backend : str, default "auto"
        One of :data:`~walkcut.runtime.sources.backends.BACKENDS`.
    threads : int, optional
        Inference threads of a CPU backend (default: ``WALKCUT_THREADS``, else the library's choice).

    Notes
    -----
    :attr:`contract` reads the model's metadata only (not its weights), so a spec refuses a model
    this runtime cannot run, and tells its :attr:`cut_defaults`, before any backend starts.
    """

    model: str
    backend: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, (str, os.PathLike)) or not os.fspath(self.model):
            raise TypeError(f"model must be the path of an exported model (.onnx or .engine), got {self.model!r}")
        object.__setattr__(self, "model", os.fspath(self.model))  # a str: equal specs hash alike
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ValueError(f"threads must be an integer >= 1 or None, got {self.threads!r}")

    @cached_property
    def contract(self) -> ModelContract:
        """The model's contract, checked (:class:`ContractError` naming the fix); read once."""
        contract = read_contract(self.model)
        check_contract(contract, source=self.model)
        return contract

    @property
    def cut_defaults(self) -> Mapping:
        """The model's own cut settings (see :attr:`EngineSource.cut_defaults`)."""
        return MappingProxyType(dict(self.contract.cut_defaults))

    def open(self) -> EngineSource:
        """Start the backend here and return the source (the model is loaded now)."""
        return EngineSource.from_path(self.model, backend=self.backend, threads=self.threads)
