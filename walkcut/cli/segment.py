"""``walkcut segment INPUT... --out DIR``: a label map and an overlay picture for each image."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from walkcut.cli.args import add_cut_arguments, add_source_arguments, cut_options, output_dir, source_spec
from walkcut.cli.errors import UsageError, error, file_error, plural
from walkcut.cli.rerun_option import add_rerun_argument, check_rerun, rerun_log
from walkcut.inputs import IMAGE_EXTENSIONS, InputImage, collect_images
from walkcut.runtime.draw import overlay
from walkcut.runtime.imageio import encode_png, read_image, write_all_or_none
from walkcut.runtime.segmenter import Segmenter

logger = logging.getLogger(__name__)

SUFFIXES = ("_labels.png", "_overlay.png")

NAMING = """\
inputs: image files, folders (searched recursively for %s files, sorted) and
glob patterns ("photos/**/*.jpg"; quote them so the shell does not expand them).

outputs: OUT/NAME_labels.png (uint16 label map, 0..K-1, at the image's resolution) and
OUT/NAME_overlay.png. NAME mirrors the input's folders below the deepest folder that holds every
input: a/x.jpg and b/x.png give OUT/a/x_labels.png and OUT/b/x_labels.png; one image or one flat
folder gives OUT/x_labels.png. Two inputs of one folder with the same stem keep their extension
(x.jpg_labels.png). Existing outputs are never replaced unless --overwrite; --skip-existing skips
images whose outputs are all there (to resume a batch).

RGBA images are composited onto white (said once). A bad file gets one line on stderr and the rest
of the batch is processed; the exit code is then 1.""" % ", ".join(IMAGE_EXTENSIONS)


def register(sub) -> None:
    p = sub.add_parser("segment", help="segment images: label maps + overlays",
                       description="Segment images into a label map (uint16 PNG) and an overlay picture each.",
                       epilog=NAMING, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, folder or glob pattern")
    p.add_argument("--out", "-o", type=output_dir, required=True,
                   help="output folder (created if missing; see the naming rule below)")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    existing.add_argument("--skip-existing", action="store_true",
                          help="skip images whose outputs already exist (resume a batch)")
    add_rerun_argument(p)
    add_source_arguments(p)
    add_cut_arguments(p)
    p.set_defaults(func=run)


def plan(images: list[InputImage], out: Path, *, overwrite: bool, skip_existing: bool) -> list[InputImage]:
    """The images to process; refuses (UsageError) to replace existing outputs unless asked."""
    if overwrite:
        return images
    done = [im for im in images if all(im.output(out, s).exists() for s in SUFFIXES)]
    clash = [im.output(out, s) for im in images for s in SUFFIXES if im.output(out, s).exists()]
    if skip_existing:
        if done:
            print(f"skipping {plural(len(done), 'image')} whose outputs exist in {out}", file=sys.stderr)
        return [im for im in images if im not in done]
    if clash:
        more = f" and {plural(len(clash) - 1, 'more file')}" if len(clash) > 1 else ""
        raise UsageError(f"{clash[0]}{more} already exist{'s' if len(clash) == 1 else ''}; add --overwrite to "
                         f"replace, --skip-existing to resume, or choose another --out")
    return images


def run(args) -> int:
    check_rerun(args)
    with rerun_log(args, timeline="image", wrap=None, jpeg_quality=None) as log:
        return _segment(args, log)


def _segment(args, log) -> int:
    problems: list[str] = []
    images = collect_images(args.inputs, errors=problems)
    todo = plan(images, args.out, overwrite=args.overwrite, skip_existing=args.skip_existing)
    spec = source_spec(args)
    segmenter = Segmenter(spec.open())  # model problems stop here, before any folder is made
    for message in problems:
        error(message)
    options = cut_options(args, spec)
    failed, done, t_start = len(problems), 0, time.perf_counter()
    stage_times: dict[str, list[float]] = {}
    bar = tqdm(todo, unit="img", disable=len(todo) < 2 or not sys.stderr.isatty())
    for item in bar:
        path = item.path
        bar.set_postfix_str(path.name)
        labels_path, overlay_path = (item.output(args.out, s) for s in SUFFIXES)
        try:
            image = read_image(path)
            result = segmenter.set_image(image).segment(**options)
            if result.labels.max() > 65535:
                raise ValueError(f"{result.labels.max() + 1} segments do not fit a uint16 label map")
            # Encode both pictures before writing either: a failure leaves no partial output.
            labels16 = result.labels.astype(np.uint16)  # also a 4x smaller map for the overlay
            t, n_segments = result.timings, result.n_segments
            del result  # huge images: free the int64 labels before drawing
            pictures = [(labels_path, encode_png(labels16, rgb=False)),
                        (overlay_path, encode_png(overlay(image, labels16)))]
            write_all_or_none(pictures)
            if log is not None:
                log.log(done, image, labels16, t, name=str(path))
        except Exception as exc:
            failed += 1
            tqdm.write(f"walkcut: error: {file_error(path, exc)}", file=sys.stderr)
            logger.debug("%s failed", path, exc_info=True)
            continue
        done += 1
        for stage, seconds in t.items():
            stage_times.setdefault(stage, []).append(seconds)
        logger.info("%s: %d segments (source %.1f ms, cuts %.1f ms, upsample %.1f ms)", path, n_segments,
                    1e3 * t["source"], 1e3 * t["cuts"], 1e3 * t["upsample"])
        if len(todo) == 1:
            print(f"{path}: {plural(n_segments, 'segment')} -> {labels_path}")
    elapsed = time.perf_counter() - t_start
    if not todo and not problems:
        print(f"nothing to do: every image has its outputs in {args.out}")
    if len(todo) + len(problems) > 1:
        print(f"segmented {done} of {plural(len(todo) + len(problems), 'image')} in {elapsed:.1f} s -> {args.out}"
              + (f"; {failed} failed" if failed else ""))
        if stage_times:
            print("median per image: " + ", ".join(f"{k} {1e3 * float(np.median(v)):.1f} ms"
                                                   for k, v in stage_times.items()))
    return 1 if failed else 0
