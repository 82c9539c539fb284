"""``walkcut eval``: score a segmentation source on an evaluation set (a thin CLI over evaluate.py).

    walkcut eval DATASET --root DIR [--split val|test] [--engine MODEL]
                 [--json OUT] [--limit N] [--gallery PNG] [--thresholds T1,T2,... | none]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from pathlib import Path

from walkcut.cli.args import (
    add_cut_arguments,
    add_pixel_limit_argument,
    add_source_arguments,
    cut_options,
    output_file,
    positive_int,
    source_spec,
)
from walkcut.cli.errors import EXIT_INTERRUPTED, Terminated, UsageError, note, plural

log = logging.getLogger(__name__)

#: Constant NCut thresholds swept for ODS / OIS on region datasets when --thresholds is not given:
#: 24 values spaced geometrically from 0.003 to 1 (the same sweep as bench/bench_quality_bsds.py).
DEFAULT_REGION_SWEEP = tuple(float(f"{0.003 * (1 / 0.003) ** (k / 23):.4g}") for k in range(24))


#: Where each evaluation set is published (none is shipped: their terms do not allow it).
DATA_SOURCES = {
    "bsds500": "the BSDS500 page of the Berkeley vision group "
               "(https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/resources.html)",
    "camvid": "the CamVid 480x360 release with val/ and valannot/ folders (the SegNet tutorial's CamVid folder)",
    "cocostuff27": "COCO-Stuff (https://github.com/nightrome/cocostuff)",
    "cityscapes": "https://www.cityscapes-dataset.com (free registration)",
}


def threshold_list(text: str):
    """``--thresholds``: comma-separated positive numbers, or ``none`` (an empty list: no sweep)."""
    if text == "none":
        return []
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--thresholds takes comma-separated numbers or 'none', got {text!r}") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"--thresholds needs positive numbers, got {text!r}")
    return values


def register(subparsers) -> None:
    from walkcut.eval.datasets import DATASETS

    p = subparsers.add_parser(
        "eval", help="score segmentation on BSDS500 / CamVid / COCO-Stuff-27 / Cityscapes",
        description="Segment every image of an evaluation set and score it: Covering / PRI / VoI (default "
                    "rule, and ODS / OIS over a threshold sweep) on bsds500; Hungarian-matched mIoU and "
                    "pixel accuracy on camvid, cocostuff27 and cityscapes.")
    p.add_argument("dataset", choices=DATASETS, help="evaluation set: " + ", ".join(DATASETS))
    p.add_argument("--root", default=None,
                   help="dataset folder (default: $WALKCUT_DATA/DATASET, else ../shared/data/DATASET)")
    p.add_argument("--split", default="val", help="split (default: val)")
    add_pixel_limit_argument(p)
    add_source_arguments(p)
    add_cut_arguments(p)
    p.add_argument("--thresholds", type=threshold_list, default=None,
                   help="constant thresholds of the ODS/OIS sweep, comma-separated, or 'none' (default: 24 "
                        "values from 0.003 to 1, geometric, on bsds500; none on the semantic sets)")
    p.add_argument("--limit", type=positive_int, default=None, help="first N images only")
    p.add_argument("--json", type=output_file(), default=None, metavar="OUT.json",
                   help="write summary + per-image numbers as JSON")
    # Not --grid-*: --grid is the graph resolution, and options must not share a prefix.
    p.add_argument("--gallery", type=output_file(".png"), default=None, metavar="PNG",
                   help="write a picture of the best and worst images (image | truth | segments)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --json / --gallery file (never a file of the dataset)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def build_segment_fn(args):
    """``segment(image) -> hierarchy_like`` for the parsed arguments (the walkcut Segmenter)."""
    from walkcut.eval.evaluate import walkcut_segment_fn

    spec = source_spec(args)
    return walkcut_segment_fn(spec, **cut_options(args, spec))


def run(args) -> int:
    from walkcut.eval.datasets import load_dataset
    from walkcut.eval.evaluate import evaluate

    from walkcut.eval.datasets import DatasetLayoutError
    from walkcut.outputs import check_outputs, refuse_inputs_as_outputs

    outputs = [(args.json, "--json"), (args.gallery, "--gallery")]
    check_outputs(outputs, overwrite=args.overwrite)  # before any work: the output policy

    from walkcut.eval.datasets import default_data_root

    root = Path(args.root) if args.root is not None else default_data_root() / args.dataset
    if not root.is_dir():
        given = "--root" if args.root is not None else ("$WALKCUT_DATA" if os.environ.get("WALKCUT_DATA")
                                                        else "the default")
        raise UsageError(f"{args.dataset}: no dataset at {root} ({given}); get it from {DATA_SOURCES[args.dataset]}, "
                         f"then give --root DIR (that folder) or set WALKCUT_DATA to the folder holding {args.dataset}/")
    try:
        ds = load_dataset(args.dataset, args.root, split=args.split, limit=args.limit)
    except (DatasetLayoutError, ValueError) as exc:
        # The layout description spans lines; the policy prints one.
        raise UsageError(" ".join(str(exc).split())) from exc
    refuse_inputs_as_outputs([p for item in ds.items for p in item[1:]], [p for p, _ in outputs if p is not None])
    thresholds = args.thresholds
    if thresholds is None:
        thresholds = list(DEFAULT_REGION_SWEEP) if ds.protocol == "regions" else None
    thresholds = thresholds or None
    segment_one = build_segment_fn(args)
    done = [0]

    def segment(image):
        result = segment_one(image)
        done[0] += 1
        return result

    try:
        report = evaluate(ds, segment, thresholds=thresholds, progress=not args.no_progress)
    except KeyboardInterrupt as exc:
        what = "interrupted by SIGTERM" if isinstance(exc, Terminated) else "interrupted"
        written = " and nothing was written (--json and --gallery are written at the end)" if (
            args.json or args.gallery) else ""
        note(f"eval {what} after segmenting {done[0]} of {plural(len(ds), 'image')}: no scores{written}")
        return EXIT_INTERRUPTED
    print(report.table())
    if args.json:
        print(f"json: {report.write_json(args.json)}")
    if args.gallery:
        print(f"gallery: {report.write_grid(args.gallery)}")
    return 0
