"""Inputs of ``walkcut batch``: what ``walkcut segment`` takes, plus text files of paths.

``@list.txt`` (or ``--from-file list.txt``) names a text file with one input per line: a file, a
folder or a glob pattern, relative paths taken from the current folder; blank lines and lines that
start with ``#`` are ignored. A listed file that does not exist is kept: it becomes a manifest row
with its error rather than stopping a run over a million paths. Each entry is named as a command-line
argument is (a listed file by its name, a listed folder's files below it), by
:func:`walkcut.inputs.name_outputs`, so both commands name the outputs of the same inputs alike.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path, PurePath

from walkcut.inputs import (
    Found,
    InputError,
    InputImage,
    expand_argument,
    name_outputs,
    relative_to,
    safe_relative,
    unique_found,
)


def read_list_file(path: str | os.PathLike) -> list[str]:
    """The entries of a list file (see module doc); :class:`InputError` when it cannot be read."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{p}: no such list file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read the list file ({exc})") from None
    entries = [line.strip() for line in text.splitlines()]
    entries = [e for e in entries if e and not e.startswith("#")]
    if not entries:
        raise InputError(f"{p}: list file names no inputs")
    return entries


def _expand_listed(entry: str, exclude=()) -> list[Found]:
    path = Path(entry)
    if path.is_dir() or (not path.exists() and glob.has_magic(entry)):
        return expand_argument(entry, exclude=exclude)
    return [Found(path, PurePath(path.name), safe_relative(path))]  # a file, or a missing one its row reports


def collect_batch_inputs(arguments: list[str], list_files: list[str] = (), *, exclude=(),
                         root: str | os.PathLike | None = None) -> list[InputImage]:
    """Expand arguments (``@FILE`` reads a list file) and ``list_files``; name the outputs.

    Order is kept, a file named twice is processed once. ``exclude``: output folders, never read as
    input; ``root``: ``--relative-to`` (:func:`walkcut.inputs.relative_to`). Raises :class:`InputError` for an argument that matches nothing or an unreadable list file.
    """
    paths: list[Found] = []
    for arg in arguments:
        text = os.fspath(arg)
        if text.startswith("@") and not Path(text).exists():
            for entry in read_list_file(text[1:]):
                paths.extend(_expand_listed(entry, exclude))
        else:
            paths.extend(expand_argument(text, exclude=exclude))
    for list_file in list_files:
        for entry in read_list_file(list_file):
            paths.extend(_expand_listed(entry, exclude))
    return name_outputs(relative_to(unique_found(paths), root))
