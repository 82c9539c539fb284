"""Throughput of ``walkcut batch`` (Ray Data, local) against one ``walkcut segment`` process.

Both commands run as subprocesses on the same images with the same options, one after the other in
the same run; wall time includes Python and (for batch) Ray start-up. The outputs are compared byte
for byte. Cases: the pixel source, and the tiny exported model as the engine source (built here from
the random tiny architecture, as the export tests do; needs the export extra).

    python bench/bench_batch.py                      # 201 images: BSDS500 val + CamVid val
    python bench/bench_batch.py --limit 20 --cases pixels

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


def timed(cmd: list[str]) -> float:
    load = os.getloadavg()
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    tail = done.stdout.strip().splitlines()[-1:] or [""]
    print(f"  {' '.join(cmd[2:4])}: {wall:.1f} s (rc {done.returncode}; load before {load[0]:.2f}) | {tail[0][:160]}",
          flush=True)
    if done.returncode not in (0, 1):
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{cmd[3]} failed")
    return wall


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--cases", nargs="+", choices=("pixels", "engine", "stages"),
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
    root = Path(tempfile.mkdtemp(prefix="walkcut-bench-batch-")) if args.keep is None else args.keep
    walkcut = [sys.executable, "-m", "walkcut"]
    try:
        for case in args.cases:
            if case == "stages":
                stage_costs()
                continue
            extra = []
            if case == "engine":
                t0 = time.perf_counter()
                extra = ["--engine", str(args.model or tiny_model(root / "model"))]
                print(f"tiny model exported in {time.perf_counter() - t0:.1f} s")
            seg_out, batch_out = root / case / "segment", root / case / "batch"
            print(f"case {case}:")
            seg = timed([*walkcut, "segment", *map(str, files), "--out", str(seg_out), *extra])
            bat = timed([*walkcut, "batch", *map(str, files), "--out", str(batch_out), *extra, *batch_extra])
            a, b = by_name(seg_out), by_name(batch_out)
            same = sum(a[k] == b.get(k) for k in a)
            print(f"  identical outputs: {same} of {len(a)} (batch wrote {len(b)})")
            print(f"  throughput: segment {len(files) / seg:.2f} img/s, batch {len(files) / bat:.2f} img/s, "
                  f"ratio {seg / bat:.2f}x (target >= 1.7x); load average now {os.getloadavg()}")
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
