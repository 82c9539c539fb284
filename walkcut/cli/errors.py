"""The command line's one error policy.

* Usage errors (a bad option value, an option that contradicts another, an output that cannot be
  written or that the output policy of :mod:`walkcut.outputs` refuses) are found while parsing, before any work and before any folder is created: one line
  ``walkcut: error: ...`` on stderr, exit code 2.
* A bad file in a batch: one line naming the file and the problem, the rest of the batch goes on,
  exit code 1 at the end.
* A problem that stops the whole command (a model this runtime cannot run, a video that does not
  open): one line, exit code 2 for problems with what the user asked for, 1 otherwise.
* Never a traceback, unless ``--debug`` (or ``-v``) asks for one; Ctrl-C exits 130.

Library code raises exceptions that name the value and the fix; this module turns them into those
lines. Subcommands raise :class:`CommandError` for their own conditions instead of printing.
"""

from __future__ import annotations

import argparse
import sys
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


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when the message is empty)."""
    text = str(exc).strip()
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
        return int(func(args) or 0)
    except KeyboardInterrupt:
        note("interrupted")
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
