"""``walkcut video INPUT --out OUT.mp4``: segment a video file, camera or stream with stable ids."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
from pathlib import Path

from walkcut.cli.segment import add_cut_arguments, add_engine_arguments, cut_options, open_source

logger = logging.getLogger(__name__)

#: Video defaults differ from images: fewer leaves grown per frame keeps the cuts within a frame
#: budget (the automatic stopping rules rarely keep more than ~12 segments on street scenes).
VIDEO_MAX_SEGMENTS = 16
#: Boundary-aware upsampling runs at most at this side; larger frames get those labels enlarged by
#: nearest neighbour (boundaries within 2 px at 1280 x 720). Since the vote runs only along segment
#: borders (walkcut.runtime.upsample), a 480 x 360 frame is upsampled whole in a few ms.
VIDEO_LABEL_SIDE = 640


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of milliseconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of milliseconds, got {text!r}")
    return value


def register(sub) -> None:
    p = sub.add_parser("video", help="segment a video file, camera or stream (consistent ids)",
                       description="Segment every frame of a video file, camera index or stream URL; segments "
                                   "keep their id and colour across frames. Writes an overlay video.")
    p.add_argument("input", metavar="INPUT", help="video file, camera index (0, 1, ...) or stream URL")
    p.add_argument("--out", "-o", type=Path, default=None, help="output video (.mp4, mp4v codec); optional")
    p.add_argument("--source", choices=("pixels",), default="pixels",
                   help="random walk from the colour+position graph (default) unless --engine is given")
    p.add_argument("--labels-dir", type=Path, default=None, help="also write each frame's ids as uint16 PNG")
    p.add_argument("--show", action="store_true", help="show the overlay with FPS (when a display exists)")
    p.add_argument("--live", action="store_true",
                   help="treat INPUT as live: drop frames when segmenting is slower than the input "
                        "(default for cameras and URLs; files never drop frames otherwise)")
    p.add_argument("--max-latency", type=_milliseconds, default=None, metavar="MS",
                   help="live input: keep only the newest frame waiting and drop any frame older than MS "
                        "milliseconds when work on it would start (implies --live); drops are reported")
    p.add_argument("--workers", type=int, default=None,
                   help="segmenting workers (default: one per available core; with --engine, one per "
                        "core besides the engine stage)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--processes", dest="processes", action="store_const", const=True, default=None,
                      help="run each worker in its own process (default when 2 or more cores are available: "
                           "threads share one interpreter lock)")
    kind.add_argument("--threads", dest="processes", action="store_const", const=False,
                      help="run the workers as threads of this process")
    p.add_argument("--queue", type=int, default=4, help="frames buffered between stages (default: 4)")
    p.add_argument("--label-side", type=int, default=VIDEO_LABEL_SIDE,
                   help=f"longest side at which labels follow image edges, then enlarged (default: "
                        f"{VIDEO_LABEL_SIDE}; 0 = full resolution)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--no-track", action="store_true", help="independent per-frame ids (for comparison)")
    add_cut_arguments(p)
    add_engine_arguments(p)
    p.set_defaults(func=run, max_segments=VIDEO_MAX_SEGMENTS)


def run(args) -> int:
    from walkcut.runtime.video import (
        SegmenterSpec,
        Terminated,
        VideoInput,
        VideoInputError,
        VideoPipeline,
        VideoReader,
        VideoWriter,
        display_available,
        limit_blas_threads,
        plan_workers,
        worker_factory,
    )

    if (args.workers is not None and args.workers < 1) or args.queue < 1:
        print(f"walkcut: error: --workers and --queue must be >= 1, got {args.workers} and {args.queue}",
              file=sys.stderr)
        return 2
    if args.out is None and args.labels_dir is None and not args.show:
        print("walkcut: error: nothing to write: give --out, --labels-dir or --show", file=sys.stderr)
        return 2
    try:
        live = True if args.live or args.max_latency is not None else None
        spec = VideoInput.parse(args.input, live=live)
        reader = VideoReader(spec)
    except VideoInputError as exc:
        print(f"walkcut: error: {exc}", file=sys.stderr)
        return 2
    # The source opens in the parent: model problems are reported before any work, and an engine
    # runs here, in the pipeline's engine stage, one call in flight ahead of the cut workers.
    source = open_source(args)
    if source is None:
        reader.close()
        return 2
    limit_blas_threads(1)  # parallel across frames, not inside tiny matrix products
    engine = bool(args.engine)
    plan = plan_workers(engine=engine, workers=args.workers, processes=args.processes)
    segmenter_spec = SegmenterSpec(engine=str(args.engine) if engine else None, backend=args.backend,
                                   grid=args.grid, label_side=args.label_side, handed=engine)
    make_segmenter = worker_factory(segmenter_spec, processes=plan.processes, source=source)
    show = args.show and display_available()
    if args.show and not show:
        logger.warning("--show: no display (or an OpenCV build without GUI); running without a window")
    pipeline = VideoPipeline(make_segmenter, cut_options=cut_options(args), workers=plan.workers,
                             queue_size=args.queue, track=not args.no_track, engine=source if engine else None,
                             max_latency=None if args.max_latency is None else args.max_latency / 1000.0)
    pipeline.describe_workers = plan.reason
    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_term(signum, frame):
            raise Terminated()
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        with reader:
            if args.out is not None:
                with VideoWriter(args.out, reader.fps, reader.size) as writer:
                    summary = _run(pipeline, reader, writer, args, show)
                summary.output = str(writer.path) if writer.frames else None
            else:
                summary = _run(pipeline, reader, None, args, show)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    for line in summary.lines():
        print(line, file=sys.stderr)
    if summary.stop_reason.startswith("error"):
        return 1
    return 130 if summary.stop_reason in ("interrupted", "terminated") else 0


def _run(pipeline, reader, writer, args, show):
    live = True if args.live or args.max_latency is not None else None
    return pipeline.run(reader, writer, live=live, labels_dir=args.labels_dir, show=show,
                        max_frames=args.max_frames)
