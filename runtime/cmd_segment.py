"""``walkcut segment IMAGE... --out DIR``: label map and overlay for each image."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from walkcut.runtime.cuts import AUTO_RULES
from walkcut.runtime.draw import overlay
from walkcut.runtime.imageio import ImageReadError, read_image, write_label_png, write_rgb_png
from walkcut.runtime.pixels import PixelSource
from walkcut.runtime.segmenter import Segmenter

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
        from walkcut.runtime.engine_source import EngineSource  # noqa: PLC0415 (optional runtime part)

        return EngineSource.from_path(args.engine, backend=getattr(args, "backend", "auto"))
    return PixelSource(grid=args.grid)


def register(sub) -> None:
    p = sub.add_parser("segment", help="segment images: label maps + overlays",
                       description="Segment images into a label map (uint16 PNG) and an overlay picture each.")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("--out", "-o", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument("--source", choices=("pixels",), default="pixels",
                   help="where the random walk comes from; pixels = colour+position graph, no model (default)")
    add_cut_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    source = make_source(args)
    args.out.mkdir(parents=True, exist_ok=True)
    segmenter = Segmenter(source)
    options = cut_options(args)
    failed, done, t_start = [], 0, time.perf_counter()
    bar = tqdm(args.images, unit="img", disable=len(args.images) < 2 or not sys.stderr.isatty())
    for path in bar:
        bar.set_postfix_str(path.name)
        try:
            image = read_image(path)
            result = segmenter.set_image(image).segment(**options)
            stem = path.stem
            write_label_png(args.out / f"{stem}_labels.png", result.labels)
            write_rgb_png(args.out / f"{stem}_overlay.png", overlay(image, result.labels))
        except (ImageReadError, ValueError) as exc:
            failed.append(path)
            tqdm.write(f"walkcut: error: {exc}", file=sys.stderr)
            continue
        done += 1
        t = result.timings
        logger.info("%s: %d segments (source %.1f ms, cuts %.1f ms, upsample %.1f ms)", path, result.n_segments,
                    1e3 * t["source"], 1e3 * t["cuts"], 1e3 * t["upsample"])
        if len(args.images) == 1:
            print(f"{path}: {result.n_segments} segments -> {args.out / (path.stem + '_labels.png')}")
    elapsed = time.perf_counter() - t_start
    if len(args.images) > 1:
        print(f"segmented {done} of {len(args.images)} images in {elapsed:.1f} s -> {args.out}"
              + (f"; {len(failed)} failed" if failed else ""))
    return 1 if failed else 0
