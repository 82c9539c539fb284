"""Input expansion and output naming, shared by everything that takes many images.

``walkcut segment`` and ``walkcut batch`` (and their library functions, :mod:`walkcut.batch`) use it;
it lives beside the public API rather than in the command line so that nothing below the CLI
imports the CLI.

Inputs may be files, folders (searched recursively for image files, sorted) and glob patterns
(``"photos/**/*.jpg"``). Outputs mirror the inputs' folders under ``--out``: each image is named by
its path relative to the deepest folder that holds every input, so ``a/x.jpg`` and ``b/x.png`` become
``OUT/a/x_labels.png`` and ``OUT/b/x_labels.png``, and a single image or a flat folder gives flat
names (``OUT/x_labels.png``). Two inputs that would still share a name (``x.jpg`` and ``x.png`` in one
folder) keep their extension in it (``x.jpg_labels.png``, ``x.png_labels.png``). Nothing is ever
overwritten silently: the commands refuse existing outputs unless ``--overwrite`` (or skip them with
``--skip-existing``).
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

#: File extensions read as images when a folder or glob is expanded (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")


class InputError(ValueError):
    """An input argument names nothing usable; the message says which and why."""


@dataclass(frozen=True)
class InputImage:
    """One image to process: where it is, and the relative name its outputs get under ``--out``."""

    path: Path
    name: Path  # relative output stem, e.g. Path("a/x") or Path("x.jpg") when disambiguated

    def output(self, out_dir: Path, suffix: str) -> Path:
        """``out_dir / <name><suffix>``, e.g. ``suffix="_labels.png"``."""
        return out_dir / self.name.parent / f"{self.name.name}{suffix}"


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def walk_files(root: Path) -> Iterator[Path]:
    """Every file below the folder ``root``, following links to folders but entering each real folder
    once (keyed by ``(st_dev, st_ino)``): a symbolic-link loop, or two loops through each other, ends
    instead of recursing until the path is too long. Unreadable folders are skipped (logged)."""
    seen: set[tuple[int, int]] = set()
    stack, linked = [root], []  # folders reached through links wait until every real one is done,
    while stack or linked:      # so a file is named by its real path where the walk has one
        folder = stack.pop() if stack else linked.pop(0)
        try:
            st = os.stat(folder)
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            logger.warning("%s: skipped (%s)", folder, exc.strerror or exc)
            continue
        subfolders = []
        for entry in entries:
            try:
                if entry.is_dir():  # follows links; the seen set stops the loops
                    (linked if entry.is_symlink() else subfolders).append(Path(entry.path))
                elif entry.is_file():
                    yield Path(entry.path)
            except OSError:  # a dangling or looping link: nothing to read there
                continue
        stack.extend(reversed(subfolders))


def _component_matches(pattern: str, name: str) -> bool:
    # As glob does: a wildcard never matches a hidden name unless the pattern starts with a dot.
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, pattern)


def _parts_match(pattern: list[str], parts: list[str]) -> bool:
    """Whether path components ``parts`` match glob components ``pattern`` (``**``: zero or more folders)."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        if not rest:  # a trailing ``**``: everything below, hidden folders and files aside
            return not any(part.startswith(".") for part in parts)
        # zero folders, or one more (not a hidden one, as glob's ``**``) and still inside ``**``
        return _parts_match(rest, parts) or (
            len(parts) > 1 and not parts[0].startswith(".") and _parts_match(pattern, parts[1:]))
    return bool(parts) and _component_matches(head, parts[0]) and _parts_match(rest, parts[1:])


def recursive_glob(pattern: str) -> list[Path]:
    """Files matching ``pattern``; ``**`` matches any number of folders. Patterns with ``**`` are
    matched on a :func:`walk_files` walk of their fixed leading folder, so links cannot make them
    loop (Python's recursive :func:`glob.glob` follows a link loop until the path is too long)."""
    if "**" not in pattern:
        return [Path(p) for p in glob.glob(pattern)]
    parts = pattern.replace(os.sep, "/").split("/")
    fixed = 0
    while fixed < len(parts) - 1 and not glob.has_magic(parts[fixed]):
        fixed += 1
    root_text = "/".join(parts[:fixed]) or ("/" if pattern.startswith("/") else ".")
    if pattern.startswith("/") and not root_text.startswith("/"):
        root_text = "/" + root_text
    root = Path(root_text)
    if not root.is_dir():
        return []
    wanted = [p for p in parts[fixed:] if p]
    found = []
    for path in walk_files(root):
        rel = path.relative_to(root).parts
        if _parts_match(wanted, list(rel)):
            found.append(path if parts[:fixed] else Path(*rel))
    return found


def expand_inputs(arguments: list[str | os.PathLike]) -> list[Path]:
    """Files as given; folders searched recursively for image files; glob patterns expanded.

    Folder and glob results are sorted; the order of the arguments is kept; a file named twice is
    processed once. Folders reached through links are searched too, each real folder once, so link
    loops end. Raises :class:`InputError` for an argument that matches nothing.
    """
    out: list[Path] = []
    for arg in arguments:
        text = os.fspath(arg)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in walk_files(path) if _is_image(p))
            if not found:
                raise InputError(f"{text}: folder holds no image files ({', '.join(IMAGE_EXTENSIONS[:4])}, ...)")
            out.extend(found)
        elif path.exists():
            out.append(path)  # a file given by name is tried whatever its extension
        elif glob.has_magic(text):
            found = sorted(p for p in recursive_glob(text) if p.is_file() and _is_image(p))
            if not found:
                raise InputError(f"{text}: pattern matches no image files")
            out.extend(found)
        else:
            raise InputError(f"{text}: no such file or folder")
    return unique_paths(out)


def unique_paths(paths: list[Path]) -> list[Path]:
    """``paths`` in order, each file once (compared after resolving links and ``..``)."""
    seen: set[Path] = set()
    unique = []
    for p in paths:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def name_outputs(paths: list[Path]) -> list[InputImage]:
    """Relative output names that mirror the inputs' folders and never collide (see module doc)."""
    if not paths:
        return []
    resolved = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([str(r.parent) for r in resolved]))
    rel = [r.relative_to(root) for r in resolved]
    stems = [r.with_suffix("") for r in rel]
    clashes = {s for s, k in Counter(stems).items() if k > 1}
    return [InputImage(path=p, name=r if s in clashes else s) for p, r, s in zip(paths, rel, stems)]


def collect_images(arguments: list[str | os.PathLike], *, errors: list[str] | None = None) -> list[InputImage]:
    """:func:`expand_inputs` then :func:`name_outputs`.

    With ``errors`` (a list), an argument that matches nothing adds its message there and the others
    are still collected (a batch goes on past a bad argument); without it the first one raises.
    """
    if errors is None:
        return name_outputs(expand_inputs(arguments))
    usable = []
    for arg in arguments:
        try:
            expand_inputs([arg])
        except InputError as exc:
            errors.append(str(exc))
        else:
            usable.append(arg)
    return name_outputs(expand_inputs(usable))
