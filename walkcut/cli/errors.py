"""The command line's one error policy.

* Usage errors (a bad option value, an option that contradicts another, an output that cannot be
  written or that the output policy of :mod:`walkcut.outputs` refuses) are found while parsing, before any work and before any folder is created: one line
  ``walkcut: error: ...`` on stderr, exit code 2.
* A bad file in a batch: one line naming the file and the problem, the rest of the batch goes on,
  exit code 1 at the end.
* A problem that stops the whole command (a model this runtime cannot run, a video that does not
  open): one line, exit code 2 for problems with what the user asked for, 1 otherwise.
* Never a traceback, unless ``--debug`` (or ``-v``) asks for one; Ctrl-C and SIGTERM exit 130
  with the command's summary.
* A full disk (ENOSPC) stops a command at once: one line with the count done, exit code 1.

Library code raises exceptions that name the value and the fix; this module turns them into those
lines. Subcommands raise :class:`CommandError` for their own conditions instead of printing.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import signal
import sys
import threading
import traceback

#: Exit codes.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CommandError(Exception):
    """A condition that stops a command; ``str(exc)`` is the one line the user sees."""

    def __init__(self, message: str, *, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CommandError):
    """The arguments themselves are wrong (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=EXIT_USAGE)


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt so that a command stops as on Ctrl-C (summary, exit 130)."""


#: An OpenCV C++ error: ``OpenCV(4.x) /path/file.cpp:123: error: (-215:Assertion failed) COND in function 'F'``.
_OPENCV_ERROR = re.compile(r"error: \((-?\d+):([^)]*)\)\s*(.*?)\s*in function '([^']*)'", re.S)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) says the disk or the quota is full."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def first_line(exc: BaseException) -> str:
    """One line for an exception: its message's first line (its type when the message is empty).

    Native-library texts become one readable line: an ``OSError`` reads ``FILE: reason`` (never a
    temporary ``.part`` name, never ``[Errno N]``), an OpenCV error names the function and the
    failed check instead of the C++ source path, and a bare ``(errno, text)`` tuple (what Python's
    maths overflow raises) reads as its text.
    """
    if isinstance(exc, OSError) and exc.strerror:
        name = exc.filename
        if name is not None and str(name).endswith(".part"):
            name = None  # a temporary file of an atomic write: the final name is what the user knows
        return f"{name}: {exc.strerror}" if name is not None else exc.strerror
    text = str(exc).strip()
    match = _OPENCV_ERROR.search(text)
    if type(exc).__name__ == "error" and match:
        kind, condition, function = match.group(2).strip(), " ".join(match.group(3).split()), match.group(4)
        return f"OpenCV {function}() failed: {kind.lower()}" + (f" ({condition})" if condition else "")
    if len(exc.args) == 2 and isinstance(exc.args[0], int) and isinstance(exc.args[1], str):
        return f"{exc.args[1].lower()} ({type(exc).__name__})"
    return text.splitlines()[0] if text else type(exc).__name__


def error(message: str) -> None:
    """Print one error line: ``walkcut: error: MESSAGE``."""
    print(f"walkcut: error: {message}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    """Print one informational line on stderr: ``walkcut: MESSAGE``."""
    print(f"walkcut: {message}", file=sys.stderr, flush=True)


def file_error(path, exc: BaseException) -> str:
    """One line for a failed file of a batch; names the file once."""
    message = first_line(exc)
    return message if str(path) in message else f"{path}: {message}"


def plural(n: int, word: str, words: str | None = None) -> str:
    """``plural(1, "image")`` -> ``"1 image"``; ``plural(3, "image")`` -> ``"3 images"``."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def _stopping_errors() -> tuple[type[BaseException], ...]:
    """Library errors that stop a command with exit code 2: what the user asked for cannot run."""
    from walkcut.outputs import OutputError
    from walkcut.runtime.sources.backends import BackendUnavailable
    from walkcut.runtime.sources.contract import ContractError

    return (ContractError, BackendUnavailable, OutputError)


def quiet_native_libraries(*, verbose: int = 0) -> None:
    """Keep OpenCV's and FFmpeg's own log lines off the terminal (walkcut says one line per problem);
    ``-vv``/``--debug`` lets them through. Values the user set in the environment are kept; worker
    processes inherit these."""
    if verbose >= 2:
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read when FFmpeg is first used
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and os.environ["OPENCV_LOG_LEVEL"] == "ERROR":
        with contextlib.suppress(Exception):
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


@contextlib.contextmanager
def one_line_warnings():
    """Python warnings (numpy's overflow notes, library deprecations) as one logged line each,
    ``walkcut: WARNING: RuntimeWarning: ...``, instead of the file, line and source text."""
    import logging
    import warnings

    log = logging.getLogger("walkcut.warnings")
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        log.warning("%s: %s", category.__name__, " ".join(str(message).split()))

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While the block runs, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main
    thread: commands stop as on Ctrl-C, with their summary and exit code 130, not killed with 143."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and no abbreviated options.

    Abbreviations are off: with them ``--grid`` would also be reached by ``--gri``, and adding an
    option later could silently change what an old command line means.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # argparse calls this for every usage error
        error(f"{message} (see `{self.prog} --help`)")
        raise SystemExit(EXIT_USAGE)


def run_command(func, args, *, debug: bool = False) -> int:
    """Call a subcommand's ``func(args)`` under the error policy; return its exit code."""
    try:
        with sigterm_as_interrupt(), one_line_warnings():
            return int(func(args) or 0)
    except KeyboardInterrupt as exc:
        what = "interrupted by SIGTERM" if isinstance(exc, Terminated) else "interrupted"
        note(f"{getattr(args, 'command', None) or 'command'} {what}")
        return EXIT_INTERRUPTED
    except CommandError as exc:
        if debug:
            traceback.print_exc()
        error(first_line(exc))
        return exc.code
    except Exception as exc:  # the policy: one line, never a traceback unless asked
        if debug:
            traceback.print_exc()
        code = EXIT_USAGE if isinstance(exc, _stopping_errors()) else EXIT_FAILED
        hint = "" if debug or code == EXIT_USAGE else " (run with --debug for the traceback)"
        if isinstance(exc, (OSError, ValueError, RuntimeError, ImportError)):
            error(first_line(exc) + hint)
        else:
            error(f"{type(exc).__name__}: {first_line(exc)}{hint}")
        return code
