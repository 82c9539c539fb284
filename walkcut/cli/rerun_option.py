"""``--rerun [FILE.rrd | ADDR]`` for the commands that segment (``segment``, ``video``): the option,
its checks before any work (usage errors), and the recording it opens
(:class:`walkcut.runtime.rerun_log.RerunLog`)."""

from __future__ import annotations

import argparse
import contextlib

from walkcut.cli.errors import UsageError

#: ``--rerun`` given without a value: the local viewer's address (mirrors rerun_log.DEFAULT_ADDRESS,
#: not imported here: fast --help).
LOCAL_VIEWER = "rerun+http://127.0.0.1:9876/proxy"


def rerun_target(text: str):
    """``type=`` for ``--rerun``: a :class:`~walkcut.runtime.rerun_log.RerunTarget`."""
    from walkcut.runtime.rerun_log import RerunTarget

    try:
        return RerunTarget.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (a bare --rerun before an input takes the input as its "
                                         f"value: put --rerun after the inputs)") from None


def add_rerun_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rerun", nargs="?", const="", type=rerun_target, default=None, metavar="FILE.rrd|ADDR",
                   help="also log each picture, its segment ids (a segmentation image, one colour per id) and "
                        "the stage timings to Rerun: a new FILE.rrd (replaced only with --overwrite), or a "
                        f"viewer's address, HOST:PORT or rerun+http://HOST:PORT/proxy (alone: {LOCAL_VIEWER}); "
                        'needs pip install "walkcut[rerun]"')


def check_rerun(args: argparse.Namespace, *, inputs=()) -> None:
    """Usage errors before any work: rerun-sdk missing, a recording that would replace an input or
    an existing file without --overwrite (the output policy, :mod:`walkcut.outputs`), a missing
    folder, or no viewer at the address."""
    target = getattr(args, "rerun", None)
    if target is None:
        return
    from walkcut.outputs import OutputError, check_output
    from walkcut.runtime.rerun_log import RerunUnavailable, import_rerun

    overwrite = getattr(args, "overwrite", False)
    try:
        import_rerun()
        if target.path is not None:
            check_output(target.path, overwrite=overwrite, flag="--rerun", inputs=inputs)
        target.check(overwrite=overwrite)
    except OutputError as exc:
        raise UsageError(str(exc)) from None
    except (RerunUnavailable, OSError) as exc:
        raise UsageError(f"--rerun: {exc}") from None


def rerun_log(args: argparse.Namespace, **options):
    """A context manager giving the opened :class:`~walkcut.runtime.rerun_log.RerunLog` (``options``:
    its keywords), or None without ``--rerun``."""
    target = getattr(args, "rerun", None)
    if target is None:
        return contextlib.nullcontext(None)
    from walkcut.runtime.rerun_log import RerunLog

    return RerunLog(target, overwrite=getattr(args, "overwrite", False), **options)
