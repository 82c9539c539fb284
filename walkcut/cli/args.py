"""Argument types and option groups shared by the subcommands.

Every option value is checked by its ``type=`` here, while parsing: a bad value is a usage error
(exit code 2, one line) before any model is loaded or any folder is created. Checks that involve
two options (``--backend trt`` needs a TensorRT ``.engine``) run in :func:`check_arguments`, which
the dispatcher calls right after parsing.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

from walkcut.runtime import defaults

#: Stopping rules that choose the threshold themselves (mirrors ``walkcut.runtime.cuts.AUTO_RULES``,
#: which is not imported here so that ``walkcut --help`` stays fast).
AUTO_RULES = ("auto-ncut", "auto-mincut")
MODES = ("walk", "dot", "cosine")
#: Model files each named backend runs.
ENGINE_SUFFIX = {"trt": ".engine", "ort-cpu": ".onnx", "ort-cuda": ".onnx", "ort-trt": ".onnx"}


def int_at_least(low: int, high: int | None = None):
    """``type=`` for an integer in ``[low, high]``."""

    def parse(text: str) -> int:
        span = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {span}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {span}, got {text!r}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def finite_number(text: str, *, positive: bool, expected: str) -> float:
    """``text`` as a finite number > 0 (``positive``) or >= 0; otherwise a usage error
    "expected {expected}, got ..." (for parsers that also accept words, like ``off``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """``type=`` for a finite number >= 0."""
    return finite_number(text, positive=False, expected="a finite number >= 0")


def threshold_arg(text: str):
    """A stopping rule: a finite number >= 0 (constant NCut threshold) or an automatic rule name."""
    if text in AUTO_RULES:
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or one of {', '.join(AUTO_RULES)}, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"threshold must be a finite number >= 0, got {text!r}")
    return value


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_writable_place(path: Path, text: str) -> None:
    """The deepest existing folder above ``path`` must accept a file (tried with a temporary file,
    which also catches read-only mounts and pseudo file systems that permission bits do not show)."""
    base = _nearest_existing(path)
    if not base.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create {text}: {base} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot write {text}: {base} is not writable ({exc.strerror})") from None


def output_dir(text: str) -> Path:
    """``type=`` for an output folder: an existing folder or one that can be created (not created here)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder")
    _check_writable_place(path, text)
    return path


def output_file(*suffixes: str):
    """``type=`` for an output file in a writable place, ending in one of ``suffixes`` when given.

    Checked while parsing: the file is written under exactly this name or not at all.
    """

    def parse(text: str) -> Path:
        path = Path(text)
        if suffixes and path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(
                f"{text}: the output must end in {' or '.join(suffixes)} (it would otherwise be written "
                f"under another name)")
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
        _check_writable_place(path.parent, text)
        return path

    parse.__name__ = "output file"
    return parse


def add_cut_arguments(p: argparse.ArgumentParser, *, max_segments: int = defaults.MAX_SEGMENTS) -> None:
    """Options shared by every command that cuts (segment, video, eval, bench).

    Their parsed default is None; :func:`resolve_cut_arguments` fills in the preset's value (when
    ``--preset`` is given) or else the command's default, so an explicit flag always wins.
    """
    g = p.add_argument_group("cuts")
    g.add_argument("--mode", choices=MODES, default=None,
                   help=f"graph built from the walk (default: {defaults.MODE})")
    g.add_argument("--power", type=positive_int, default=None,
                   help=f"walk length t >= 1: cut P^t (default: {defaults.POWER})")
    g.add_argument("--threshold", type=threshold_arg, default=None,
                   help="stopping rule: a number >= 0 (constant NCut threshold; larger = more segments), "
                        f"auto-ncut or auto-mincut (default: {defaults.THRESHOLD})")
    g.add_argument("--max-segments", type=positive_int, default=None,
                   help=f"most segments, >= 1 (default: {max_segments})")
    g.add_argument("--min-size", type=positive_int, default=None,
                   help=f"smallest segment in grid cells, >= 1 (default: R*R/{defaults.MIN_SIZE_DIVISOR})")
    g.add_argument("--grid", "-R", type=int_at_least(defaults.MIN_GRID, defaults.MAX_GRID), default=None,
                   help=f"graph resolution R of the pixel source, {defaults.MIN_GRID} to {defaults.MAX_GRID} "
                        f"(default: {defaults.GRID})")
    p.set_defaults(cut_defaults={"mode": defaults.MODE, "power": defaults.POWER, "threshold": defaults.THRESHOLD,
                                 "max_segments": max_segments, "min_size": None, "grid": defaults.GRID})


def preset_name(text: str) -> str:
    """``type=`` for ``--preset``: a key of ``defaults.PRESETS``."""
    if text not in defaults.PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset {text!r}; choose from {', '.join(defaults.PRESETS)}")
    return text


def contour_scale_arg(text: str):
    """``type=`` for ``--contour-scale``: a positive number, or ``off`` (no contour term)."""
    if text in ("off", "none"):
        return CONTOUR_OFF
    return finite_number(text, positive=True, expected="a positive number or 'off'")


#: ``--contour-scale off`` (None means "not given" while parsing).
CONTOUR_OFF = "off"


def add_preset_argument(p: argparse.ArgumentParser) -> None:
    """``--preset NAME`` and ``--contour-scale`` (segment, video, eval; after add_cut_arguments)."""
    names = ", ".join(f"{k} (R = {v['source']['grid']}, {v['cuts']['threshold']})" for k, v in defaults.PRESETS.items())
    g = p.add_argument_group("presets")
    g.add_argument("--preset", type=preset_name, default=None, metavar="NAME",
                   help=f"named pixel-source and cut settings: {names}; explicit options override it "
                        "(default: none, the command's defaults)")
    g.add_argument("--contour-scale", type=contour_scale_arg, default=None, metavar="S",
                   help="intervening-contour term of the pixel source: sigma_e = S x median edge, or 'off' "
                        f"(default: {defaults.CONTOUR_SCALE})")
    p.set_defaults(contour_defaults={"contour_scale": defaults.CONTOUR_SCALE})


def resolve_cut_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the cut and source options the user left out: the preset's value if ``--preset`` was
    given, else the command's default. Idempotent; returns ``args``."""
    base = dict(getattr(args, "cut_defaults", {}))
    base.update(getattr(args, "contour_defaults", {}))
    preset = getattr(args, "preset", None)
    extra = {}
    if preset is not None:
        chosen = defaults.PRESETS[preset]
        base.update({k: v for k, v in chosen["cuts"].items() if k in base})
        base.update({k: v for k, v in chosen["source"].items() if k in base})
        # Source options without a flag of their own (e.g. color_scale) come from the preset alone.
        extra = {k: v for k, v in chosen["source"].items() if k not in base}
    args.preset_source = extra
    for key, value in base.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """``--engine`` / ``--backend``, shared by every command that can run a model."""
    from walkcut.runtime.sources.backends import BACKENDS

    g = p.add_argument_group("engine")
    g.add_argument("--engine", type=Path, default=None, metavar="MODEL",
                   help="exported attention model (.onnx, or a TensorRT .engine with its .json); "
                        "replaces the pixel source")
    g.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="what runs the engine (default: auto = best available, logged)")


def check_arguments(args: argparse.Namespace) -> str | None:
    """Checks across options, run right after parsing; the usage error's message, or None.

    Also fills in the cut options left out (:func:`resolve_cut_arguments`).
    """
    resolve_cut_arguments(args)
    engine, backend = getattr(args, "engine", None), getattr(args, "backend", "auto")
    if engine is not None:
        if not Path(engine).exists():
            return f"--engine {engine}: no such model file"
        want = ENGINE_SUFFIX.get(backend)
        if want and Path(engine).suffix.lower() != want:
            kind = "a TensorRT .engine file" if want == ".engine" else "an .onnx file"
            return (f"--backend {backend} runs {kind}, got {engine}; use --backend auto, or give "
                    f"{'MODEL.engine (walkcut export --trt)' if want == '.engine' else 'the .onnx model'}")
    elif backend != "auto":
        return f"--backend {backend} needs --engine MODEL"
    return None


def cut_options(args) -> dict:
    """Keyword arguments of :meth:`Segmenter.segment` from the parsed cut options."""
    resolve_cut_arguments(args)
    return dict(mode=args.mode, power=args.power, threshold=args.threshold,
                max_segments=args.max_segments, min_size=args.min_size)


def make_source(args):
    """The transition-matrix source the arguments ask for (raises ContractError / BackendUnavailable)."""
    if getattr(args, "engine", None):
        from walkcut.runtime.sources.engine import EngineSource

        return EngineSource.from_path(args.engine, backend=getattr(args, "backend", "auto"))
    from walkcut.runtime.sources.pixels import PixelSource

    return PixelSource(**source_options(args))


def source_options(args) -> dict:
    """``PixelSource`` keyword arguments from the parsed options (flags, then the preset's)."""
    resolve_cut_arguments(args)
    return {**getattr(args, "preset_source", {}), "grid": args.grid, "contour_scale": contour_scale(args)}


def contour_scale(args) -> float | None:
    """``PixelSource.contour_scale`` from the parsed options (the default where the command has none)."""
    value = getattr(args, "contour_scale", defaults.CONTOUR_SCALE)
    return None if value == CONTOUR_OFF else value
