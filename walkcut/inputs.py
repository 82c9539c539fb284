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

import glob
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

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


def expand_inputs(arguments: list[str | os.PathLike]) -> list[Path]:
    """Files as given; folders searched recursively for image files; glob patterns expanded.

    Folder and glob results are sorted; the order of the arguments is kept; a file named twice is
    processed once. Raises :class:`InputError` for an argument that matches nothing.
    """
    out: list[Path] = []
    for arg in arguments:
        text = os.fspath(arg)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p))
            if not found:
                raise InputError(f"{text}: folder holds no image files ({', '.join(IMAGE_EXTENSIONS[:4])}, ...)")
            out.extend(found)
        elif path.exists():
            out.append(path)  # a file given by name is tried whatever its extension
        elif glob.has_magic(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file() and _is_image(Path(p)))
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
