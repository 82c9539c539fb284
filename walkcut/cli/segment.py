"""``walkcut segment IMAGE... --out DIR``: label map and overlay for each image."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from walkcut.runtime.cuts.hierarchy import AUTO_RULES
from walkcut.runtime.draw import overlay
from walkcut.runtime.imageio import atomic_write_bytes, encode_png, read_image
from walkcut.runtime.segmenter import Segmenter
from walkcut.runtime.sources.contract import ContractError
from walkcut.runtime.sources.pixels import PixelSource

logger = logging.getLogger(__name__)


def threshold_arg(text: str):
    """A stopping rule on the command line: a number or an automatic rule name."""
    if text in AUTO_RULES:
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or one of {', '.join(AUTO_RULES)}, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"threshold must be >= 0, got {text!r}")
    return value


def add_cut_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that cuts (segment, video, eval)."""
    g = p.add_argument_group("cuts")
    g.add_argument("--mode", choices=("walk", "dot", "cosine"), default="walk", help="graph from the walk (default: walk)")
    g.add_argument("--power", type=int, default=1, help="walk length t: cut P^t (default: 1)")
    g.add_argument("--threshold", type=threshold_arg, default="auto-ncut",
                   help="stopping rule: a number (NCut threshold), auto-ncut or auto-mincut (default: auto-ncut)")
    g.add_argument("--max-segments", type=int, default=32, help="most segments (default: 32)")
    g.add_argument("--min-size", type=int, default=None, help="smallest segment in grid cells (default: R*R/256)")
    g.add_argument("--grid", "-R", type=int, default=32, help="graph resolution R for --source pixels (default: 32)")


def cut_options(args) -> dict:
    return dict(mode=args.mode, power=args.power, threshold=args.threshold,
                max_segments=args.max_segments, min_size=args.min_size)


def make_source(args):
    """The transition-matrix source the arguments ask for."""
    if getattr(args, "engine", None):
        from walkcut.runtime.sources.engine import EngineSource

        return EngineSource.from_path(args.engine, backend=getattr(args, "backend", "auto"))
    return PixelSource(grid=args.grid)


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """``--engine`` / ``--backend``, shared by segment and video."""
    from walkcut.runtime.sources.backends import BACKENDS

    g = p.add_argument_group("engine")
    g.add_argument("--engine", type=Path, default=None, metavar="MODEL",
                   help="exported attention model (.onnx, or a TensorRT .engine with its .json); "
                        "replaces --source pixels")
    g.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="what runs the engine (default: auto = best available, logged)")


def open_source(args):
    """``make_source`` with model problems turned into a one-line error; None when it failed."""
    from walkcut.runtime.sources.backends import BackendUnavailable

    try:
        return make_source(args)
    except (ContractError, BackendUnavailable) as exc:
        print(f"walkcut: error: {exc}", file=sys.stderr)
        return None


def _write_outputs(pairs) -> None:
    """Write every ``(path, bytes)`` or none: a failure removes the files already written."""
    done = []
    try:
        for path, data in pairs:
            atomic_write_bytes(path, data)
            done.append(path)
    except BaseException:
        for path in done:
            path.unlink(missing_ok=True)
        raise


def register(sub) -> None:
    p = sub.add_parser("segment", help="segment images: label maps + overlays",
                       description="Segment images into a label map (uint16 PNG) and an overlay picture each.")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("--out", "-o", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument("--source", choices=("pixels",), default="pixels",
                   help="where the random walk comes from; pixels = colour+position graph, no model (default)")
    add_cut_arguments(p)
    add_engine_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    source = open_source(args)
    if source is None:
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    segmenter = Segmenter(source)
    options = cut_options(args)
    failed, done, t_start = [], 0, time.perf_counter()
    stage_times: dict[str, list[float]] = {}
    bar = tqdm(args.images, unit="img", disable=len(args.images) < 2 or not sys.stderr.isatty())
    for path in bar:
        bar.set_postfix_str(path.name)
        try:
            image = read_image(path)
            result = segmenter.set_image(image).segment(**options)
            stem = path.stem
            if result.labels.max() > 65535:
                raise ValueError(f"{path}: {result.labels.max() + 1} segments do not fit a uint16 label map")
            # Encode both pictures before writing either: a failure leaves no partial output.
            labels16 = result.labels.astype(np.uint16)  # also a 4x smaller map for the overlay
            t, n_segments = result.timings, result.n_segments
            del result  # huge images: free the int64 labels before drawing
            _write_outputs([
                (args.out / f"{stem}_labels.png", encode_png(labels16, rgb=False)),
                (args.out / f"{stem}_overlay.png", encode_png(overlay(image, labels16))),
            ])
        except Exception as exc:
            failed.append(path)
            message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            tqdm.write(f"walkcut: error: {message.splitlines()[0] if message else type(exc).__name__}",
                       file=sys.stderr)
            logger.debug("%s failed", path, exc_info=True)
            continue
        done += 1
        for stage, seconds in t.items():
            stage_times.setdefault(stage, []).append(seconds)
        logger.info("%s: %d segments (source %.1f ms, cuts %.1f ms, upsample %.1f ms)", path, n_segments,
                    1e3 * t["source"], 1e3 * t["cuts"], 1e3 * t["upsample"])
        if len(args.images) == 1:
            print(f"{path}: {n_segments} segments -> {args.out / (path.stem + '_labels.png')}")
    elapsed = time.perf_counter() - t_start
    if len(args.images) > 1:
        print(f"segmented {done} of {len(args.images)} images in {elapsed:.1f} s -> {args.out}"
              + (f"; {len(failed)} failed" if failed else ""))
        if stage_times:
            print("median per image: " + ", ".join(f"{k} {1e3 * float(np.median(v)):.1f} ms"
                                                   for k, v in stage_times.items()))
    return 1 if failed else 0
