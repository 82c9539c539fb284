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

import glob
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePath

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
        found = sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p) and not skip(p))
        if not found:
            raise InputError(f"{text}: folder holds no image files ({', '.join(IMAGE_EXTENSIONS[:4])}, ...)")
        return [Found(p, p.relative_to(path), safe_relative(p)) for p in found]
    if path.exists():
        return [Found(path, PurePath(path.name), safe_relative(path))]  # a file given by name: tried whatever its extension
    if glob.has_magic(text):
        root = _glob_root(text)
        skip = _skipper(root, exclude)
        found = sorted(Path(p) for p in glob.glob(text, recursive=True)
                       if Path(p).is_file() and _is_image(Path(p)) and not skip(Path(p)))
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
    processed once. Raises :class:`InputError` for an argument that matches nothing.
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
