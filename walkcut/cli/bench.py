"""``walkcut bench``: stage timings of the segmentation pipeline, and the cuts against a dense reference.

Stages: ``preprocess`` + ``engine`` (with ``--engine``) or ``source`` (the pixel graph), ``cuts``,
``upsample`` and ``video encode`` (overlay drawn and written to an MP4 frame). Each is run
``--warmup`` times, then ``--runs`` times; the table gives median and p90 in milliseconds, with the
machine, backend, precision and the model file's SHA-256 prefix. ``--json`` writes the same numbers.

``--compare-dense`` times the cutting stage alone against :func:`walkcut.eval.reference.dense_recursive_ncut`
(one dense ``eigh`` per node, 100-threshold split search) on well-separated synthetic attention graphs,
and checks that both give the same partition.

``--compare-methods`` times the two cut methods (``fast``, the default, and ``reference``, the v0.1
algorithm) on the image's own graph from the chosen source, and reports the adjusted Rand index of
their labels: how much the fast method saves on this machine, and whether it cuts alike.
"""

from __future__ import annotations

import hashlib
import json
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from walkcut import __version__
from walkcut.cli.args import (
    add_cut_arguments,
    add_pixel_limit_argument,
    add_source_arguments,
    cut_options,
    non_negative_int,
    output_file,
    positive_int,
    source_spec,
)
from walkcut.runtime.defaults import VIDEO_MAX_SEGMENTS
from walkcut.runtime.draw import overlay
from walkcut.runtime.imageio import atomic_write_bytes, read_image
from walkcut.runtime.segmenter import Segmenter


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def file_hash(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def stats_ms(seconds: list[float]) -> dict:
    a = 1e3 * np.asarray(seconds)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)), "runs": int(a.size)}


def synthetic_scene(h: int = 360, w: int = 480, seed: int = 0) -> np.ndarray:
    """A deterministic test picture (coloured regions + noise) when no image is given."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    seeds = rng.uniform(0, 1, (8, 2)) * (h, w)
    region = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, axis=2)
    colors = rng.integers(30, 225, (8, 3))
    noise = rng.normal(0, 8, (h, w, 3))
    return np.clip(colors[region] + noise, 0, 255).astype(np.uint8)


def bench_pipeline(image: np.ndarray, source, options: dict, *, runs: int, warmup: int) -> dict:
    seg = Segmenter(source)
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        writer = cv2.VideoWriter(str(Path(tmp) / "bench.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25.0,
                                 (image.shape[1], image.shape[0]))
        try:
            for i in range(warmup + runs):
                seg.set_image(image)
                result = seg.segment(**options)
                t0 = time.perf_counter()
                frame = overlay(image, result.labels)
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                encode = time.perf_counter() - t0
                if i < warmup:
                    continue
                t = dict(result.timings)
                if "engine" in t:
                    t.pop("source", None)
                t["video encode"] = encode
                t["total"] = sum(t.values())
                for k, v in t.items():
                    times.setdefault(k, []).append(v)
        finally:
            writer.release()
    return {"stages": {k: stats_ms(v) for k, v in times.items()}, "segments": result.n_segments}


#: Stages of one video frame, in pipeline order (``walkcut bench --frame-budget``).
FRAME_STAGES = ("decode", "source", "  contour term", "cuts", "upsample", "track", "draw", "encode")


class _Laps:
    """Consecutive (wall, process CPU) intervals by name: ``lap(name)`` closes the one since the last."""

    def __init__(self) -> None:
        self.times: dict[str, tuple[float, float]] = {}
        self._mark = (time.perf_counter(), time.process_time())

    def lap(self, name: str) -> None:
        now = (time.perf_counter(), time.process_time())
        self.times[name] = (now[0] - self._mark[0], now[1] - self._mark[1])
        self._mark = now


def _pan(image: np.ndarray, size: tuple[int, int], frames: int) -> list[np.ndarray]:
    """``frames`` BGR pictures of ``image`` at ``size = (W, H)``, panning 2 px per frame (a real
    clip's frames differ, so the warm start and the encoder see motion)."""
    w, h = size
    base = cv2.resize(image, (w + 2 * frames, h), interpolation=cv2.INTER_AREA)
    return [cv2.cvtColor(np.ascontiguousarray(base[:, 2 * i : 2 * i + w]), cv2.COLOR_RGB2BGR) for i in range(frames)]


def bench_frame_budget(image: np.ndarray, spec, options: dict, *, sizes, runs: int, warmup: int) -> dict:
    """Time every stage of a ``walkcut video`` frame on one core, as its pipeline runs them.

    A short mp4v clip panning over ``image`` is written at each size; each frame is then decoded
    (and converted to RGB), segmented by the video worker's own Segmenter (the source, with its
    contour term timed alone as well, the cuts and the upsampling, at the video label side),
    tracked, drawn and encoded. One BLAS and one OpenCV thread. Returns, per size and stage, the
    median and p90 wall time and the median CPU time of the process (OpenCV's FFmpeg decodes and
    encodes in threads of its own) in milliseconds; under load the CPU time is the steadier number.
    """
    from threadpoolctl import threadpool_limits

    from walkcut.runtime.defaults import VIDEO_LABEL_SIDE
    from walkcut.runtime.segmenter import shrink_image
    from walkcut.runtime.sources.pixels import PixelSource, contour_strengths, neighbour_pairs
    from walkcut.runtime.video.pipeline import ID_COLORS
    from walkcut.runtime.video.tracking import IdTracker
    from walkcut.runtime.video.workers import SegmenterSpec, build_video_segmenter

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    out = {}
    try:
        with threadpool_limits(limits=1), tempfile.TemporaryDirectory() as tmp:
            for w, h in sizes:
                clip = str(Path(tmp) / f"clip_{w}x{h}.mp4")
                writer = cv2.VideoWriter(clip, cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
                for frame in _pan(image, (w, h), warmup + runs):
                    writer.write(frame)
                writer.release()
                segmenter = build_video_segmenter(SegmenterSpec(source=spec, label_side=VIDEO_LABEL_SIDE))
                source = segmenter.source
                pairs = (neighbour_pairs(source.grid, source.effective_radius)
                         if isinstance(source, PixelSource) and source.contour_scale is not None else None)
                tracker = IdTracker()
                cap = cv2.VideoCapture(clip)
                encoder = cv2.VideoWriter(str(Path(tmp) / "out.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
                wall: dict[str, list[float]] = {k: [] for k in FRAME_STAGES}
                cpu: dict[str, list[float]] = {k: [] for k in FRAME_STAGES}
                segments = []
                try:
                    for i in range(warmup + runs):
                        laps = _Laps()
                        lap, t = laps.lap, laps.times
                        ok, bgr = cap.read()
                        if not ok:
                            raise RuntimeError(f"OpenCV could not decode frame {i} of its own {w}x{h} mp4v clip")
                        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                        lap("decode")
                        if pairs is not None:
                            contour_strengths(shrink_image(rgb, segmenter.max_source_side), source.grid, pairs)
                            lap("  contour term")
                        segmenter.set_image(rgb)
                        lap("source")
                        result = segmenter.segment(**options)
                        lap("segment")
                        ids = tracker.update(result.labels)
                        lap("track")
                        picture = cv2.cvtColor(overlay(rgb, ids, colors=ID_COLORS), cv2.COLOR_RGB2BGR)
                        lap("draw")
                        encoder.write(picture)
                        lap("encode")
                        if i < warmup:
                            continue
                        segments.append(result.n_segments)
                        seg_wall, seg_cpu = t.pop("segment")
                        for name in ("cuts", "upsample"):  # the segment CPU time split like its wall time
                            seconds = result.timings[name]
                            t[name] = (seconds, seg_cpu * seconds / max(seg_wall, 1e-12))
                        for name, (a, b) in t.items():
                            wall[name].append(a)
                            cpu[name].append(b)
                finally:
                    cap.release()
                    encoder.release()
                stages = {}
                for name in FRAME_STAGES:
                    if wall[name]:
                        stages[name] = {**stats_ms(wall[name]), "cpu_median_ms": float(1e3 * np.median(cpu[name]))}
                totals = {"total": [sum(cpu[k][j] for k in FRAME_STAGES if k in stages and not k.startswith(" "))
                                    for j in range(runs)]}
                out[f"{w}x{h}"] = {"stages": stages, "segments_median": float(np.median(segments)),
                                   "cpu_total_median_ms": float(1e3 * np.median(totals["total"]))}
    finally:
        cv2.setNumThreads(threads)
    return out


def bench_compare_dense(*, runs: int, grids=(16, 24, 32), tau: float = 0.3) -> list[dict]:
    from walkcut.eval.reference import dense_recursive_ncut, synthetic_attention
    from walkcut.runtime import cut_affinity
    from walkcut.runtime.cuts.graph import affinity

    rows = []
    for R in grids:
        P = synthetic_attention(R, k=6, sharpness=12.0, seed=R)
        W = np.asarray(affinity(P, mode="walk"), dtype=np.float64)
        t_ref, t_fast = [], []
        for _ in range(runs):
            t = time.perf_counter()
            ref = dense_recursive_ncut(W, tau, min_size=max(1, W.shape[0] // 256))
            t_ref.append(time.perf_counter() - t)
            t = time.perf_counter()
            fast = cut_affinity(W, threshold=tau, max_segments=64).labels
            t_fast.append(time.perf_counter() - t)
        pairs = np.unique(np.stack([ref, fast]), axis=1).shape[1]
        same = pairs == np.unique(ref).size == np.unique(fast).size
        rows.append({"n": R * R, "segments_reference": int(ref.max() + 1), "segments_walkcut": int(fast.max() + 1),
                     "same_partition": bool(same), "reference_ms": stats_ms(t_ref)["median_ms"],
                     "walkcut_ms": stats_ms(t_fast)["median_ms"],
                     "speedup": float(np.median(t_ref) / np.median(t_fast))})
    return rows


def bench_compare_methods(transition, options: dict, *, runs: int, warmup: int) -> dict:
    """Median / p90 time of the whole cut with each method on one transition, and their agreement."""
    from walkcut.runtime.cuts import cut_transition_matrix

    from walkcut.eval.metrics import adjusted_rand_index, contingency_table

    opts = {k: v for k, v in options.items() if v is not None}
    times, labels = {}, {}
    for method in ("fast", "reference"):
        for _ in range(warmup):
            cut_transition_matrix(transition.P, stationary=transition.stationary, method=method, **opts)
        ts = []
        for _ in range(runs):
            t = time.perf_counter()
            result = cut_transition_matrix(transition.P, stationary=transition.stationary, method=method, **opts)
            ts.append(time.perf_counter() - t)
        times[method] = stats_ms(ts)
        labels[method] = result.labels
    return {
        "n": int(transition.P.shape[0]),
        "methods": times,
        "speedup": times["reference"]["median_ms"] / times["fast"]["median_ms"],
        "ari": float(adjusted_rand_index(contingency_table(labels["fast"], labels["reference"]))),
        "segments": {k: int(v.max() + 1) for k, v in labels.items()},
    }


def register(sub) -> None:
    p = sub.add_parser("bench", help="time each pipeline stage (median / p90), or the cuts vs a dense reference",
                       description="Time each stage of the segmentation pipeline (median and p90 in ms, with "
                                   "machine, backend and model hash), or, with --compare-dense, the cuts "
                                   "against a dense-eigh reference on synthetic graphs.")
    p.add_argument("image", nargs="?", type=Path, default=None,
                   help="image to time on (default: a synthetic 480x360 scene)")
    add_pixel_limit_argument(p)
    add_source_arguments(p)
    add_cut_arguments(p)
    p.add_argument("--runs", type=positive_int, default=10, help="timed runs per stage (default: 10)")
    p.add_argument("--warmup", type=non_negative_int, default=2, help="untimed runs first (default: 2)")
    p.add_argument("--compare-dense", action="store_true",
                   help="time the cuts against the dense-eigh reference on synthetic graphs instead")
    p.add_argument("--compare-methods", action="store_true",
                   help="time the fast cut method (default) against the reference method on this image's "
                        "graph, with the adjusted Rand index of their labels")
    p.add_argument("--frame-budget", action="store_true",
                   help="time each stage of a `walkcut video` frame (decode, source and its contour term, cuts, "
                        "upsample, track, draw, encode) on one core at 480x360 and 1280x720")
    p.add_argument("--json", type=output_file(), default=None, help="also write the numbers as JSON here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file (never the input image)")
    p.set_defaults(func=run)


def run(args) -> int:
    from walkcut.outputs import check_output

    if args.json is not None:  # the output policy, before any work
        check_output(args.json, overwrite=args.overwrite, flag="--json", inputs=[args.image, args.engine])
    info = {"walkcut": __version__, "cpu": cpu_name(), "python": platform.python_version()}
    if args.compare_dense:
        rows = bench_compare_dense(runs=args.runs)
        report = {**info, "compare_dense": rows}
        print(f"cuts vs dense-eigh reference ({info['cpu']})")
        print("| n | reference ms | walkcut ms | speed-up | same partition | segments (ref / walkcut) |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['n']} | {r['reference_ms']:.1f} | {r['walkcut_ms']:.1f} | {r['speedup']:.0f}x | "
                  f"{'yes' if r['same_partition'] else 'NO'} | {r['segments_reference']} / {r['segments_walkcut']} |")
        ok = all(r["same_partition"] for r in rows)
    elif args.frame_budget:
        image = read_image(args.image) if args.image else synthetic_scene()
        spec = source_spec(args)
        args.command_cut_defaults = {"max_segments": VIDEO_MAX_SEGMENTS}  # the video command's tree
        options = cut_options(args, spec)
        res = bench_frame_budget(image, spec, options, sizes=((480, 360), (1280, 720)),
                                 runs=args.runs, warmup=args.warmup)
        report = {**info, "image": str(args.image or "synthetic 480x360"), "cut_options": options, "frame_budget": res}
        print(f"video frame budget on one core (walkcut video's defaults unless flags say otherwise); "
              f"image={report['image']}; cpu={info['cpu']}")
        print("| stage | " + " | ".join(f"{size} median / p90 ms (CPU ms)" for size in res) + " |")
        print("|---|" + "---|" * len(res))
        for name in FRAME_STAGES:
            cells = [res[size]["stages"].get(name) for size in res]
            if any(cells):
                print(f"| {name} | " + " | ".join(f"{c['median_ms']:.1f} / {c['p90_ms']:.1f} ({c['cpu_median_ms']:.1f})"
                                                  if c else "-" for c in cells) + " |")
        print("| frame, CPU (contour term counted in source) | "
              + " | ".join(f"{r['cpu_total_median_ms']:.1f}" for r in res.values()) + " |")
        print("segments (median): " + ", ".join(f"{size} {r['segments_median']:.0f}" for size, r in res.items()))
        ok = True
    elif args.compare_methods:
        image = read_image(args.image) if args.image else synthetic_scene()
        spec = source_spec(args)
        transition = Segmenter(spec.open()).set_image(image).transition
        options = {k: v for k, v in cut_options(args, spec).items() if k != "upsample"}  # cuts only
        res = bench_compare_methods(transition, options, runs=args.runs, warmup=args.warmup)
        report = {**info, "image": str(args.image or "synthetic 480x360"), "compare_methods": res}
        kind = "sparse" if hasattr(transition.P, "tocsr") else "dense"
        print(f"cut methods on {report['image']}: n = {res['n']} ({kind} graph); cpu={info['cpu']}")
        print("| method | median ms | p90 ms | segments |")
        print("|---|---|---|---|")
        for method, t in res["methods"].items():
            print(f"| {method} | {t['median_ms']:.1f} | {t['p90_ms']:.1f} | {res['segments'][method]} |")
        print(f"fast is {res['speedup']:.1f}x faster; adjusted Rand index fast vs reference {res['ari']:.3f}")
        ok = True
    else:
        image = read_image(args.image) if args.image else synthetic_scene()
        spec = source_spec(args)
        source = spec.open()
        desc = source.describe() if hasattr(source, "describe") else {"source": "pixels", "grid": source.grid}
        if args.engine:
            desc["model_sha256"] = file_hash(args.engine)
        res = bench_pipeline(image, source, cut_options(args, spec), runs=args.runs, warmup=args.warmup)
        report = {**info, **desc, "image": str(args.image or "synthetic 480x360"),
                  "image_shape": list(image.shape), **res}
        print(" ".join(f"{k}={v}" for k, v in desc.items()) + f"; cpu={info['cpu']}; image={report['image']} "
              f"{image.shape[1]}x{image.shape[0]}; {res['segments']} segments")
        print("| stage | median ms | p90 ms |")
        print("|---|---|---|")
        for name, s in res["stages"].items():
            print(f"| {name} | {s['median_ms']:.1f} | {s['p90_ms']:.1f} |")
        ok = True
    if args.json:
        atomic_write_bytes(args.json, json.dumps(report, indent=2).encode())
    return 0 if ok else 1
