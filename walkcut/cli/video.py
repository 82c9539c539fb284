"""``walkcut video INPUT --out OUT.mp4``: segment a video file, camera, stream or ROS bag with stable ids.

The input and output kinds choose the frame reader and the writer (a video file, camera or stream:
:mod:`walkcut.runtime.video.io`; a ROS bag: :mod:`walkcut.runtime.video.bags`); the pipeline between
them is the same for every kind.
"""

from __future__ import annotations

import argparse
import dataclasses

import logging
import shutil
import signal
import sys
import threading
from pathlib import Path

from walkcut.cli.args import (
    add_cut_arguments,
    add_source_arguments,
    cut_options,
    finite_number,
    non_negative_int,
    output_dir,
    output_file,
    positive_int,
    source_spec,
)
from walkcut.cli.errors import (
    EXIT_INTERRUPTED,
    CommandError,
    UsageError,
    first_line,
    is_disk_full,
    note,
    plural,
)
from walkcut.cli.rerun_option import add_rerun_argument, check_rerun, rerun_log
from walkcut.runtime.defaults import VIDEO_LABEL_SIDE, VIDEO_MAX_SEGMENTS

logger = logging.getLogger(__name__)

#: Codec written for each accepted output extension (the file name is never changed).
CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
#: Bag files walkcut reads but does not write (it writes ROS 2 bags in MCAP storage).
NOT_WRITTEN_BAGS = (".bag", ".db3")


def output_path(text: str) -> Path:
    """``type=`` for --out: a video file (.mp4, .avi), a ROS 2 bag file (.mcap) or a bag folder (a name
    without a suffix)."""
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix in CODECS:
        return output_file(*CODECS)(text)
    if suffix == ".mcap":
        return output_file(".mcap")(text)
    if suffix in NOT_WRITTEN_BAGS:
        raise argparse.ArgumentTypeError(f"{text}: walkcut writes ROS 2 bags in MCAP storage; give a bag folder "
                                          f"name (no suffix) or NAME.mcap")
    if suffix and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: the output must end in .mp4, .avi or .mcap, or name a bag "
                                          f"folder (no suffix)")
    return output_dir(text)


def is_bag_output(path: Path | str | None) -> bool:
    return path is not None and Path(path).suffix.lower() not in CODECS


def _milliseconds(text: str) -> float:
    return finite_number(text, positive=True, expected="a positive number of milliseconds")


def register(sub) -> None:
    p = sub.add_parser("video", help="segment a video file, camera, stream or ROS bag (consistent ids)",
                       description="Segment every frame of a video file, camera index, stream URL or ROS bag "
                                   "image topic; segments keep their id and colour across frames. Writes an "
                                   "overlay video, or from a bag a ROS 2 bag of ids and overlays.")
    p.add_argument("input", metavar="INPUT",
                   help="video file, camera index (0, 1, ...), stream URL, or ROS bag (a ROS 2 bag folder, "
                        ".mcap, .db3, or ROS 1 .bag; needs the ros extra)")
    p.add_argument("--out", "-o", type=output_path, default=None,
                   help="output video: .mp4 (mp4v codec) or .avi (MJPG); or, from a bag, a ROS 2 bag (MCAP "
                        "storage): a folder name or NAME.mcap, with <topic>/walkcut/labels (mono16 ids) and "
                        "<topic>/walkcut/overlay (JPEG) per frame; optional")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out video or bag (never the input) or --rerun recording, and "
                        "clear the frames an earlier run wrote in --labels-dir")
    p.add_argument("--topic", default=None,
                   help="bag input: the image topic (sensor_msgs/Image or CompressedImage); without it the "
                        "error lists the bag's image topics")
    p.add_argument("--copy-topics", nargs="*", default=None, metavar="TOPIC",
                   help="bag output: also copy these input topics (no names: every topic)")
    p.add_argument("--labels-dir", type=output_dir, default=None,
                   help="also write each frame's ids as uint16 PNG (NNNNNN.png; the folder is marked with "
                        ".walkcut-frames.json, and frames of another run are cleared only with --overwrite)")
    p.add_argument("--show", action="store_true", help="show the overlay with FPS (when a display exists)")
    add_rerun_argument(p)
    p.add_argument("--live", action="store_true",
                   help="treat INPUT as live: drop frames when segmenting is slower than the input "
                        "(default for cameras and URLs; files never drop frames otherwise)")
    p.add_argument("--max-latency", type=_milliseconds, default=None, metavar="MS",
                   help="live input: keep only the newest frame waiting and drop any frame older than MS "
                        "milliseconds when work on it would start (implies --live); drops are reported")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="segmenting workers (default: one per available core; with --engine, one per "
                        "core besides the engine stage; more than the cores are capped, with a note)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--processes", dest="processes", action="store_const", const=True, default=None,
                      help="run each worker in its own process (default when 2 or more cores are available: "
                           "threads share one interpreter lock; except that by default the first worker "
                           "runs in this process)")
    kind.add_argument("--threads", dest="processes", action="store_const", const=False,
                      help="run the workers as threads of this process")
    p.add_argument("--queue", type=positive_int, default=4, help="frames buffered between stages (default: 4)")
    p.add_argument("--label-side", type=non_negative_int, default=VIDEO_LABEL_SIDE,
                   help=f"longest side at which labels follow image edges, then enlarged (default: "
                        f"{VIDEO_LABEL_SIDE}; 0 = full resolution)")
    p.add_argument("--max-frames", type=positive_int, default=None, help="stop after this many frames")
    p.add_argument("--no-track", action="store_true", help="independent per-frame ids (for comparison)")
    add_source_arguments(p)
    add_cut_arguments(p, max_segments=VIDEO_MAX_SEGMENTS)
    p.set_defaults(func=run)


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
    from walkcut.runtime.sources.backends import default_threads
    from walkcut.runtime.video.bags import BagError, BagReader, BagWriter, is_bag
    from walkcut.runtime.video.workers import available_cores

    if args.out is None and args.labels_dir is None and not args.show and args.rerun is None:
        raise UsageError("nothing to write: give --out, --labels-dir, --rerun or --show")
    bag_in, bag_out = is_bag(args.input), is_bag_output(args.out)
    check_bag_arguments(args, bag_in, bag_out)
    check_outputs(args)
    check_rerun(args, inputs=[args.input] if Path(args.input).exists() else [])
    live = True if args.live or args.max_latency is not None else None
    try:
        if bag_in:
            reader = BagReader(args.input, args.topic, live=bool(live))
        else:
            spec = VideoInput.parse(args.input, live=live)
            reader = VideoReader(spec)
    except (VideoInputError, BagError) as exc:
        raise CommandError(str(exc), code=2) from exc
    try:
        if not bag_in:
            check_is_video(spec, reader)
        # The source opens in the parent: model problems are reported before any work, and an
        # engine runs here, in the pipeline's model stage, one call in flight ahead of the cut workers.
        engine = bool(args.engine)
        plan = plan_workers(engine=engine, workers=args.workers, processes=args.processes)
        if plan.capped_from is not None:
            note(f"--workers {plan.capped_from} is more than the {plural(plan.workers, 'core')} here: "
                 f"using {plan.workers}")
        walk_spec = source_spec(args)
        if engine and plan.processes and walk_spec.threads is None and default_threads() is None:
            # The model stage gets the cores the worker processes leave: its inference threads spin
            # while they wait, and on a core a worker needs they halve the frame rate (ViT int8 on
            # 2 cores: 4.7 FPS with onnxruntime's choice of 2 threads, 8.2 with 1; bench/RESULTS.md).
            walk_spec = dataclasses.replace(walk_spec, threads=max(1, available_cores() - plan.workers))
        source = walk_spec.open()
        options = cut_options(args, walk_spec)
    except BaseException:
        reader.close()
        raise
    limit_blas_threads(1)  # parallel across frames, not inside tiny matrix products
    segmenter_spec = SegmenterSpec(source=walk_spec, label_side=args.label_side, handed=engine)
    make_segmenter = worker_factory(segmenter_spec, processes=plan.processes, source=source,
                                    in_process=plan.in_process)
    show = args.show and display_available()
    if args.show and not show:
        logger.warning("--show: no display (or an OpenCV build without GUI); running without a window")
    pipeline = VideoPipeline(make_segmenter, cut_options=options, workers=plan.workers,
                             queue_size=args.queue, track=not args.no_track, engine=source if engine else None,
                             max_latency=None if args.max_latency is None else args.max_latency / 1000.0)
    pipeline.describe_workers = plan.reason
    if args.labels_dir is not None:  # every check passed: clear our earlier frames, mark the folder
        from walkcut.outputs import prepare_frames_dir

        prepare_frames_dir(args.labels_dir, overwrite=args.overwrite, source=str(args.input))
    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_term(signum, frame):
            raise Terminated()
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        with reader:
            if args.out is not None:
                writer = (BagWriter(args.out, args.topic) if bag_out else
                          VideoWriter(args.out, reader.fps, reader.size, fourcc=CODECS[args.out.suffix.lower()]))
                with writer:
                    if args.copy_topics is not None:
                        try:
                            writer.copy_from(reader, args.copy_topics)
                        except BagError as exc:
                            raise CommandError(str(exc), code=2) from exc
                    summary = _run(pipeline, reader, writer, args, show)
                summary.output = str(writer.path) if writer.frames else None
                if summary.output is not None and not bag_out:
                    check_written(writer.path, writer.frames)
            else:
                summary = _run(pipeline, reader, None, args, show)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    error_text = None
    if summary.stop_reason.startswith("error: "):
        error_text = first_line(summary.error) if summary.error is not None else summary.stop_reason[7:]
    if error_text is not None:
        summary.stop_reason = "stopped by an error"  # the error itself is the one line below
    for line in summary.lines():
        print(line, file=sys.stderr)
    if summary.frames_read == 0 and bag_in:
        raise CommandError(f"{args.input}: no message of {args.topic} could be decoded; nothing was written")
    if summary.frames_read == 0:
        raise CommandError(f"{args.input}: no frames could be decoded (not a video, or an empty one); "
                           f"nothing was written")
    if args.out is not None and summary.output and Path(summary.output) != args.out:
        raise CommandError(f"the video was written as {summary.output}, not {args.out}: OpenCV could not "
                           f"use the {CODECS[args.out.suffix.lower()]} codec; give --out NAME.avi")
    if summary.stop_reason in ("interrupted", "terminated"):
        return EXIT_INTERRUPTED
    if error_text is not None:
        if is_disk_full(summary.error):
            raise CommandError(f"disk full: stopped after {plural(summary.frames_written, 'frame')} (those "
                               f"are complete); free space and run again")
        raise CommandError(error_text)
    if summary.frames_written == 0 and (args.out is not None or args.labels_dir is not None
                                        or args.rerun is not None):
        why = f" ({', '.join(f'{n} {k}' for k, n in summary.drops.items() if n)})" if summary.dropped else ""
        raise CommandError(f"{args.input}: {plural(summary.frames_read, 'frame')} read, none written: every frame "
                           f"was dropped{why}; nothing was written" + (
                               "; drop --max-latency for files" if args.max_latency is not None else ""))
    if summary.failed:  # bag messages that could not be decoded: named in the summary above
        raise CommandError(f"{plural(len(summary.failed), 'frame')} of {args.topic} could not be decoded and "
                           f"{'was' if len(summary.failed) == 1 else 'were'} skipped (named above); "
                           f"{plural(summary.frames_written, 'frame')} written")
    expected = reader.frame_count
    if (expected is not None and not bag_in and spec.is_file and summary.stop_reason == "end of stream"
            and (args.max_frames is None or summary.frames_read < args.max_frames)
            and summary.frames_read < expected - max(1, expected // 100)):
        raise CommandError(f"{args.input}: only {summary.frames_read} of the {expected} frames its container "
                           f"announces could be decoded (the file is truncated or damaged); the output holds "
                           f"those {summary.frames_read}")
    return 0


def check_bag_arguments(args, bag_in: bool, bag_out: bool) -> None:
    """Options that need a bag input or output (usage errors)."""
    if not bag_in and args.topic is not None:
        raise UsageError(f"--topic: {args.input} is not a ROS bag (a folder with metadata.yaml, .mcap, .db3 or "
                         f".bag)")
    if bag_out and not bag_in:
        raise UsageError(f"--out {args.out}: a bag output needs a ROS bag input (its stamps and frame ids); "
                         f"give --out NAME.mp4")
    if args.copy_topics is not None and not bag_out:
        raise UsageError("--copy-topics needs a bag --out (a folder name or NAME.mcap)")


#: Free bytes below which a short video file is put down to a full disk.
NEARLY_FULL = 1 << 20


def check_written(path: Path, frames: int) -> None:
    """Refuse a finished video whose container holds fewer frames than were written, and remove it.

    OpenCV's writer reports no error when the disk fills up: the file it leaves has no index (AVI
    announces 0 frames) or does not open at all (MP4 without its moov atom)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT) if cap.isOpened() else 0.0
    cap.release()
    if count >= frames - max(1, frames // 100):
        return
    held = f"{int(count)} of {frames}" if count > 0 else f"none of the {frames}"
    Path(path).unlink(missing_ok=True)
    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        free = None
    if free is not None and free < NEARLY_FULL:
        raise CommandError(f"disk full writing {path}: the video holds {held} frames and was removed; free space "
                           f"and run again")
    raise CommandError(f"{path}: the finished video holds {held} frames written (the writer failed); it was removed")


def check_outputs(args) -> None:
    """The output policy (:mod:`walkcut.outputs`), before any frame is decoded: an existing --out
    only with --overwrite, never the input itself; --labels-dir frames of an earlier run only with
    --overwrite (and only walkcut's own, see :func:`walkcut.outputs.check_frames_dir`). Also refuses
    a codec that OpenCV cannot write here."""
    from walkcut.outputs import check_frames_dir, check_output

    inputs = [args.input] if Path(args.input).exists() else []
    if args.out is not None and is_bag_output(args.out) and args.out.suffix.lower() != ".mcap":
        check_bag_folder(args.out, overwrite=args.overwrite, inputs=inputs)
    elif args.out is not None:
        check_output(args.out, overwrite=args.overwrite, flag="--out", inputs=inputs)
    if args.labels_dir is not None:
        check_frames_dir(args.labels_dir, overwrite=args.overwrite)
    if args.out is not None and args.out.suffix.lower() in CODECS and not codec_available(args.out.suffix.lower()):
        other = ".avi" if args.out.suffix.lower() == ".mp4" else ".mp4"
        raise UsageError(f"this OpenCV build cannot write {args.out.suffix} ({CODECS[args.out.suffix.lower()]}); "
                         f"give --out {args.out.with_suffix(other)}")


def check_bag_folder(path: Path, *, overwrite: bool, inputs) -> None:
    """The output policy for a bag folder (``walkcut.outputs.check_output`` is for files): never an
    input nor a folder holding one; an existing one only with --overwrite, and only if it is a bag."""
    from walkcut.outputs import OutputError, same_file, shown

    for item in inputs:
        if same_file(path, item) or path.resolve() in Path(item).resolve().parents:
            raise OutputError(f"--out {shown(path)} would replace the input {shown(item)}; walkcut never replaces "
                              f"an input, --overwrite or not: choose another --out")
    if path.is_dir() and not (path / "metadata.yaml").is_file() and any(path.iterdir()):
        raise OutputError(f"--out {shown(path)} is a folder that is not a ROS 2 bag (no metadata.yaml); walkcut "
                          f"replaces only a bag folder: choose another --out")
    if path.exists() and not overwrite:
        raise OutputError(f"{shown(path)} already exists; add --overwrite to replace it, or choose another --out")


#: What FFmpeg "decodes" from files that are not videos: text (its tty demuxer renders .txt files
#: as ANSI art). Images are refused by extension: they decode as one-frame videos.
NOT_VIDEO_CODECS = {"ansi": "a text file"}


def check_is_video(spec, reader) -> None:
    """Refuse inputs that OpenCV opens although they are not videos (usage error)."""
    import cv2

    from walkcut.inputs import IMAGE_EXTENSIONS

    if not isinstance(spec.target, str) or "://" in spec.target:
        return  # cameras and streams
    if Path(spec.target).suffix.lower() in IMAGE_EXTENSIONS:
        raise UsageError(f"{spec.target} is an image, not a video; use `walkcut segment {spec.target} --out DIR`")
    fourcc = int(reader.cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("latin-1").strip("\0 ").lower()
    if fourcc in NOT_VIDEO_CODECS:
        raise UsageError(f"{spec.target} is {NOT_VIDEO_CODECS[fourcc]}, not a video (OpenCV would render its "
                         f"characters as frames); give a video file, a camera index or a stream URL")


def codec_available(suffix: str) -> bool:
    """Whether OpenCV opens a writer for ``suffix`` with its codec (tried on a tiny temporary file)."""
    import tempfile

    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        probe = cv2.VideoWriter(str(Path(tmp) / f"probe{suffix}"), cv2.VideoWriter_fourcc(*CODECS[suffix]),
                                25.0, (64, 64))
        ok = probe.isOpened()
        probe.release()
    return ok


def _run(pipeline, reader, writer, args, show):
    from tqdm import tqdm

    from walkcut.runtime.video.pipeline import ID_COLORS
    from walkcut.runtime.video.stamps import StampedReader

    live = True if args.live or args.max_latency is not None else None
    total = reader.frame_count
    if args.max_frames is not None:
        total = min(total or args.max_frames, args.max_frames)
    # Frames, frame rate and elapsed time on a terminal only (a log file gets the summary alone).
    bar = tqdm(total=total, unit="frame", desc="video", disable=not sys.stderr.isatty(), leave=False,
               bar_format="{desc}: {n_fmt}" + ("/{total_fmt}" if total else "") + " frames, {rate_fmt}, {elapsed}")
    stamped = StampedReader(reader) if args.rerun is not None else None  # frame times for its timeline
    try:
        with rerun_log(args, timeline="frame", wrap=len(ID_COLORS), clock=stamped and stamped.pop) as log:
            summary = pipeline.run(stamped or reader, writer, live=live, labels_dir=args.labels_dir, show=show,
                                   max_frames=args.max_frames, on_frame=lambda index, ids, picture: bar.update(1),
                                   sinks=(log,) if log is not None else ())
    finally:
        bar.close()
    if log is not None:
        made = log.frames or log.target.path is None  # a file with no frame is not created
        print(f"rerun: {plural(log.frames, 'frame')}" + (f" -> {log.target}" if made else f"; {log.target} not created"),
              file=sys.stderr)
    return summary
