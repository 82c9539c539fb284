"""Argument types and option groups shared by the subcommands.

Every option value is checked by its ``type=`` here, while parsing: a bad value is a usage error
(exit code 2, one line) before any model is loaded or any folder is created. Checks that involve
two options (``--backend trt`` needs a TensorRT ``.engine``) run in :func:`check_arguments`, which
the dispatcher calls right after parsing.

Every command that segments (segment, batch, video, eval, bench) takes the same source options
(:func:`add_source_arguments`: ``--grid``, ``--preset``, ``--contour-scale``, ``--engine``,
``--backend``; the pixel source unless ``--engine`` names a model) and cut options (:func:`add_cut_arguments`), and turns them into a
source spec with the one function :func:`source_spec` and into cut settings with
:func:`cut_settings`. A cut setting comes from, in this order: its flag; the ``--preset``; the
model's own ``cut_defaults`` (``--engine``); the command's default (``walkcut video`` grows 16
segments, not 32); the package default. :func:`cut_options` logs (INFO, shown with ``-v``) where
each came from.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import tempfile
from pathlib import Path

from walkcut.runtime import defaults

logger = logging.getLogger(__name__)

#: Stopping rules that choose the threshold themselves (mirrors ``walkcut.runtime.cuts.AUTO_RULES``,
#: which is not imported here so that ``walkcut --help`` stays fast).
AUTO_RULES = ("auto-ncut", "auto-mincut", "auto-ncut-unweighted")
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


#: Segmenter.segment keyword -> its flag, for the cut settings that have one.
CUT_FLAGS = {"mode": "--mode", "power": "--power", "threshold": "--threshold", "min_size": "--min-size",
             "max_segments": "--max-segments", "upsample": "--upsample"}
#: Upsampling methods (mirrors ``walkcut.runtime.upsample.METHODS``, not imported: fast --help).
UPSAMPLE_METHODS = ("joint-bilateral", "nearest", "snap")


def add_cut_arguments(p: argparse.ArgumentParser, *, max_segments: int = defaults.MAX_SEGMENTS) -> None:
    """Options shared by every command that cuts (segment, batch, video, eval, bench).

    Their parsed default is None: :func:`cut_settings` fills in what was left out (the preset's
    value, the model's, the command's default ``max_segments``, the package default), so an
    explicit flag always wins.
    """
    g = p.add_argument_group("cuts", "settings left out come from --preset, else the model's own (--engine), "
                                     "else the defaults below")
    g.add_argument("--mode", choices=MODES, default=None,
                   help=f"graph built from the walk (default: {defaults.MODE})")
    g.add_argument("--power", type=positive_int, default=None,
                   help=f"walk length t >= 1: cut P^t (default: {defaults.POWER})")
    g.add_argument("--threshold", type=threshold_arg, default=None,
                   help="stopping rule: a number >= 0 (constant NCut threshold; larger = more segments), "
                        f"auto-ncut, auto-mincut or auto-ncut-unweighted (default: {defaults.THRESHOLD})")
    g.add_argument("--max-segments", type=positive_int, default=None,
                   help=f"most segments, >= 1 (default: {max_segments})")
    g.add_argument("--min-size", type=positive_int, default=None,
                   help=f"smallest segment in grid cells, >= 1 (default: R*R/{defaults.MIN_SIZE_DIVISOR})")
    g.add_argument("--upsample", choices=UPSAMPLE_METHODS, default=None,
                   help=f"grid labels to pixels (default: {defaults.UPSAMPLE}): joint-bilateral, nearest, or snap (joint-bilateral, "
                        "then snapped to a fine pixel-walk segmentation: for coarse attention grids; ViT default)")
    p.set_defaults(command_cut_defaults={"max_segments": max_segments})


def preset_name(text: str) -> str:
    """``type=`` for ``--preset``: a key of ``defaults.PRESETS``."""
    if text not in defaults.PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset {text!r}; choose from {', '.join(defaults.PRESETS)}")
    return text


def contour_scale_arg(text: str):
    """``type=`` for ``--contour-scale``: a positive number, or ``off`` (no contour term)."""
    if text in ("off", "none"):
        return CONTOUR_OFF
    value = finite_number(text, positive=True, expected="a positive number or 'off'")
    low, high = CONTOUR_SCALE_RANGE
    if not low <= value <= high:  # beyond these the weights underflow to 0 or overflow: no graph left
        raise argparse.ArgumentTypeError(f"expected a number from {low:g} to {high:g} or 'off', got {text!r}")
    return value


#: ``--contour-scale`` values that keep the contour term finite and meaningful.
CONTOUR_SCALE_RANGE = (1e-3, 1e3)


#: ``--contour-scale off`` (None means "not given" while parsing).
CONTOUR_OFF = "off"


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """``--grid``, ``--preset``, ``--contour-scale``, ``--engine``, ``--backend``: the same names and
    meanings on every command that segments (read by :func:`source_spec`). The pixel source is used
    unless ``--engine`` names a model."""
    from walkcut.runtime.sources.backends import BACKENDS

    names = ", ".join(f"{k} (R = {v['source']['grid']}, {v['cuts']['threshold']})" for k, v in defaults.PRESETS.items())
    g = p.add_argument_group("source", "where the random walk comes from: the pixel graph, or an exported model")
    g.add_argument("--grid", "-R", type=int_at_least(defaults.MIN_GRID, defaults.MAX_GRID), default=None,
                   help=f"graph resolution R of the pixel source, {defaults.MIN_GRID} to {defaults.MAX_GRID} "
                        f"(default: {defaults.GRID}; a model fixes its own); time and memory grow as R**4: "
                        f"R = 128 takes about 1 GB, and a --grid that does not fit the available memory is refused")
    g.add_argument("--contour-scale", type=contour_scale_arg, default=None, metavar="S",
                   help="intervening-contour term of the pixel source: sigma_e = S x median edge, or 'off' "
                        f"(default: {defaults.CONTOUR_SCALE})")
    g.add_argument("--preset", type=preset_name, default=None, metavar="NAME",
                   help=f"named pixel-source and cut settings: {names}; explicit options override it, and "
                        "with --engine only its cut settings apply (default: none)")
    g.add_argument("--engine", type=Path, default=None, metavar="MODEL",
                   help="exported attention model (.onnx, or a TensorRT .engine with its .json); "
                        "replaces the pixel source; its own cut settings apply where no flag or preset sets them")
    g.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="what runs the engine (default: auto = best available, logged)")


def add_pixel_limit_argument(p: argparse.ArgumentParser) -> None:
    """``--max-pixels N``: the largest image read (width x height), checked from its header."""
    p.add_argument("--max-pixels", type=positive_int, default=None, metavar="N",
                   help=f"refuse images with more than N pixels, checked before decoding (default: "
                        f"${defaults.MAX_PIXELS_ENV}, else {defaults.MAX_IMAGE_PIXELS}, about "
                        f"{defaults.MAX_IMAGE_PIXELS / 1e6:.1f} Mpx)")


@contextlib.contextmanager
def process_settings(args: argparse.Namespace):
    """Settings the parsed options make for the process and the workers it starts, while the
    command runs (restored after: ``main`` may be called again in the same process).

    ``--max-pixels`` becomes ``$WALKCUT_MAX_PIXELS``, which every reader of images honours,
    in worker processes and Ray tasks too (they inherit the environment).
    """
    import os

    value = getattr(args, "max_pixels", None)
    if value is None:
        yield
        return
    previous = os.environ.get(defaults.MAX_PIXELS_ENV)
    os.environ[defaults.MAX_PIXELS_ENV] = str(value)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(defaults.MAX_PIXELS_ENV, None)
        else:
            os.environ[defaults.MAX_PIXELS_ENV] = previous


def available_memory() -> int | None:
    """Bytes of memory available to new work (``MemAvailable`` on Linux), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_grid_memory(args: argparse.Namespace, available: int | None = None) -> str | None:
    """The usage error for a ``--grid`` whose estimated memory exceeds what is available, or None."""
    grid = getattr(args, "grid", None)
    if grid is None or getattr(args, "engine", None) is not None:
        return None
    from walkcut.runtime.sources.pixels import graph_memory_bytes

    available = available_memory() if available is None else available
    if available is None:
        return None
    parallel = getattr(args, "workers", None) or 1  # video worker processes hold a graph each
    need = graph_memory_bytes(grid) * parallel
    if need > available:
        each = f" ({parallel} workers)" if parallel > 1 else ""
        return (f"--grid {grid} needs about {need / 2**30:.1f} GiB{each}, more than the {available / 2**30:.1f} GiB "
                f"available; use a smaller --grid (memory grows as R**4)")
    return None


def check_arguments(args: argparse.Namespace) -> str | None:
    """Checks across options, run right after parsing; the usage error's message, or None."""
    import os

    problem = check_grid_memory(args)
    if problem:
        return problem

    env = os.environ.get(defaults.MAX_PIXELS_ENV, "").strip()
    if getattr(args, "max_pixels", None) is None and env and not (env.isdigit() and int(env) >= 1):
        return f"{defaults.MAX_PIXELS_ENV}={env!r} is not a number of pixels >= 1; unset it or use --max-pixels N"
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


def source_spec(args: argparse.Namespace):
    """The spec of the source the parsed options ask for: the one place the command line builds a
    source (a :class:`~walkcut.runtime.sources.pixels.PixelSource` or an
    :class:`~walkcut.runtime.sources.engine.EngineSpec`; ``spec.open()`` gives the source).

    Pixel-source options come from ``--grid`` and ``--contour-scale``, else the ``--preset``, else
    the defaults. With ``--engine`` they do not apply (the model fixes its grid): given anyway, they
    are ignored with a warning.
    """
    from walkcut.runtime.sources.spec import source_spec as build

    pixel = {}
    if getattr(args, "grid", None) is not None:
        pixel["grid"] = args.grid
    if getattr(args, "contour_scale", None) is not None:
        pixel["contour_scale"] = None if args.contour_scale == CONTOUR_OFF else args.contour_scale
    preset = getattr(args, "preset", None)
    engine = getattr(args, "engine", None)
    if engine is not None:
        if pixel:
            flags = " and ".join(f"--{k.replace('_', '-')}" for k in pixel)
            logger.warning("%s set%s the pixel source, which --engine replaces (the model fixes its own grid): "
                           "ignored", flags, "" if len(pixel) > 1 else "s")
        if preset is not None:
            logger.info("--preset %s: with --engine only its cut settings apply", preset)
        return build(engine=engine, backend=getattr(args, "backend", "auto"))
    return build(preset=preset, **pixel)


def cut_settings(args: argparse.Namespace, spec=None) -> dict:
    """Each cut setting (``Segmenter.segment``'s keywords) with its origin, from the parsed options
    and the model's own ``cut_defaults`` (``spec``, from :func:`source_spec`; optional).

    Order: flag (``--threshold``) > ``--preset NAME`` > the model's (``model``) > the command's or
    the package default (``default``). Returns ``{name: CutSetting(value, origin)}``.
    """
    from walkcut.runtime.segmenter import resolve_cut_settings

    layers = [(flag, {key: getattr(args, key)}) for key, flag in CUT_FLAGS.items()
              if getattr(args, key, None) is not None]
    preset = getattr(args, "preset", None)
    if preset is not None:
        layers.append((f"--preset {preset}", defaults.PRESETS[preset]["cuts"]))
    if spec is not None:
        layers.append(("model", spec.cut_defaults))
    layers.append(("default", getattr(args, "command_cut_defaults", {})))
    return resolve_cut_settings(*layers)


def cut_options(args: argparse.Namespace, spec=None) -> dict:
    """Keyword arguments of :meth:`Segmenter.segment` from :func:`cut_settings`; logs (INFO) where
    each came from, e.g. ``mode=walk (model), threshold=0.3 (--threshold)``."""
    from walkcut.runtime.segmenter import describe_cut_settings

    settings = cut_settings(args, spec)
    logger.info("cut settings: %s", describe_cut_settings(settings))
    return {key: s.value for key, s in settings.items()}
