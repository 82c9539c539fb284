"""The Ray pipeline of ``walkcut batch``.

Pixel source (no model)::

    blocks of jobs -> segment_block (Ray tasks)               CPU tasks, one BLAS thread each

Plain Ray tasks, not Ray Data: the driver keeps a few more blocks in flight than Ray has CPUs and
hands each finished block's rows to the manifest; blocks shrink as the queue empties, so that no core
finishes long before the others. Ray Data's streaming executor cost the driver ~40 ms of CPU per image
on this single stage (a third of a core of a 2-core machine that the cuts needed;
bench/RESULTS_batch.md, "Speed v3").

A local Ray that the command starts gets one CPU less than it is given, and the driver cuts on that
one, one image at a time from the head of the same queue, with the same code (:class:`DriverHead`):
from the first second, while Ray's daemons and workers start (seconds, with a core idle otherwise), to
the end, one Ray worker fewer to start (bench/RESULTS_batch.md, "Speed v3, part 2"). With one CPU
the driver cuts only until the first Ray block comes back. A cluster joined with ``--ray-address``
does all the work. Engine source on CPU (``ort-cpu``, no ``--actors``): the same single stage, the
model loaded once per worker process, all of it on Ray. Engine source on GPU (or with ``--actors``),
a Ray Data pipeline::

    from_items(jobs) -> map(read + shrink + preprocess)       CPU tasks
                     -> map_batches(AttentionActor)           actor pool, model loaded once per actor,
                                                              num_gpus per actor
                     -> map(check + cuts + upsample + write)  CPU tasks, one BLAS thread each

Every stage runs the functions of :mod:`walkcut.batch.work`, so outputs equal ``walkcut segment``'s
byte for byte. Ray retries a task whose worker died (``max_retries``) and restarts a dead actor
(``max_restarts``); a bad image is a manifest row, never a failed task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import queue as queues
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from walkcut.batch.manifest import PARTS_DIR, ManifestWriter, is_manifest
from walkcut.batch.work import (
    FAULT_ENV,
    LABELS_SUFFIX,
    OVERLAY_SUFFIX,
    Job,
    empty_row,
    error_message,
    maybe_fault,
    EngineOutput,
    job_outputs,
    one_thread,
    open_source,
    prepare_engine_input,
    safe_text,
    segment_block,
    segment_image,
    segment_rows,
)
from walkcut.inputs import InputImage
from walkcut.outputs import DONE, NEW, OutputError, make_record, options_record, refuse_inputs_as_outputs, resume_refusal, resume_state, shown
from walkcut.runtime.defaults import MAX_SOURCE_SIDE
from walkcut.runtime.sources.engine import EngineSpec
from walkcut.runtime.sources.pixels import PixelSource
from walkcut.runtime.sources.spec import SourceSpec

logger = logging.getLogger(__name__)

#: Backends that need a GPU: their actors ask Ray for ``num_gpus``.
GPU_BACKENDS = ("ort-cuda", "ort-trt", "trt")


@dataclass(frozen=True)
class BatchConfig:
    """What ``walkcut batch`` does; the command line fills it, :func:`run_batch` reads it.

    ``source`` is the spec of the source (:func:`walkcut.runtime.sources.source_spec`): a
    :class:`~walkcut.runtime.sources.pixels.PixelSource` or an
    :class:`~walkcut.runtime.sources.engine.EngineSpec`, pickled to every task and opened there
    (once per worker process). ``options`` are :meth:`Segmenter.segment`'s keyword arguments; those
    left out take the source's own settings (a model's ``cut_defaults``), else the package
    defaults. ``actors`` None: an actor pool only for GPU backends (one actor per GPU in the
    cluster); a number forces a pool of that size. ``cpus_per_task`` is what Ray reserves per CPU
    task (one BLAS thread runs in it).
    """

    out: Path
    options: dict
    source: SourceSpec = field(default_factory=PixelSource)
    overlay: bool = True
    overwrite: bool = False
    manifest: Path | None = None
    ray_address: str | None = None
    num_cpus: int | None = None
    actors: int | None = None
    batch_size: int = 8
    cpus_per_task: float = 1.0
    cpus_per_actor: float = 1.0
    gpus_per_actor: float | None = None
    images_per_block: int | None = None
    max_retries: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.source, SourceSpec):
            raise TypeError(f"source must be a source spec (PixelSource or EngineSpec, see "
                            f"walkcut.runtime.sources.source_spec), got {type(self.source).__name__}")
        for name in ("batch_size", "max_retries"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (1 if name == "batch_size" else 0):
                raise ValueError(f"{name} must be an integer >= {1 if name == 'batch_size' else 0}, got {value!r}")
        for name in ("actors", "num_cpus", "images_per_block"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("cpus_per_task", "cpus_per_actor", "gpus_per_actor"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")

    @property
    def engine(self) -> EngineSpec | None:
        """The engine spec, or None for the pixel source."""
        return self.source if isinstance(self.source, EngineSpec) else None

    @property
    def manifest_path(self) -> Path:
        return self.manifest if self.manifest is not None else self.out / "manifest.parquet"


@dataclass
class BatchSummary:
    """What a run did: counts, seconds, the manifest rows, and how Ray was reached."""

    total: int = 0
    to_do: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    ray: str = ""
    rows: list[dict] = field(default_factory=list)
    manifest: Path | None = None


def make_jobs(images: list[InputImage], out: Path, *, overlay: bool = True, settings: dict | None = None) -> list[Job]:
    """Jobs named exactly as ``walkcut segment`` names its outputs (:meth:`InputImage.output`), each
    with the record its outputs carry (``settings``: :func:`walkcut.outputs.options_record`).

    Raises :class:`~walkcut.outputs.OutputError` when two jobs would write one file (two tasks must
    never race on it), or an output is an input.
    """
    jobs = []
    for im in images:
        outs = [im.output(out, LABELS_SUFFIX)] + ([im.output(out, OVERLAY_SUFFIX)] if overlay else [])
        record = json.dumps(make_record(im.path, settings or {}, outs), sort_keys=True)
        jobs.append(Job(input=str(im.path), labels=str(outs[0]), overlay=str(outs[1]) if overlay else None,
                        record=record))
    seen: dict[str, str] = {}
    for job in jobs:
        for o in job_outputs(job):
            key = os.path.normcase(os.path.abspath(o))
            if key in seen:
                raise OutputError(f"{shown(seen[key])} and {shown(job.input)} would both write {shown(o)}; rename one of them")
            seen[key] = job.input
    refuse_inputs_as_outputs([im.path for im in images], [o for job in jobs for o in job_outputs(job)])
    return jobs


def remove_stale_temporaries(out: Path) -> int:
    """Remove temporary files left by writers that were killed mid-write; returns how many.

    ``atomic_write_bytes`` writes ``.<name>.<random>.part`` beside its target and renames it; a
    worker killed by SIGKILL cannot clean up, so each run starts (and a local run ends) by sweeping.
    """
    removed = 0
    if not out.is_dir():
        return 0
    for folder, _, files in os.walk(out):
        for name in files:
            if name.startswith(".") and name.endswith(".part") and (
                    f"{LABELS_SUFFIX}." in name or f"{OVERLAY_SUFFIX}." in name or ".parquet." in name):
                Path(folder, name).unlink(missing_ok=True)
                removed += 1
    return removed


#: Environment of the local Ray the command starts (a variable the user set wins). Ray starts its
#: workers at niceness 15, below every ordinary process: on a machine that runs anything else (or a
#: driver that cuts at niceness 0) they got a sliver of the cores (bench/RESULTS_batch.md, "Speed v3,
#: part 2"). A batch run is the user's foreground job; its workers run at the driver's priority.
WORKER_NICENESS = {"RAY_worker_niceness": "0"}


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """Set the variables of ``values`` that are not set yet, for the processes started meanwhile."""
    added = [k for k in values if k not in os.environ]
    os.environ.update({k: values[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def local_cpus(num_cpus: int | None) -> int:
    """CPUs of a local Ray started for ``--num-cpus`` (default: every core)."""
    return num_cpus or os.cpu_count() or 1


def driver_cuts_beside_ray(cpus: int) -> bool:
    """Whether the driver of a local Ray of ``cpus`` CPUs cuts images all along on one of them (the
    Ray then gets ``cpus - 1``); with one CPU it cuts only while Ray starts."""
    return cpus >= 2


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None, *, driver_cuts: bool = False):
    """Start a local Ray (no ``address``) or join a cluster.

    Yields a line saying which, and whether the Ray is local and ours (its workers are gone at exit).
    ``driver_cuts``: the driver cuts images on one of the ``num_cpus`` (default: the cores) itself,
    when :func:`driver_cuts_beside_ray`, so the local Ray gets one CPU less.

    A Ray already started by this process (tests, notebooks) is used as it is and left running.
    """
    import ray

    if ray.is_initialized():
        res = ray.cluster_resources()
        yield f"using the Ray already started in this process ({_resources_text(res)})", False
        return
    # Ray's own INFO/WARNING lines ("Started a local Ray instance", token notes) only with -v: the
    # command prints what Ray it started in its own line.
    level = logging.INFO if logging.getLogger().isEnabledFor(logging.INFO) else logging.ERROR
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=level)
        text = f"joined the Ray cluster at {address} ({_resources_text(ray.cluster_resources())})"
    else:
        cpus = local_cpus(num_cpus)
        beside = driver_cuts and driver_cuts_beside_ray(cpus)
        # address="local": always a new Ray of our own; without it ray.init joins a Ray that another
        # process on this machine started, and then refuses num_cpus.
        with _environ(WORKER_NICENESS):
            ray.init(address="local", num_cpus=cpus - beside, include_dashboard=False, log_to_driver=False,
                     logging_level=level)
        share = f": {cpus - 1} for its workers, 1 for this driver's own cuts" if beside else ""
        text = f"started a local Ray with {cpus} CPUs{share} (stopped at the end; --ray-address joins a cluster)"
    try:
        yield text, address is None
    finally:
        if address is None:
            _stop_autoscaler_monitor()
        ray.shutdown()


def _stop_autoscaler_monitor() -> None:
    """Kill the autoscaler monitor of the local Ray this process started, before ``ray.shutdown``.

    The shutdown stops the raylet and the GCS first; the monitor, told to stop after them, spends its
    one-second grace trying to report to the dead GCS and is then killed: a second at the end of every
    run (1.35 s for the whole shutdown; 0.35 s with the monitor gone first). A local Ray has nothing
    to scale, so the monitor has nothing to save. Uses Ray's node handle, which is not public API: if
    another Ray version moved it, the shutdown just takes its second."""
    try:
        from ray._private import ray_constants, worker

        worker._global_node._kill_process_type(ray_constants.PROCESS_TYPE_MONITOR, allow_graceful=False,
                                               check_alive=False)
    except Exception as exc:  # noqa: BLE001 (an optimisation only)
        logger.debug("could not stop Ray's autoscaler monitor first: %s", exc)


def _resources_text(res: dict) -> str:
    gpus = res.get("GPU", 0)
    return f"{res.get('CPU', 0):g} CPUs" + (f", {gpus:g} GPUs" if gpus else "")


# -- the stages (module-level so Ray pickles them by reference) ---------------------------------

def _job(row: dict) -> Job:
    return Job.from_text(row["job"])


def prepare_row(row: dict, *, engine: EngineSpec, max_source_side: int) -> dict:
    """CPU stage before the actor: read, shrink and preprocess (errors ride along to the end)."""
    contract = engine.contract
    out = {"key": row["key"], "job": row["job"], "error": "", "seconds_decode": 0.0, "seconds_preprocess": 0.0}
    try:
        with one_thread():
            x, t = prepare_engine_input(_job(row), contract, max_source_side=max_source_side)
        out.update(seconds_decode=t["decode"], seconds_preprocess=t["preprocess"])
    except Exception as exc:  # noqa: BLE001 (the row carries it to the manifest)
        x = np.zeros(contract.io.input_shape, np.float32)  # keeps the column's shape; never run
        out["error"] = safe_text(error_message(_job(row).input, exc))
    out["x"] = x
    return out


class AttentionActor:
    """Holds one engine (loaded once, from ``engine.open()``) and runs it on batches of preprocessed images."""

    def __init__(self, engine: EngineSpec) -> None:
        self.source = open_source(engine)
        self.n = self.source.contract.io.n_nodes

    def __call__(self, batch: dict) -> dict:
        xs = batch.pop("x")  # (B, 1, 3, S, S)
        raws, seconds = [], []
        for x, error in zip(xs, batch["error"]):
            t0 = time.perf_counter()
            if error:
                raws.append(np.zeros((1, self.n, self.n), np.float32))
            else:
                # A copy: some backends hand out a view of a buffer reused by the next run.
                raws.append(np.array(self.source.backend.run(np.ascontiguousarray(x)), dtype=np.float32))
            seconds.append(time.perf_counter() - t0)
        batch["raw"] = np.stack(raws)  # (B, 1, n, n)
        batch["seconds_engine"] = np.asarray(seconds)
        return batch


def cut_row(row: dict, *, engine: EngineSpec, options: dict, fault: str | None) -> dict:
    """CPU stage after the actor: check the engine output, cut, upsample, write."""
    job = _job(row)
    if row["error"]:
        return {**empty_row(job, status="error", error=row["error"]), "key": row["key"]}
    maybe_fault(job, fault)
    timings = {"preprocess": float(row["seconds_preprocess"]), "engine": float(row["seconds_engine"])}
    given = EngineOutput(raw=np.asarray(row["raw"]), contract=engine.contract, name=engine.model, timings=timings)
    with one_thread():
        result = segment_image(job, None, options, given=given)
    if result["status"] == "ok":  # the image was read twice; report the read before the engine
        result["seconds_decode"] = float(row["seconds_decode"])
    return {**result, "key": row["key"]}


# -- the driver ---------------------------------------------------------------------------------

def _use_actors(cfg: BatchConfig, resources: dict) -> bool:
    if cfg.engine is None:
        return False
    if cfg.actors is not None or cfg.engine.backend in GPU_BACKENDS:
        return True
    return cfg.engine.backend == "auto" and resources.get("GPU", 0) > 0


def _images_per_block(cfg: BatchConfig, n_jobs: int, cpus: int) -> int:
    # Small blocks keep every core busy to the end (a block is one task); large runs get larger
    # blocks so that the driver does not schedule millions of tasks.
    return cfg.images_per_block or max(1, min(32, n_jobs // (16 * cpus)))


def block_size(largest: int, remaining: int, slots: int) -> int:
    """Images in the next block of plain Ray tasks: ``largest`` while many remain, then a quarter of
    each slot's share of what remains, down to one image, so that the cores that cut (``slots``: Ray's
    task slots, and the driver when it cuts) finish within about one image of each other."""
    return max(1, min(largest, math.ceil(remaining / (4 * max(1, slots)))))


def _row(key: int, job: Job) -> dict:
    return {"key": key, "job": job.to_text()}  # ASCII: any file name travels


def stream_rows(jobs: deque, cfg: BatchConfig, *, resources: dict, fault: str | None,
                head: DriverHead | None = None) -> Iterator[dict]:
    """Segment the jobs taken from ``jobs`` on the Ray this process is connected to; yields one manifest
    row per job, in the order they finish: plain Ray tasks for the single-stage pipelines (which take
    jobs from the queue as they go, so that a started :class:`DriverHead` shares it; its rows come out
    here too), else the Ray Dataset of :func:`build_dataset`."""
    if _use_actors(cfg, resources):
        yield from build_dataset([job for _, job in jobs], cfg, resources=resources, fault=fault).iter_rows()
    else:
        yield from _task_rows(jobs, cfg, resources=resources, fault=fault, head=head)


def _take(jobs: deque, count: int) -> list[dict]:
    block = []
    while len(block) < count:
        try:
            block.append(_row(*jobs.popleft()))  # atomic: a DriverHead takes from the same queue
        except IndexError:
            break
    return block


def _task_rows(jobs: deque, cfg: BatchConfig, *, resources: dict, fault: str | None,
               head: DriverHead | None) -> Iterator[dict]:
    import ray

    cpus = max(1, int(resources.get("CPU", 1)))
    tasks = cpus if cfg.cpus_per_task <= 0 else max(1, int(cpus // cfg.cpus_per_task))  # at once
    largest = _images_per_block(cfg, len(jobs), cpus)
    slots = tasks + int(head is not None and head.to_the_end)
    # In a CPU task the engine gets one inference thread: Ray runs one task per core.
    source = cfg.source if cfg.engine is None else dataclasses.replace(cfg.engine, threads=1)
    task = ray.remote(segment_block).options(num_cpus=cfg.cpus_per_task, max_retries=cfg.max_retries)
    source_ref = ray.put(source)  # pickled once, not once per block
    # One queued block for every one or two running ones, so that no worker waits for this process
    # (whose main thread shares the GIL with a DriverHead), and no more: the queue's tail stays shared.
    in_flight = tasks + max(1, tasks // 2)
    # No ray.cancel of the blocks in flight on an interrupt: a cancelled task whose reply is already on
    # its way aborts the driver inside Ray 2.x's task manager ("Tried to complete task that was not
    # pending"), 1 run in 2 here. Ray ends a driver's tasks when the driver disconnects (ray.shutdown).
    pending: list = []
    while True:
        while len(pending) < in_flight:
            block = _take(jobs, cfg.images_per_block or block_size(largest, len(jobs), slots))
            if not block:
                break
            pending.append(task.remote(block, source=source_ref, options=cfg.options, fault=fault))
        if head is not None:
            yield from head.take_rows()
        if not pending:
            if head is None or not head.is_alive():
                break
            head.join(0.25)  # the queue is empty: the driver's last image
            continue
        # While the driver cuts, its rows go to the manifest at least every second.
        done, pending = ray.wait(pending, num_returns=1, timeout=1.0 if head is not None and head.is_alive() else None)
        if done and head is not None and not head.to_the_end:
            head.stop()  # Ray runs: the driver's CPU is Ray's now
        for ref in done:
            yield from ray.get(ref)
    if head is not None:
        yield from head.finish()


class DriverHead(threading.Thread):
    """Segments jobs in the driver process, one at a time from the head of the queue it shares with
    the Ray tasks: ``to_the_end``, until the queue is empty (the local Ray has one CPU less, this
    one); else until :meth:`stop`, which comes when the first Ray block does. Either way it starts
    before ``ray.init``, whose daemons and workers take seconds (3-15 s on a 2-core VM) during which
    a core would sit idle. Runs :func:`~walkcut.batch.work.segment_rows`, as the tasks do, so the
    outputs are the tasks' to the byte; its rows come out of :meth:`take_rows` as they are done."""

    def __init__(self, jobs: deque, source: SourceSpec, options: dict, *, to_the_end: bool) -> None:
        super().__init__(name="walkcut-batch-driver-head", daemon=True)
        self.jobs, self.source, self.options, self.to_the_end = jobs, source, options, to_the_end
        self.count = 0  # images done
        self.error: BaseException | None = None
        self._rows: queues.SimpleQueue = queues.SimpleQueue()
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            with one_thread():  # for the whole run: each entry re-scans the loaded libraries (~2 ms)
                while not self._stop_event.is_set():
                    block = _take(self.jobs, 1)
                    if not block:
                        return
                    for row in segment_rows(block, source=self.source, options=self.options, fault=None):
                        self._rows.put(row)
                    self.count += 1
        except BaseException as exc:  # noqa: BLE001 (re-raised by the driver in finish)
            self.error = exc

    def stop(self) -> None:
        """Take no further image (the one in hand is finished)."""
        self._stop_event.set()

    def take_rows(self) -> list[dict]:
        """The rows done since the last call."""
        rows = []
        while True:
            try:
                rows.append(self._rows.get_nowait())
            except queues.Empty:
                return rows

    def finish(self) -> list[dict]:
        """Stop, wait for the image in hand, and return the rows not taken yet (raises what the
        thread raised)."""
        self.stop()
        self.join()
        if self.error is not None:
            raise self.error
        return self.take_rows()


def build_dataset(jobs: list[Job], cfg: BatchConfig, *, resources: dict, fault: str | None):
    """The lazy Ray Dataset of the engine pipeline with an actor pool (:func:`stream_rows` uses it
    when a GPU backend or ``--actors`` asks for the pool); yields one manifest row per job."""
    if not _use_actors(cfg, resources):
        raise ValueError("build_dataset builds the actor-pool pipeline; the single-stage pipelines run as "
                         "plain Ray tasks (stream_rows)")
    with warnings.catch_warnings():
        # Ray 2.60 deprecates retry counts passed as remote args but has no named parameter for them.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated", category=DeprecationWarning)
        return _build_dataset(jobs, cfg, resources=resources, fault=fault)


def _build_dataset(jobs: list[Job], cfg: BatchConfig, *, resources: dict, fault: str | None):
    import ray

    cpus = max(1, int(resources.get("CPU", 1)))
    per_block = _images_per_block(cfg, len(jobs), cpus)
    items = [_row(i, j) for i, j in enumerate(jobs)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / per_block)))
    task_args = {"num_cpus": cfg.cpus_per_task, "max_retries": cfg.max_retries}
    engine = cfg.engine
    gpu = engine.backend in GPU_BACKENDS or (engine.backend == "auto" and resources.get("GPU", 0) > 0)
    gpus_per_actor = cfg.gpus_per_actor if cfg.gpus_per_actor is not None else (1.0 if gpu else 0.0)
    if cfg.actors is not None:
        actors = cfg.actors
    elif gpu and gpus_per_actor > 0:
        actors = max(1, int(resources.get("GPU", 0) // gpus_per_actor))  # one actor per GPU by default
    else:
        actors = 1
    ds = ds.map(prepare_row, fn_kwargs={"engine": engine, "max_source_side": MAX_SOURCE_SIDE}, **task_args)
    threads = max(1, int(cfg.cpus_per_actor)) if not gpu else None
    ds = ds.map_batches(AttentionActor,
                        fn_constructor_kwargs={"engine": dataclasses.replace(engine, threads=threads)},
                        batch_size=cfg.batch_size, batch_format="numpy", concurrency=actors,
                        num_cpus=cfg.cpus_per_actor, num_gpus=gpus_per_actor,
                        max_restarts=cfg.max_retries, max_task_retries=cfg.max_retries)
    return ds.map(cut_row, fn_kwargs={"engine": engine, "options": cfg.options, "fault": fault}, **task_args)


def check_manifest(path: Path, *, overwrite: bool, inputs) -> None:
    """The manifest is never an input, and a file there that is not a walkcut manifest is replaced
    only with ``overwrite`` (:class:`~walkcut.outputs.OutputError` otherwise)."""
    refuse_inputs_as_outputs(inputs, [path])
    if path.is_dir():
        raise OutputError(f"--manifest {path} is a folder; give a file name")
    if path.exists() and not overwrite and not is_manifest(path):
        raise OutputError(f"{shown(path)} already exists and is not a walkcut manifest; add --overwrite to replace it, "
                          f"or choose another --manifest")


def plan_resume(jobs: list[Job], *, overwrite: bool) -> tuple[list[Job], list[Job]]:
    """``(to_do, done)``: a job is done when its outputs say they were made from its input with the
    same settings (:func:`walkcut.outputs.resume_state`). Outputs that are neither missing nor done
    (other settings, another input, a half pair, a file walkcut did not write) stop the run with
    :class:`~walkcut.outputs.OutputError` unless ``overwrite`` (which redoes every job)."""
    if overwrite:
        return list(jobs), []
    to_do, done = [], []
    for job in jobs:
        record = json.loads(job.record)
        state, where = resume_state(job_outputs(job), record)
        if state == DONE:
            done.append(job)
        elif state == NEW:
            to_do.append(job)
        else:
            raise resume_refusal(state, where, record, resume_flag="resume")
    return to_do, done


def identity_columns(job: Job) -> dict:
    """The manifest columns resume checks: the input's size and time when planned, the settings."""
    record = json.loads(job.record) if job.record else {}
    ident = record.get("input") or {}
    return {"input_size": ident.get("size"), "input_mtime_ns": ident.get("mtime_ns"),
            "settings": json.dumps(record.get("settings"), sort_keys=True) if record else None}


def carried_row(job: Job, earlier: dict | None) -> dict:
    """The manifest row of a job done by an earlier run: its own row when one was kept (manifest,
    part file or journal) for this input and settings; else one rebuilt from the label map (status
    ``ok``, timings unknown)."""
    ident = identity_columns(job)
    if earlier is not None and earlier.get("status") == "ok" and all(
            earlier.get(k) is None or earlier.get(k) == v for k, v in ident.items()):
        return {**earlier, **ident}
    row = {**empty_row(job, status="ok"), **ident}
    try:
        labels = cv2.imdecode(np.fromfile(job.labels, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except OSError:
        labels = None
    if labels is not None:
        row.update(segments=int(labels.max()) + 1, height=int(labels.shape[0]), width=int(labels.shape[1]))
    return row


def run_batch(images: list[InputImage], cfg: BatchConfig, *,
              on_start: Callable[[str, int, int], None] | None = None,
              on_row: Callable[[dict], None] | None = None) -> BatchSummary:
    """Segment ``images`` on Ray, write outputs and the manifest; resume from complete outputs.

    Parameters
    ----------
    images : list of InputImage
        From :func:`walkcut.inputs.collect_images` or
        :func:`walkcut.batch.inputs.collect_batch_inputs` (names decide the output paths).
    cfg : BatchConfig
    on_start : callable(ray_text, to_do, skipped), optional
        Called once Ray is up and the work is planned (the command line prints it).
    on_row : callable(row), optional
        Called for each manifest row as it arrives.

    Returns
    -------
    BatchSummary
        Raises ``KeyboardInterrupt`` unchanged after saving the rows received so far.
    """
    if cfg.engine is not None:
        _ = cfg.engine.contract  # read and checked here: a ContractError comes before Ray starts
    check_manifest(cfg.manifest_path, overwrite=cfg.overwrite, inputs=[im.path for im in images])
    jobs = make_jobs(images, cfg.out, overlay=cfg.overlay, settings=options_record(cfg.source, cfg.options))
    to_do, done = plan_resume(jobs, overwrite=cfg.overwrite)  # refusals come before any folder is made
    cfg.out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(cfg.out)
    writer = ManifestWriter(cfg.manifest_path, cfg.out / PARTS_DIR)
    earlier = writer.earlier_rows()
    carried = {safe_text(job.labels): carried_row(job, earlier.get(safe_text(job.labels))) for job in done}
    summary = BatchSummary(total=len(jobs), to_do=len(to_do), skipped=len(carried), manifest=cfg.manifest_path)
    fault = os.environ.get(FAULT_ENV) or None
    t0 = time.perf_counter()
    owned = False
    queue = deque(enumerate(to_do))  # (key, job): rows come back with their key
    head = None

    def add(row: dict, *, notify: bool = True) -> None:
        row = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        row = {**row, **identity_columns(to_do[row.pop("key")])}
        writer.add(row)
        if notify and on_row is not None:
            on_row(row)

    try:
        import ray

        # Only for a Ray this call starts: the fault hook kills the process that runs the image.
        driver_cuts = bool(queue) and cfg.ray_address is None and cfg.engine is None and not fault \
            and not ray.is_initialized()
        if driver_cuts:
            head = DriverHead(queue, cfg.source, cfg.options,
                              to_the_end=driver_cuts_beside_ray(local_cpus(cfg.num_cpus)))
            head.start()
        with ray_session(cfg.ray_address, cfg.num_cpus, driver_cuts=driver_cuts) as (ray_text, owned):
            summary.ray = ray_text
            if on_start is not None:
                on_start(ray_text, len(to_do), len(carried))
            for row in stream_rows(queue, cfg, resources=ray.cluster_resources(), fault=fault, head=head):
                add(row)
            if head is not None:
                logger.info("the driver segmented %d of %d images %s", head.count, len(to_do),
                            "beside its Ray" if head.to_the_end else "while Ray started")
                head = None
    except BaseException:
        if head is not None:
            head.stop()
            head.join()
            for row in head.take_rows():
                add(row, notify=False)  # recorded only: the run is ending on the first error
        writer.flush()  # what was done stays known to the next run
        raise
    finally:
        if owned:
            remove_stale_temporaries(cfg.out)  # our local workers are gone: sweep what they left
    summary.rows = writer.finish([safe_text(j.labels) for j in jobs], carried)
    summary.seconds = time.perf_counter() - t0
    summary.ok = sum(r["status"] == "ok" for r in writer.rows)
    summary.failed = sum(r["status"] == "error" for r in writer.rows)
    return summary
