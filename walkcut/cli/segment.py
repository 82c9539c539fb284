"""``walkcut segment INPUT... --out DIR``: a label map and an overlay picture for each image."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from walkcut.cli.args import (
    add_cut_arguments,
    add_pixel_limit_argument,
    add_source_arguments,
    cut_options,
    output_dir,
    source_spec,
)
from walkcut.cli.errors import (
    EXIT_INTERRUPTED,
    CommandError,
    Terminated,
    UsageError,
    error,
    file_error,
    is_disk_full,
    plural,
)
from walkcut.cli.rerun_option import add_rerun_argument, check_rerun, rerun_log
from walkcut.inputs import IMAGE_EXTENSIONS, InputError, InputImage, collect_images
from walkcut.outputs import (
    DONE,
    NEW,
    OutputError,
    make_record,
    options_record,
    png_with_record,
    refuse_inputs_as_outputs,
    resume_refusal,
    resume_state,
    shown,
)
from walkcut.runtime.draw import label_colors, overlay
from walkcut.runtime.imageio import encode_png, read_image, write_all_or_none
from walkcut.runtime.segmenter import Segmenter

logger = logging.getLogger(__name__)

SUFFIXES = ("_labels.png", "_overlay.png")
#: The optional colour picture of the label map (``--color-labels``).
COLOR_SUFFIX = "_labels_color.png"
#: ``--labels-format``: the label map's pixel type.
LABEL_FORMATS = ("uint16", "index8")

NAMING = """\
inputs: image files, folders (searched recursively for %s files, sorted) and
glob patterns ("photos/**/*.jpg"; quote them so the shell does not expand them). The --out folder
is never read as input, even when it lies inside an input folder.

outputs: OUT/NAME_labels.png (label map, 0..K-1, at the image's resolution: uint16, or 8-bit
with --labels-format index8), OUT/NAME_overlay.png (unless --no-overlay) and, with --color-labels,
OUT/NAME_labels_color.png (a colour per segment, for viewing). NAME is the image's path relative to the argument that found it, so it does
not depend on the other inputs: photos/a/x.jpg found by `photos` (or "photos/**/*.jpg") gives
OUT/a/x_labels.png; a file given by itself gives OUT/x_labels.png. Names that collide in one run
keep more of their path until they differ, checked before any work: the extension first (x.jpg,
x.png and x.jpg.png in one folder give x.jpg_labels.png, x.png_labels.png, x.jpg.png_labels.png),
then the path as typed (a/x.jpg_labels.png), then ~1, ~2 in input order. --relative-to ROOT
names every image by its path below ROOT instead.

existing files: never replaced unless --overwrite, and an input never (refused with one line, exit
2, before any work). An image's outputs are swapped in together: a failed write leaves the
old pair. Each output records its input (path, size, modification time) and the settings;
--skip-existing skips an image only when both outputs say they were made from it with the same
settings, and refuses (exit 2) outputs made with other settings or files walkcut did not write.

RGBA images are composited onto white (said once). A bad file gets one line on stderr and the rest
of the batch is processed; the exit code is then 1.""" % ", ".join(IMAGE_EXTENSIONS)


def register(sub) -> None:
    p = sub.add_parser("segment", help="segment images: label maps + overlays",
                       description="Segment images into a label map (uint16 PNG) and an overlay picture each.",
                       epilog=NAMING, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, folder or glob pattern")
    p.add_argument("--out", "-o", type=output_dir, required=True,
                   help="output folder (created if missing; see the naming rule below)")
    p.add_argument("--relative-to", type=Path, default=None, metavar="ROOT",
                   help="name every output by its input's path below ROOT (mirrors ROOT's folders) instead of "
                        "below the argument that found it")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true",
                          help="replace outputs that already exist (never an input)")
    existing.add_argument("--skip-existing", action="store_true",
                          help="resume: skip images whose outputs record this input and these settings; "
                               "other existing outputs are refused")
    p.add_argument("--no-overlay", dest="overlay", action="store_false", help="write label maps only")
    p.add_argument("--labels-format", choices=LABEL_FORMATS, default="uint16",
                   help="pixel type of NAME_labels.png: uint16 (default), or index8, an 8-bit map (at most 256 "
                        "segments: --max-segments 256 or less)")
    p.add_argument("--color-labels", action="store_true",
                   help=f"also write NAME{COLOR_SUFFIX}, the label map with a colour per segment")
    add_pixel_limit_argument(p)
    add_rerun_argument(p)
    add_source_arguments(p)
    add_cut_arguments(p)
    p.set_defaults(func=run)


def output_suffixes(args) -> tuple[str, ...]:
    """The files each image gets, as suffixes of its output name."""
    return (SUFFIXES[0],) + ((SUFFIXES[1],) if args.overlay else ()) + ((COLOR_SUFFIX,) if args.color_labels else ())


def plan(images: list[InputImage], out: Path, *, overwrite: bool, skip_existing: bool,
         settings: dict | None = None, suffixes: tuple[str, ...] = SUFFIXES) -> list[tuple[InputImage, dict]]:
    """The images to process, each with the record its outputs carry (:mod:`walkcut.outputs`).

    Refuses (:class:`~walkcut.outputs.OutputError`, exit code 2) before any work: an output that is
    an input (always); existing outputs unless ``overwrite``; with ``skip_existing``, outputs that
    resume cannot count as done (other settings, another input, a half pair, a file walkcut did not
    write). Images whose outputs are done are left out with ``skip_existing``.
    """
    settings = settings or {}
    jobs = [(im, [im.output(out, s) for s in suffixes]) for im in images]
    refuse_inputs_as_outputs([im.path for im in images], [o for _, outs in jobs for o in outs])
    planned = [(im, make_record(im.path, settings, outs), outs) for im, outs in jobs]
    if overwrite:
        return [(im, record) for im, record, _ in planned]
    todo, done, clash = [], 0, []
    for im, record, outs in planned:
        if skip_existing:
            state, where = resume_state(outs, record)
            if state == DONE:
                done += 1
                continue
            if state != NEW:
                raise resume_refusal(state, where, record, resume_flag="--skip-existing")
        else:
            clash += [o for o in outs if o.exists()]
        todo.append((im, record))
    if clash:
        more = f" and {plural(len(clash) - 1, 'more file')}" if len(clash) > 1 else ""
        raise OutputError(f"{shown(clash[0])}{more} already exist{'s' if len(clash) == 1 else ''}; add --overwrite to "
                          f"replace, --skip-existing to resume, or choose another --out")
    if done:
        print(f"skipping {plural(done, 'image')} whose outputs exist in {out} (made from the same input "
              f"with the same settings)", file=sys.stderr)
    return todo


def encode_outputs(image: np.ndarray, labels16: np.ndarray, suffixes: tuple[str, ...], *,
                   labels_format: str = "uint16") -> dict[str, bytes]:
    """PNG bytes of each output (by suffix), all encoded before any is written."""
    n = int(labels16.max()) + 1 if labels16.size else 0
    if labels_format == "index8":
        if n > 256:
            raise ValueError(f"{n} segments do not fit an 8-bit label map; use --labels-format uint16")
        label_map = labels16.astype(np.uint8)
    else:
        label_map = labels16
    pictures = {SUFFIXES[0]: encode_png(label_map, rgb=False)}
    if SUFFIXES[1] in suffixes:
        pictures[SUFFIXES[1]] = encode_png(overlay(image, labels16))
    if COLOR_SUFFIX in suffixes:
        pictures[COLOR_SUFFIX] = encode_png(label_colors(labels16))
    return pictures


def run(args) -> int:
    check_rerun(args)
    with rerun_log(args, timeline="image", wrap=None, jpeg_quality=None) as log:
        return _segment(args, log)


def _segment(args, log) -> int:
    if args.labels_format == "index8" and (args.max_segments or 0) > 256:
        raise UsageError(f"--labels-format index8 holds at most 256 segments, --max-segments is {args.max_segments}")
    suffixes = output_suffixes(args)
    problems: list[str] = []
    try:
        images = collect_images(args.inputs, errors=problems, exclude=[args.out], root=args.relative_to)
    except InputError as exc:  # an input outside --relative-to: a usage error
        raise UsageError(str(exc)) from exc
    spec = source_spec(args)
    options = cut_options(args, spec)
    settings = dict(options_record(spec, options), labels_format=args.labels_format)
    todo = plan(images, args.out, overwrite=args.overwrite, skip_existing=args.skip_existing,
                settings=settings, suffixes=suffixes)
    segmenter = Segmenter(spec.open())  # model problems stop here, before any folder is made
    for message in problems:
        error(message)
    if args.labels_format == "index8" and options.get("max_segments", 0) > 256:
        raise UsageError(f"--labels-format index8 holds at most 256 segments, the settings allow "
                         f"{options['max_segments']}; add --max-segments 256")
    failed, done, t_start = len(problems), 0, time.perf_counter()
    stage_times: dict[str, list[float]] = {}
    total = len(todo) + len(problems)
    bar = tqdm(todo, unit="img", disable=len(todo) < 2 or not sys.stderr.isatty())

    def summary(stopped: str = "") -> str:
        return (f"segmented {done} of {plural(total, 'image')} in {time.perf_counter() - t_start:.1f} s -> {args.out}"
                + (f"; {failed} failed" if failed else "") + (f"; {stopped}" if stopped else ""))

    try:
        for item, record in bar:
            path = item.path
            bar.set_postfix_str(path.name)
            outputs = {s: item.output(args.out, s) for s in suffixes}
            try:
                image = read_image(path)
                result = segmenter.set_image(image).segment(**options)
                if result.labels.max() > 65535:
                    raise ValueError(f"{result.labels.max() + 1} segments do not fit a uint16 label map")
                # Encode every picture, then swap them in together: a failure leaves the old set or none.
                labels16 = result.labels.astype(np.uint16)  # also a 4x smaller map for the overlay
                t, n_segments = result.timings, result.n_segments
                del result  # huge images: free the int64 labels before drawing
                pictures = encode_outputs(image, labels16, suffixes, labels_format=args.labels_format)
                write_all_or_none([(outputs[s], png_with_record(data, record)) for s, data in pictures.items()])
                if log is not None:
                    log.log(done, image, labels16, t, name=str(path))
            except Exception as exc:
                if is_disk_full(exc):
                    # Every later image would fail the same way: stop, say how far the run got.
                    bar.close()
                    named = [o for o in outputs.values() if str(o) == str(getattr(exc, "filename", None))]
                    raise CommandError(f"disk full writing {(named or [outputs[SUFFIXES[0]]])[0]}: stopped after "
                                       f"{done} of {plural(total, 'image')} (the finished ones are complete); free "
                                       f"space, then rerun with --skip-existing") from exc
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
                print(f"{path}: {plural(n_segments, 'segment')} -> {outputs[SUFFIXES[0]]}", flush=True)
    except KeyboardInterrupt as exc:
        bar.close()
        what = "interrupted by SIGTERM" if isinstance(exc, Terminated) else "interrupted"
        print(summary(f"{what}: the outputs written are complete; rerun with --skip-existing to finish"),
              file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    if not todo and not problems:
        print(f"nothing to do: every image has its outputs in {args.out}")
    if total > 1:
        print(summary())
        if stage_times:
            print("median per image: " + ", ".join(f"{k} {1e3 * float(np.median(v)):.1f} ms"
                                                   for k, v in stage_times.items()))
    return 1 if failed else 0
