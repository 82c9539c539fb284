"""The work done for one image, shared by every stage of ``walkcut batch``.

:func:`segment_image` is the whole job for one image (read, source, cuts, upsampling, atomic writes)
and returns a manifest row (:mod:`walkcut.batch.manifest`); it runs exactly the code ``walkcut segment``
runs, so both commands write the same bytes. The engine pipeline splits the same job in three so
that a GPU actor runs only the engine: :func:`prepare_engine_input` (CPU: read, shrink, preprocess),
the actor (``backend.run``), then :func:`segment_image` again with the engine output handed over in
``given`` (checked by :func:`~walkcut.runtime.sources.engine.validate_attention`, as
``EngineSource.transition`` checks it, and cut through a
:class:`~walkcut.runtime.sources.given.GivenSource` that carries the model's cut settings).
:func:`segment_block` is the Ray task of the single-stage pipelines (and what the driver runs beside
its Ray): it lives here so that a worker that unpickles it imports no more than this module.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from walkcut.outputs import png_with_record
from walkcut.runtime.draw import overlay
from walkcut.runtime.imageio import encode_png, read_image, write_all_or_none
from walkcut.runtime.segmenter import Segmenter, shrink_image
from walkcut.runtime.sources.contract import ModelContract
from walkcut.runtime.sources.engine import validate_attention
from walkcut.runtime.sources.given import GivenSource
from walkcut.runtime.sources.pixels import Transition
from walkcut.runtime.sources.preprocess import preprocess

#: Suffixes of the two outputs, as ``walkcut segment`` names them.
LABELS_SUFFIX = "_labels.png"
OVERLAY_SUFFIX = "_overlay.png"
#: Per-stage seconds recorded in every manifest row (NaN where a stage did not run).
STAGES = ("decode", "source", "preprocess", "engine", "cuts", "upsample", "write")
#: ``WALKCUT_BATCH_FAULT=NAME:MARKER`` (tests only): the first task that handles the input whose
#: output name is NAME creates the file MARKER and kills its own worker process, so the tests can
#: check that Ray retries a task whose worker died. Read by the driver and passed to the tasks.
FAULT_ENV = "WALKCUT_BATCH_FAULT"
#: How a manifest row's ``error`` starts when the disk (or the quota) was full.
DISK_FULL = "disk full"


@dataclass(frozen=True)
class Job:
    """One image to segment: its input path, where its outputs go (``overlay`` None: no overlay) and
    the record they carry (:func:`walkcut.outputs.make_record`, as JSON; empty: none)."""

    input: str
    labels: str
    overlay: str | None
    record: str = ""

    def to_text(self) -> str:
        """The job as ASCII JSON: paths that are not UTF-8 travel through Arrow (Ray blocks) intact."""
        return json.dumps([self.input, self.labels, self.overlay, self.record])

    @classmethod
    def from_text(cls, text: str) -> Job:
        return cls(*json.loads(text))


def safe_text(text: str) -> str:
    """``text`` as valid UTF-8: bytes of a file name that are not UTF-8 (``os.fsdecode`` keeps them as
    surrogates) are written ``\\xNN``, so a manifest column can hold every name."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True, eq=False)
class EngineOutput:
    """An engine's raw output for one image, computed elsewhere (an actor), to be cut here."""

    raw: np.ndarray  # (1, n, n) as the graph returned it
    contract: ModelContract  # the model's: fixes n and carries its cut settings
    name: str  # how errors name the model (its path)
    timings: dict  # seconds of the stages already run (preprocess, engine)


def empty_row(job: Job, *, status: str, error: str = "") -> dict:
    """A manifest row for ``job`` with no measurements (yet); names as :func:`safe_text`."""
    return {"input": safe_text(job.input), "labels": safe_text(job.labels), "overlay": safe_text(job.overlay or ""),
            "status": status, "error": safe_text(error), "segments": 0, "height": 0, "width": 0,
            **{f"seconds_{s}": float("nan") for s in STAGES}, "node": ""}


def error_message(path: str, exc: BaseException) -> str:
    """One line naming the file, as ``walkcut segment`` prints it."""
    text = str(exc)
    message = text if path in text else f"{path}: {text}"
    return message.splitlines()[0] if text else f"{path}: {type(exc).__name__}"


def job_outputs(job: Job) -> list[Path]:
    """The files ``job`` writes."""
    return [Path(job.labels)] + ([Path(job.overlay)] if job.overlay is not None else [])


def _with_record(png: bytes, job: Job) -> bytes:
    return png_with_record(png, json.loads(job.record)) if job.record else png


@contextlib.contextmanager
def one_thread():
    """One BLAS and one OpenCV thread: Ray runs one task per core, so threads inside would fight."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        cv2.setNumThreads(previous)


def maybe_fault(job: Job, fault: str | None) -> None:
    """Test hook (see :data:`FAULT_ENV`): kill this worker once, on the named input."""
    if not fault:
        return
    name, _, marker = fault.partition(":")
    if Path(job.labels).name == f"{name}{LABELS_SUFFIX}" and marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return  # the retry: run normally
        os.close(fd)
        os._exit(3)


def prepare_engine_input(job: Job, contract, *, max_source_side: int) -> tuple[np.ndarray, dict]:
    """Read ``job.input`` and turn it into the engine's input, as ``EngineSource.transition`` does.

    Returns the (1, 3, S, S) float32 input and the seconds of ``decode`` and ``preprocess``.
    Raises what :func:`~walkcut.runtime.imageio.read_image` raises for an unreadable image.
    """
    t0 = time.perf_counter()
    image = read_image(job.input)
    t1 = time.perf_counter()
    # Segmenter.set_image shrinks before its source sees the image; the same here, so the
    # engine gets the very array it gets under ``walkcut segment``.
    x = preprocess(shrink_image(image, max_source_side), contract)  # (1, 3, S, S)
    return x, {"decode": t1 - t0, "preprocess": time.perf_counter() - t1}


def segment_image(job: Job, source, options: dict, *, given: EngineOutput | None = None) -> dict:
    """Segment one image and write its outputs atomically; never raises for a bad image.

    Parameters
    ----------
    job : Job
        Input path and output paths (parent folders are created).
    source : object with ``transition(image_rgb)``, or None when ``given`` is set
        The pixel source, or an :class:`~walkcut.runtime.sources.engine.EngineSource` run in place.
    options : dict
        Keyword arguments of :meth:`Segmenter.segment` (mode, power, threshold, max_segments, min_size,
        upsample); those left out take the source's own settings, else the package defaults.
    given : EngineOutput, optional
        The raw engine output for this image, computed by an actor: it is checked and normalised by
        :func:`validate_attention` exactly as :meth:`EngineSource.transition` does, then cut here
        with the model's cut settings.

    Returns
    -------
    dict
        A manifest row: ``status`` "ok" or "error" (with ``error`` naming the file and the problem).
    """
    row = empty_row(job, status="ok")
    row["node"] = socket.gethostname()
    try:
        t0 = time.perf_counter()
        image = read_image(job.input)
        row["seconds_decode"] = time.perf_counter() - t0
        if given is not None:
            t1 = time.perf_counter()
            P = validate_attention(given.raw, given.contract, name=given.name)  # as EngineSource.transition
            timings = {**given.timings, "engine": given.timings.get("engine", 0.0) + time.perf_counter() - t1}
            R = given.contract.attn_res
            source = GivenSource(Transition(P=P, grid_shape=(R, R)), timings=timings,
                                 cut_defaults=given.contract.cut_defaults)
        segmenter = Segmenter(source)
        result = segmenter.set_image(image).segment(**options)
        if result.labels.max() > 65535:
            raise ValueError(f"{result.labels.max() + 1} segments do not fit a uint16 label map")
        t2 = time.perf_counter()
        labels16 = result.labels.astype(np.uint16)
        row.update(segments=result.n_segments, height=image.shape[0], width=image.shape[1])
        for stage, seconds in result.timings.items():
            row[f"seconds_{stage}"] = float(seconds)
        if given is not None:  # the source stage ran elsewhere: report its parts, not this no-op
            row["seconds_source"] = sum(given.timings.get(k, 0.0) for k in ("preprocess", "engine"))
        del result
        # Encode every picture before writing any: a failure leaves no partial output.
        pairs = [(Path(job.labels), _with_record(encode_png(labels16, rgb=False), job))]
        if job.overlay is not None:
            pairs.append((Path(job.overlay), _with_record(encode_png(overlay(image, labels16)), job)))
        write_all_or_none(pairs)
        row["seconds_write"] = time.perf_counter() - t2
    except Exception as exc:  # noqa: BLE001 (one bad image is a manifest row, not the end of the job)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # Marked, so that the driver stops the run: every later image would fail the same way.
            message = f"{DISK_FULL} writing {exc.filename or job.labels} ({exc.strerror})"
        else:
            message = error_message(job.input, exc)
        return {**empty_row(job, status="error", error=message), "node": row["node"]}
    return row


# -- the task of the single-stage pipelines (here, not in the pipeline module, so that a Ray worker
# unpickling it imports neither pyarrow nor the driver's code: ~0.2 s of each worker's start) --------

_OPENED: dict = {}  # per process: source spec -> opened source (an engine loads its model once)


def open_source(spec):
    """``spec.open()``, once per process and spec."""
    if spec not in _OPENED:
        _OPENED[spec] = spec.open()
    return _OPENED[spec]


def segment_block(rows: list[dict], *, source, options: dict, fault: str | None) -> list[dict]:
    """The whole job of each image of a block (rows ``{"key", "job"}``, the job as
    :meth:`Job.to_text`), with one BLAS and one OpenCV thread: the Ray task of the pixel source and
    the in-task engine. Returns one manifest row per job, with its ``key``."""
    with one_thread():  # once per block: each entry re-scans the loaded libraries (~2 ms)
        return segment_rows(rows, source=source, options=options, fault=fault)


def segment_rows(rows: list[dict], *, source, options: dict, fault: str | None) -> list[dict]:
    """:func:`segment_block` in the threads the caller set (the driver sets one for its whole run)."""
    out = []
    for row in rows:
        job = Job.from_text(row["job"])
        maybe_fault(job, fault)
        try:
            opened = open_source(source)
        except Exception as exc:  # noqa: BLE001 (a backend that cannot start: every row says why)
            out.append({**empty_row(job, status="error", error=error_message(job.input, exc)), "key": row["key"]})
            continue
        out.append({**segment_image(job, opened, options), "key": row["key"]})
    return out
