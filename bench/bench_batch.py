"""Throughput of ``walkcut batch`` (local Ray) against one ``walkcut segment`` process.

Both commands run as subprocesses on the same images with the same options, one after the other in
the same run; wall time includes Python and (for batch) Ray start-up. The outputs are compared byte
for byte. Cases: the pixel source, and the tiny exported model as the engine source (built here from
the random tiny architecture, as the export tests do; needs the export extra).

    python bench/bench_batch.py                      # 201 images: BSDS500 val + CamVid val
    python bench/bench_batch.py --limit 20 --cases pixels
    python bench/bench_batch.py --limit 100 --cases pixels cluster --grid 64

``cluster``: the same batch joined to a multi-node local cluster (``ray.cluster_utils.Cluster``, one
CPU per node) of 1 and then 2 nodes, against the same ``walkcut segment`` run. Every run also reports
the CPU seconds of its whole process tree (the command, Ray's daemons and workers; /proc polled every
0.25 s), which a loaded machine inflates far less than wall time.

Prints machine, load averages, wall seconds, images/s, the ratio, and the per-stage medians read
from the manifest (the per-core costs the sizing in docs/batch.md starts from).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WALKCUT_DATA", REPO.parent / "shared" / "data"))
if not DATA.exists():
    DATA = Path("/work/shared/data")


def images(limit: int | None) -> list[Path]:
    found = sorted((DATA / "bsds500" / "images" / "val").glob("*.jpg")) + sorted((DATA / "camvid" / "val").glob("*.png"))
    if not found:
        raise SystemExit(f"no images under {DATA} (set WALKCUT_DATA)")
    return found[:limit] if limit else found


def tiny_model(folder: Path) -> Path:
    """Export the tiny random architecture to ONNX (as tests/test_export.py does)."""
    sys.path.insert(0, str(REPO / "tests"))
    from export_fixtures import TINY_ATTN_RES, TINY_IMAGE_SIZE, build_tiny_pipeline
    from walkcut.export.api import export_model

    out = folder / "tiny.onnx"
    export_model(str(build_tiny_pipeline(folder / "tiny_sd")), out, image_size=TINY_IMAGE_SIZE,
                 attn_res=TINY_ATTN_RES, arch="tiny", progress=False)
    return out


def _cpu_seconds_by_pid() -> dict[int, tuple[int, float]]:
    """{pid: (parent pid, user + system CPU seconds)} of every process (Linux /proc; empty elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2:].split()
            out[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return out


def _tree(procs: dict, root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in procs.items():
        children.setdefault(parent, []).append(pid)
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all processes; /proc/stat), 0 where unknown."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(x) for x in fields]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


def timed(cmd: list[str], *, tree_of: int | None = None) -> tuple[float, float]:
    """Run ``cmd``; returns (wall seconds, CPU seconds of its process tree). ``tree_of``: count the
    descendants of this pid instead (a local cluster started by this process), less this process.
    Also prints the CPU seconds that other processes took meanwhile: a wall time is a quiet
    machine's only when that is near 0."""
    load = os.getloadavg()
    busy0 = _busy_seconds()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = proc.pid if tree_of is None else tree_of
    base = {pid: cpu for pid, (_, cpu) in _cpu_seconds_by_pid().items()}  # earlier CPU of a cluster's daemons
    seen: dict[int, float] = {}
    while True:
        try:
            out, err = proc.communicate(timeout=0.25)
            break
        except subprocess.TimeoutExpired:
            procs = _cpu_seconds_by_pid()
            for pid in _tree(procs, root):
                if pid != os.getpid():
                    seen[pid] = procs[pid][1] - base.get(pid, 0.0)
    wall = time.perf_counter() - t0
    cpu = sum(seen.values())
    others = max(0.0, _busy_seconds() - busy0 - cpu)
    tail = out.strip().splitlines()[-1:] or [""]
    print(f"  {' '.join(cmd[2:4])}: {wall:.1f} s, {cpu:.1f} CPU s of its processes, {others:.1f} CPU s of "
          f"other processes meanwhile (rc {proc.returncode}; load before {load[0]:.2f}) | {tail[0][:160]}", flush=True)
    if proc.returncode not in (0, 1):
        print(err[-3000:], file=sys.stderr)
        raise SystemExit(f"{cmd[3]} failed")
    return wall, cpu


def cluster_scaling(files: list[Path], root: Path, walkcut: list[str], extra: list[str], seg_wall: float) -> None:
    """The batch joined to a local multi-node cluster of 1 and 2 one-CPU nodes (Ray start-up included:
    the cluster is started inside the timed interval's process tree but before the command)."""
    import ray.cluster_utils

    # The workers at the priority of the local Ray that `walkcut batch` starts (and of segment): Ray's
    # default, niceness 15, hands a shared machine's cores to everything else first.
    os.environ.setdefault("RAY_worker_niceness", "0")
    for nodes in (1, 2):
        t0 = time.perf_counter()
        cluster = ray.cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        start = time.perf_counter() - t0
        try:
            out = root / "cluster" / f"{nodes}nodes"
            wall, _ = timed([*walkcut, "batch", *map(str, files), "--out", str(out), "--ray-address", cluster.address,
                             *extra], tree_of=os.getpid())
        finally:
            cluster.shutdown()
        print(f"  {nodes} node(s) x 1 CPU: cluster start {start:.1f} s + batch {wall:.1f} s = {start + wall:.1f} s; "
              f"{len(files) / wall:.2f} img/s; ratio to segment {seg_wall / (start + wall):.2f}x with the start, "
              f"{seg_wall / wall:.2f}x without", flush=True)


def by_name(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.rglob("*.png")}


def stage_medians(manifest: Path) -> dict[str, float]:
    import pyarrow.parquet as pq

    rows = [r for r in pq.read_table(manifest).to_pylist() if r["status"] == "ok"]
    out = {}
    for key in rows[0]:
        if key.startswith("seconds_"):
            values = [r[key] for r in rows if r[key] == r[key]]  # drop NaN: stage did not run
            if values:
                out[key[8:]] = 1e3 * statistics.median(values)
    out["pixels"] = statistics.median(r["height"] * r["width"] for r in rows)
    return out


def stage_costs(n: int = 12) -> None:
    """CPU seconds (thread time, so other load on the machine does not inflate them) per stage of one
    512 x 512 image with an R = 32 attention-like engine output: the per-core costs of the sizing."""
    import cv2
    import numpy as np
    from walkcut.runtime.draw import overlay
    from walkcut.runtime.imageio import encode_png, read_image
    from walkcut.runtime.segmenter import Segmenter
    from walkcut.runtime.sources.contract import ModelContract
    from walkcut.runtime.sources.engine import validate_attention
    from walkcut.runtime.sources.given import GivenSource
    from walkcut.runtime.sources.pixels import Transition
    from walkcut.runtime.sources.preprocess import preprocess

    from walkcut.batch.work import one_thread
    from walkcut.eval.reference import synthetic_attention

    contract = ModelContract(image_size=512, attn_res=32, layers="encoder", resolutions=(32,), weights=(1.0,),
                             model_id="bench", model_hash="0" * 12, exporter_version="bench")
    costs: dict[str, list[float]] = {}

    def clock(stage, fn, *a, **k):
        t0 = time.thread_time()
        out = fn(*a, **k)
        costs.setdefault(stage, []).append(time.thread_time() - t0)
        return out

    with tempfile.TemporaryDirectory() as tmp, one_thread():
        for i, path in enumerate(images(n)[:n]):
            jpg = Path(tmp) / f"{i}.jpg"
            cv2.imwrite(str(jpg), cv2.resize(cv2.imread(str(path)), (512, 512), interpolation=cv2.INTER_AREA))
            image = clock("decode", read_image, jpg)
            clock("preprocess", preprocess, image, contract)
            raw = synthetic_attention(32, seed=i)[None].astype(np.float32)  # (1, 1024, 1024)
            P = clock("check", validate_attention, raw, contract, name="bench")
            seg = Segmenter(GivenSource(Transition(P=P, grid_shape=(32, 32)))).set_image(image)
            t0 = time.thread_time()
            result = seg.segment()
            both = time.thread_time() - t0
            wall = result.timings["cuts"] + result.timings["upsample"]
            costs.setdefault("cuts", []).append(both * result.timings["cuts"] / wall)
            costs.setdefault("upsample", []).append(both * result.timings["upsample"] / wall)
            labels = result.labels.astype(np.uint16)
            clock("write", lambda im, lab: (encode_png(lab, rgb=False), encode_png(overlay(im, lab))), image, labels)
    med = {k: 1e3 * statistics.median(v) for k, v in costs.items()}
    print(f"per-stage CPU ms per 512 x 512 image, one thread, median of {n} (R = 32 attention-like walk): "
          + ", ".join(f"{k} {v:.1f}" for k, v in med.items()) + f"; total {sum(med.values()):.1f}")


#: Options of both commands (the source and cut groups) that take a value; the rest of the extra
#: arguments are batch's own.
SHARED_OPTIONS = {"--grid", "-R", "--contour-scale", "--preset", "--mode", "--power", "--threshold",
                  "--max-segments", "--min-size", "--upsample", "--backend"}


def segment_options(extra: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(extra):
        key = extra[i].split("=", 1)[0]
        takes_value = "=" not in extra[i] and i + 1 < len(extra)
        if key in SHARED_OPTIONS:
            out.extend(extra[i:i + 1 + takes_value])
        i += 1 + (takes_value and key.startswith("-") and not extra[i + 1].startswith("--"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--cases", nargs="+", choices=("pixels", "engine", "stages", "cluster"),
                        default=["pixels", "engine", "stages"])
    parser.add_argument("--keep", type=Path, default=None, help="keep outputs in this folder")
    parser.add_argument("--model", type=Path, default=None, help="engine case: this model instead of a fresh tiny export")
    args, batch_extra = parser.parse_known_args()
    files = images(args.limit)
    cpus = os.cpu_count()
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    model_name = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
                      platform.processor())
    print(f"machine: {platform.node()}, {cpus} CPUs ({model_name}), Python {platform.python_version()}")
    print(f"images: {len(files)} from {DATA}; load average at start {os.getloadavg()}")
    autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled")
    if autogroup.exists() and autogroup.read_text().strip() == "1":
        print("note: Linux autogroup is on: while other sessions keep a core busy, batch's processes share "
              "one session's CPU with segment's one process, and the wall ratio is about 1x whatever batch does")
    root = Path(tempfile.mkdtemp(prefix="walkcut-bench-batch-")) if args.keep is None else args.keep
    walkcut = [sys.executable, "-m", "walkcut"]
    seg_wall = None
    try:
        for case in args.cases:
            if case == "stages":
                stage_costs()
                continue
            if case == "cluster":
                if seg_wall is None:
                    seg_wall, _ = timed([*walkcut, "segment", *map(str, files), "--out", str(root / "cluster" / "segment"),
                                         *batch_extra])
                print("case cluster (ray.cluster_utils.Cluster, one CPU per node):")
                cluster_scaling(files, root, walkcut, batch_extra, seg_wall)
                continue
            extra = []
            if case == "engine":
                t0 = time.perf_counter()
                extra = ["--engine", str(args.model or tiny_model(root / "model"))]
                print(f"tiny model exported in {time.perf_counter() - t0:.1f} s")
            seg_out, batch_out = root / case / "segment", root / case / "batch"
            print(f"case {case}:")
            # Options after the known ones (e.g. --grid 64) go to both commands when they are source or
            # cut options; batch-only options (--num-cpus, ...) would make segment fail.
            seg, seg_cpu = timed([*walkcut, "segment", *map(str, files), "--out", str(seg_out), *extra,
                                  *segment_options(batch_extra)])
            bat, bat_cpu = timed([*walkcut, "batch", *map(str, files), "--out", str(batch_out), *extra, *batch_extra])
            if case == "pixels":
                seg_wall = seg
            a, b = by_name(seg_out), by_name(batch_out)
            same = sum(a[k] == b.get(k) for k in a)
            print(f"  identical outputs: {same} of {len(a)} (batch wrote {len(b)})")
            print(f"  throughput: segment {len(files) / seg:.2f} img/s, batch {len(files) / bat:.2f} img/s, "
                  f"ratio {seg / bat:.2f}x (target >= 1.7x); load average now {os.getloadavg()}")
            print(f"  CPU seconds: segment {seg_cpu:.1f}, batch {bat_cpu:.1f} (Ray and its workers included): "
                  f"batch spends {bat_cpu - seg_cpu:+.1f} s more; on {cpus} idle cores it would take at least "
                  f"{bat_cpu / cpus:.1f} s, a ratio of at most {seg_cpu / (bat_cpu / cpus):.2f}x")
            medians = stage_medians(batch_out / "manifest.parquet")
            print("  batch per-stage medians (ms, one thread): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in medians.items() if k != "pixels")
                  + f"; median image {medians['pixels'] / 1e3:.0f} kpx")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
