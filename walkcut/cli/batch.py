"""``walkcut batch INPUT... --out DIR``: segment an image set on Ray Data, with a Parquet manifest.

Parse, call :func:`walkcut.batch.run_batch`, print. The source and cut options are those of
``walkcut segment`` (``--preset``, ``--contour-scale``, ``--grid``, ``--engine``, ``--backend`` and
the cut flags, through the same :func:`~walkcut.cli.args.source_spec` and
:func:`~walkcut.cli.args.cut_options`), so the same flags give the same labels. Ray is imported only
when the command runs, so the base install lists the command and says how to get Ray.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path

from walkcut.cli.errors import Terminated, is_disk_full, note, plural
from walkcut.cli.args import (
    add_cut_arguments,
    add_pixel_limit_argument,
    add_source_arguments,
    cut_options,
    non_negative_float,
    non_negative_int,
    output_dir,
    positive_int,
    source_spec,
)

RAY_MISSING = "walkcut batch needs Ray Data: pip install 'walkcut[ray]'"


def register(sub) -> None:
    p = sub.add_parser(
        "batch", help="segment many images on Ray (local or a cluster), with a Parquet manifest",
        description="Segment an image set on Ray Data: the same outputs as `walkcut segment`, a manifest "
                    "with one row per input, and resume: a rerun with the same --out does only what is missing.",
        epilog="Outputs are named as by `walkcut segment` (see `walkcut segment --help`), the --out folder is never "
               "read as input. Resume counts an image as done only when its outputs record that they were made "
               "from that file (path, size, modification time) with the same settings; outputs made with other "
               "settings, a half pair, or files walkcut did not write stop the run before any work (exit 2) "
               "unless --overwrite.")
    p.add_argument("images", nargs="+", metavar="INPUT",
                   help="image files, folders, glob patterns, or @LIST (a text file of paths, one a line)")
    p.add_argument("--from-file", action="append", default=[], metavar="LIST",
                   help="text file of inputs, one a line (repeatable; same as @LIST)")
    p.add_argument("--out", "-o", type=output_dir, required=True, help="output folder (created if missing)")
    p.add_argument("--relative-to", type=Path, default=None, metavar="ROOT",
                   help="name every output by its input's path below ROOT instead of below its argument or list "
                        "entry (see `walkcut segment --help`)")
    p.add_argument("--no-overlay", dest="overlay", action="store_false", help="write label maps only")
    p.add_argument("--overwrite", action="store_true",
                   help="redo every input, replacing existing outputs (and a --manifest file that is not a "
                        "walkcut manifest)")
    p.add_argument("--manifest", type=Path, default=None,
                   help="manifest path (default: OUT/manifest.parquet; an earlier walkcut manifest there is merged)")
    add_pixel_limit_argument(p)
    add_source_arguments(p)
    add_cut_arguments(p)
    r = p.add_argument_group("ray")
    r.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join a running cluster: auto, or ray://HOST:10001 (default: start a local Ray)")
    r.add_argument("--num-cpus", type=positive_int, default=None,
                   help="CPUs of the local Ray, the one the driver cuts on included (default: this machine's cores)")
    r.add_argument("--actors", type=positive_int, default=None,
                   help="engine actor pool size (default: one per GPU for GPU backends; ort-cpu runs the "
                        "engine inside the CPU tasks)")
    r.add_argument("--batch-size", type=positive_int, default=8, help="images per engine actor call (default: 8)")
    r.add_argument("--cpus-per-task", type=non_negative_float, default=1.0,
                   help="CPUs Ray reserves per cut task (default: 1)")
    r.add_argument("--cpus-per-actor", type=non_negative_float, default=1.0,
                   help="CPUs Ray reserves per engine actor (default: 1)")
    r.add_argument("--gpus-per-actor", type=non_negative_float, default=None,
                   help="GPUs per engine actor (default: 1 for GPU backends, else 0)")
    r.add_argument("--images-per-block", type=positive_int, default=None,
                   help="images per Ray task (default: from the input count and CPUs)")
    r.add_argument("--max-retries", type=non_negative_int, default=3, help="retries of a task whose worker died (default: 3)")
    p.set_defaults(func=run)


class _SigtermAsInterrupt:
    """SIGTERM ends the run as Ctrl-C does: the rows so far are saved, no partial file stays.

    Installed once Ray is up, because ``ray.init`` puts in its own SIGTERM handler (which exits
    at once); restored at the end.
    """

    def __init__(self) -> None:
        self.previous = None

    @staticmethod
    def _handler(signum, frame):
        raise Terminated()

    def install(self) -> None:
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            self.previous = signal.signal(signal.SIGTERM, self._handler)

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None


class _DiskFull(Exception):
    """A worker found the disk full: the run stops (every later image would fail the same way)."""


@contextlib.contextmanager
def quiet_ray(*, verbose: bool, data: bool = True):
    """Ray's and Ray Data's own log lines and progress bars stay off the terminal unless ``-v``:
    the command prints its own lines (what Ray started, errors, the summary). ``data``: the run may
    use Ray Data (an engine: its actor pipeline), whose bars are turned off; without it Ray Data is
    not imported at all (~0.9 s of CPU before ``ray.init``: it imports pandas and Ray's state API)."""
    if verbose:
        yield
        return
    import logging

    names = ("ray", "ray.data", "ray.train", "ray.tune")
    levels = {name: logging.getLogger(name).level for name in names}
    ctx = bars = None
    if data:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        bars = ctx.enable_progress_bars
        ctx.enable_progress_bars = False
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        if ctx is not None:
            ctx.enable_progress_bars = bars
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def run(args) -> int:
    try:
        import pyarrow  # noqa: F401
        import ray  # noqa: F401
    except ImportError:
        print(f"walkcut: error: {RAY_MISSING}", file=sys.stderr)
        return 2
    from walkcut.batch import BatchConfig, collect_batch_inputs, run_batch
    from walkcut.batch.work import DISK_FULL
    from walkcut.inputs import InputError
    from walkcut.outputs import OutputError
    from walkcut.runtime.sources.contract import ContractError

    if args.num_cpus is not None and args.ray_address is None:
        from walkcut.runtime.video.workers import available_cores

        cores = available_cores()
        if args.num_cpus > cores:  # a local Ray with more CPUs than cores runs more tasks than fit
            note(f"--num-cpus {args.num_cpus} is more than the {plural(cores, 'core')} here: using {cores}")
            args.num_cpus = cores
    try:
        images = collect_batch_inputs(args.images, args.from_file, exclude=[args.out], root=args.relative_to)
        spec = source_spec(args)
        options = cut_options(args, spec)  # reads an engine's contract: a ContractError stops here
        config = BatchConfig(
            out=args.out, options=options, source=spec, overlay=args.overlay, overwrite=args.overwrite,
            manifest=args.manifest, ray_address=args.ray_address, num_cpus=args.num_cpus, actors=args.actors,
            batch_size=args.batch_size, cpus_per_task=args.cpus_per_task, cpus_per_actor=args.cpus_per_actor,
            gpus_per_actor=args.gpus_per_actor, images_per_block=args.images_per_block,
            max_retries=args.max_retries)
    except (InputError, ValueError) as exc:  # ContractError included: the model cannot run
        print(f"walkcut: error: {exc}", file=sys.stderr)
        return 2

    sigterm = _SigtermAsInterrupt()

    def on_start(ray_text: str, to_do: int, skipped: int) -> None:
        sigterm.install()
        print(f"ray: {ray_text}", file=sys.stderr)
        print(f"{len(images)} inputs: {to_do} to do"
              + (f", {skipped} complete from an earlier run (skipped; --overwrite redoes them)" if skipped else ""),
              file=sys.stderr)

    counts = {"ok": 0, "to_do": len(images)}

    def on_row(row: dict) -> None:
        if row["status"] == "ok":
            counts["ok"] += 1
        elif row["error"].startswith(DISK_FULL):
            raise _DiskFull(row["error"])
        else:
            print(f"walkcut: error: {row['error']}", file=sys.stderr)

    try:
        with quiet_ray(verbose=args.verbose > 0 or args.debug, data=config.engine is not None):
            try:
                summary = run_batch(images, config, on_start=on_start, on_row=on_row)
            except SystemExit as exc:
                # SIGTERM while a local Ray starts: ray.init's own handler, in place until on_start
                # installs ours, exits with the signal's number (the driver cuts meanwhile, and what it
                # did is saved as for any interruption).
                if exc.code != signal.SIGTERM:
                    raise
                raise Terminated() from None
    except (ContractError, OutputError) as exc:
        print(f"walkcut: error: {exc}", file=sys.stderr)
        return 2
    except (_DiskFull, OSError) as exc:
        if not isinstance(exc, _DiskFull) and not is_disk_full(exc):
            raise
        # The manifest on the same full disk may fail to save as well: the count is still right.
        what = str(exc) if isinstance(exc, _DiskFull) else f"{DISK_FULL} writing {exc.filename or args.out}"
        print(f"walkcut: error: {what}: stopped after {counts['ok']} of {counts['to_do']} images (those are "
              f"complete); free space, then rerun the same command to finish", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        what = "interrupted by SIGTERM" if isinstance(exc, Terminated) else "interrupted"
        print(f"walkcut: {what} after {counts['ok']} of {counts['to_do']} images; outputs written so far are "
              f"complete; rerun the same command to finish (rows so far saved under {args.out})", file=sys.stderr)
        return 130
    finally:
        sigterm.restore()
    rate = summary.ok / summary.seconds if summary.seconds > 0 else 0.0
    print(f"segmented {summary.ok} of {summary.to_do} images in {summary.seconds:.1f} s ({rate:.2f} img/s) "
          f"-> {args.out}" + (f"; {summary.skipped} already complete" if summary.skipped else "")
          + (f"; {summary.failed} failed" if summary.failed else "") + f"; manifest {summary.manifest}")
    return 1 if summary.failed else 0
