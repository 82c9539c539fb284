"""Input expansion and output naming, shared by everything that takes many images.

``walkcut segment`` and ``walkcut batch`` (and their library functions, :mod:`walkcut.batch`) use it;
it lives beside the public API rather than in the command line so that nothing below the CLI
imports the CLI.

Inputs may be files, folders (searched recursively for image files, sorted) and glob patterns
(``"photos/**/*.jpg"``). Each image is named relative to the argument that found it, so a name never
depends on which other inputs were given: a folder's images by their path below that folder
(``photos/a/x.jpg`` from ``photos`` is ``a/x``), a pattern's below its fixed leading folders
(``photos/**/*.jpg`` also gives ``a/x``), a file given by itself by its file name (``x``). Outputs
are ``OUT/<name><suffix>``. When names collide in one run, every colliding image keeps more of its
path, step by step until the names differ: first the extension (``x.jpg``, ``x.png``; ``x.jpg.png``
then stays ``x.jpg.png``), then the path as the argument spelled it (``a/x.jpg``, ``b/x.jpg``),
then, for what still collides, ``~1``, ``~2``... in input order. ``--relative-to ROOT`` names every
image by its path below ROOT instead (mirrors ROOT's folders; an input outside it is refused).
Nothing is ever overwritten silently: see :mod:`walkcut.outputs`.

Output folders are never read back as input: when ``--out`` lies inside a folder (or below a
pattern's fixed folders) that is searched, it is skipped; when it is that folder itself, the files
walkcut wrote there (those carrying its output record) are skipped.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath

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


@dataclass(frozen=True)
class Found:
    """A file found by one input argument: ``rel`` is its path relative to that argument (a folder's
    files below it, a pattern's below its fixed folders, a file by its name); ``given`` is the path
    as the argument spelled it (the tie-breaker when two arguments give the same ``rel``)."""

    path: Path
    rel: PurePath
    given: PurePath


def safe_relative(path: PurePath) -> PurePath:
    """``path`` as a relative path that stays inside a folder: no root, ``..`` becomes ``__``."""
    parts = [("__" if p == ".." else p) for p in (path.parts[1:] if path.anchor else path.parts) if p != "."]
    return PurePath(*parts) if parts else PurePath(path.name or "_")


def _under(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _skipper(root: Path, exclude):
    """``skip(file)`` for the files found below ``root``: those inside an output folder (see module doc)."""
    root = root.resolve()
    outs = [Path(e).resolve() for e in exclude if e is not None]
    outs = [o for o in outs if _under(o, root)]
    if not outs:
        return lambda path: False
    from walkcut.outputs import read_record

    def skip(path: Path) -> bool:
        resolved = path.resolve()
        for out in outs:
            if _under(resolved.parent, out):
                return out != root or read_record(path) is not None
        return False

    return skip


def _glob_root(text: str) -> Path:
    fixed = []
    for part in Path(text).parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def expand_argument(arg: str | os.PathLike, *, exclude=()) -> list[Found]:
    """The files one input argument names (see :func:`expand_inputs`), each with its relative name.

    ``exclude``: output folders, never read as input (module doc). Raises :class:`InputError` for an
    argument that matches nothing.
    """
    text = os.fspath(arg)
    path = Path(text)
    if path.is_dir():
        skip = _skipper(path, exclude)
        found = sorted(p for p in walk_files(path) if _is_image(p) and not skip(p))
        if not found:
            raise InputError(f"{text}: folder holds no image files ({', '.join(IMAGE_EXTENSIONS[:4])}, ...)")
        return [Found(p, p.relative_to(path), safe_relative(p)) for p in found]
    if path.exists():
        return [Found(path, PurePath(path.name), safe_relative(path))]  # a file given by name: tried whatever its extension
    if glob.has_magic(text):
        root = _glob_root(text)
        skip = _skipper(root, exclude)
        found = sorted(p for p in recursive_glob(text) if p.is_file() and _is_image(p) and not skip(p))
        if not found:
            raise InputError(f"{text}: pattern matches no image files")
        out = []
        for p in found:
            try:
                rel = p.relative_to(root)
            except ValueError:
                rel = PurePath(p.name)
            out.append(Found(p, rel, safe_relative(p)))
        return out
    raise InputError(f"{text}: no such file or folder")


def find_inputs(arguments: list[str | os.PathLike], *, exclude=()) -> list[Found]:
    """:func:`expand_argument` for each argument, in order, each file once (see :func:`unique_paths`)."""
    found: list[Found] = []
    for arg in arguments:
        found.extend(expand_argument(arg, exclude=exclude))
    return unique_found(found)


def expand_inputs(arguments: list[str | os.PathLike], *, exclude=()) -> list[Path]:
    """Files as given; folders searched recursively for image files; glob patterns expanded.

    Folder and glob results are sorted; the order of the arguments is kept; a file named twice is
    processed once. Folders reached through links are searched too, each real folder once, so link
    loops end. Raises :class:`InputError` for an argument that matches nothing.
    """
    return [f.path for f in find_inputs(arguments, exclude=exclude)]


def unique_found(found: list[Found]) -> list[Found]:
    """``found`` in order, each file once (compared after resolving links and ``..``)."""
    seen: set[Path] = set()
    unique = []
    for f in found:
        key = f.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def unique_paths(paths: list[Path]) -> list[Path]:
    """``paths`` in order, each file once (compared after resolving links and ``..``)."""
    return [f.path for f in unique_found([Found(Path(p), PurePath(Path(p).name), PurePath(p)) for p in paths])]


def _candidate(f: Found, level: int) -> PurePath:
    if level == 0:
        return f.rel.with_suffix("") if f.rel.suffix else f.rel
    return f.rel if level == 1 else f.given


def name_outputs(items: list[Found | Path]) -> list[InputImage]:
    """Relative output names that never collide (see the module doc for the rule).

    ``items`` are :class:`Found` entries, or plain paths (named as files given by themselves).
    Each name depends only on its own argument, unless it collides with another in this run.
    """
    found = [f if isinstance(f, Found) else Found(Path(f), PurePath(Path(f).name), safe_relative(PurePath(f)))
             for f in items]
    level = [0] * len(found)
    while True:
        groups: dict[PurePath, list[int]] = {}
        for i, f in enumerate(found):
            groups.setdefault(_candidate(f, level[i]), []).append(i)
        changed = False
        for members in groups.values():
            if len(members) < 2:
                continue
            low = min(level[i] for i in members)
            if low < 2:  # the least specific names of the group take one more step of their path
                for i in members:
                    if level[i] == low:
                        level[i] += 1
                        changed = True
        if not changed:
            break
    names = [_candidate(f, level[i]) for i, f in enumerate(found)]
    counts = Counter(names)
    seen: Counter = Counter()
    for i, name in enumerate(names):
        if counts[name] > 1:
            seen[name] += 1
            names[i] = name.with_name(f"{name.name}~{seen[name]}")
    return [InputImage(path=f.path, name=Path(n)) for f, n in zip(found, names)]


def relative_to(found: list[Found], root: str | os.PathLike | None) -> list[Found]:
    """``found`` named by each file's path below ``root`` (``--relative-to``) instead of below its
    argument; None leaves them as they are. Raises :class:`InputError` for a file outside ``root``."""
    if root is None:
        return found
    out = []
    for f in found:
        # as spelled first (keeps a linked folder's own names), then with links resolved
        for path, base in ((f.path.absolute(), Path(root).absolute()), (f.path.resolve(), Path(root).resolve())):
            try:
                out.append(Found(f.path, PurePath(path.relative_to(base)), f.given))
                break
            except ValueError:
                continue
        else:
            raise InputError(f"{f.path} is not inside --relative-to {root}; give a folder that holds every "
                             f"input, or leave --relative-to out")
    return out


def collect_images(arguments: list[str | os.PathLike], *, errors: list[str] | None = None,
                   exclude=(), root: str | os.PathLike | None = None) -> list[InputImage]:
    """:func:`find_inputs` then :func:`name_outputs`; ``exclude``: output folders (never read);
    ``root``: name outputs below this folder (:func:`relative_to`) instead of below each argument.

    With ``errors`` (a list), an argument that matches nothing adds its message there and the others
    are still collected (a batch goes on past a bad argument); without it the first one raises.
    """
    if errors is None:
        return name_outputs(relative_to(find_inputs(arguments, exclude=exclude), root))
    found: list[Found] = []
    for arg in arguments:
        try:
            found.extend(expand_argument(arg, exclude=exclude))
        except InputError as exc:
            errors.append(str(exc))
    return name_outputs(relative_to(unique_found(found), root))
