"""C++ cuts (cpp_demo, Eigen + Spectra) against the Python runtime's cuts on the same graphs.

Graphs: the pixels graph of a bundled example image at R = 32 and 64 (n = 1024 / 4096, sparse) and a
dense attention-like matrix (softmax of feature similarities over an R x R grid, as in
tests/test_cpp_demo.py) at the same sizes. Both sides run with their defaults (mode walk, auto-ncut,
max 32 segments, the runtime's eigen tolerance); each time is the median of --repeat runs after one
warm-up, cuts only (graph already in memory; the C++ side reports its own timer, so .npy reading and
process start are excluded). Also measures a clean build of cpp_demo (the CI cost).

    python bench/bench_cpp.py [--repeat 3] [--image examples/astronaut.jpg] [--build-dir DIR] [--skip-build]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def build(build_dir: Path) -> float:
    """Clean configure + build of cpp_demo; returns wall seconds."""
    shutil.rmtree(build_dir, ignore_errors=True)
    t0 = time.perf_counter()
    # Native tuning is off by default since walkcut 0.3 (installable package); the timings here were
    # always taken with it, as a robot build would use it.
    subprocess.run(["cmake", "-S", str(REPO / "cpp_demo"), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                    "-DWALKCUT_NATIVE=ON"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build_dir), "-j", str(os.cpu_count() or 2)], check=True, capture_output=True)
    return time.perf_counter() - t0


def python_cuts(P, stationary, repeat: int):
    from walkcut.runtime.cuts.hierarchy import cut_transition_matrix

    cut_transition_matrix(P, stationary=stationary)  # warm-up
    times, labels = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        labels = cut_transition_matrix(P, stationary=stationary).labels
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times), labels


def cpp_cuts(demo: Path, work: Path, P, stationary, repeat: int):
    dense = P.toarray() if hasattr(P, "toarray") else P
    np.save(work / "P.npy", dense)
    args = [str(demo), "--matrix", str(work / "P.npy"), "--out", str(work), "--repeat", str(repeat)]
    if stationary is not None:
        np.save(work / "pi.npy", stationary)
        args += ["--stationary", str(work / "pi.npy")]
    if hasattr(P, "toarray"):
        args.append("--sparse")
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    ms = float(re.search(r"cuts ([\d.]+) ms", out).group(1))
    return ms, np.load(work / "P_labels.npy")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--image", type=Path, default=REPO / "examples" / "astronaut.jpg")
    p.add_argument("--build-dir", type=Path, default=Path(tempfile.gettempdir()) / "walkcut_bench_cpp_build")
    p.add_argument("--skip-build", action="store_true", help="reuse an existing build in --build-dir (no build timing)")
    args = p.parse_args()

    from test_cpp_demo import agreement, attention_like
    from walkcut.runtime.imageio import read_image
    from walkcut.runtime.sources.pixels import PixelSource

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    if not args.skip_build:
        build_s = build(args.build_dir)
        print(f"clean build of cpp_demo (configure + compile, -j{os.cpu_count()}): {build_s:.1f} s")
    demo = args.build_dir / "walkcut_demo"
    image = read_image(args.image)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for R in (32, 64):
            tr = PixelSource(grid=R).transition(image)
            dense = attention_like(R, seed=R).astype(np.float32)
            for name, P, pi in ((f"pixels {args.image.name} R={R}", tr.P, tr.stationary),
                                (f"attention-like dense R={R}", dense, None)):
                py_ms, py_labels = python_cuts(P, pi, args.repeat)
                cc_ms, cc_labels = cpp_cuts(demo, work, P, pi, args.repeat)
                rows.append((name, R * R, py_ms, cc_ms, py_ms / cc_ms, agreement(py_labels, cc_labels),
                             np.unique(py_labels).size, np.unique(cc_labels).size))
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| graph | n | Python cuts (ms) | C++ cuts (ms) | C++ / Python time | speed-up | label agreement | "
          "segments Py / C++ |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, n, py, cc, sp, ag, kp, kc in rows:
        print(f"| {name} | {n} | {py:.0f} | {cc:.0f} | {cc / py:.2f} | {sp:.2f}x | {ag:.3f} | {kp} / {kc} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
