"""The Python cut stage against the C++ demo's on the same natural images, at the defaults.

For each image (BSDS500 val, names sorted, ``--first``/``--images`` pick them; the default is the
last 20 of the 100, which no cut setting was tuned on) the default pixel source builds the graph
once; both sides then cut that same graph (mode walk, auto-ncut, 32 leaves, min size n/256): the
Python runtime (one BLAS thread, median of ``--repeat`` after a warm-up) and ``walkcut_demo
--matrix P.npy --stationary pi.npy --sparse --repeat N`` (its own timer: file reading and process
start excluded). The ratio Python / C++ is of the summed medians of the same run, image by image
interleaved, so both sides see the same load.

    python bench/bench_cuts_cpp_images.py --demo cpp_demo/build/pytest/walkcut_demo [--images 20]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from walkcut.runtime.imageio import read_image
from walkcut.runtime.sources.pixels import PixelSource

from walkcut.eval.datasets import default_data_root
from walkcut.eval.metrics import adjusted_rand_index, contingency_table

from bench_cpp import python_cuts  # the same timed Python cut as bench_cpp.py (this folder)


def cpp_ms(demo: Path, work: Path, P, pi, repeat: int):
    np.save(work / "P.npy", P.toarray() if hasattr(P, "toarray") else P)
    np.save(work / "pi.npy", pi)
    out = subprocess.run([str(demo), "--matrix", str(work / "P.npy"), "--stationary", str(work / "pi.npy"),
                          "--sparse", "--out", str(work), "--repeat", str(repeat)],
                         check=True, capture_output=True, text=True).stdout
    return float(re.search(r"cuts ([\d.]+) ms", out).group(1)), np.load(work / "P_labels.npy")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, required=True, help="a built walkcut_demo")
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--first", type=int, default=80, help="index of the first image in name order")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    if not args.demo.is_file():
        ap.error(f"no walkcut_demo at {args.demo}: build cpp_demo (cmake) or pass --demo")
    threadpool_limits(1)
    root = default_data_root() / "bsds500" / "images" / "val"
    files = sorted(root.glob("*.jpg"))[args.first: args.first + args.images]
    print(f"{len(files)} images from {root} (index {args.first}..); load {os.getloadavg()}")
    print("| image | Python ms | C++ ms | Python / C++ | ARI | segments Py / C++ |")
    print("|---|---|---|---|---|---|")
    total_py = total_cc = 0.0
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            tr = PixelSource().transition(read_image(f))
            py, lp = python_cuts(tr.P, tr.stationary, args.repeat)
            cc, lc = cpp_ms(args.demo, Path(tmp), tr.P, tr.stationary, args.repeat)
            total_py += py
            total_cc += cc
            ratios.append(py / cc)
            ari = adjusted_rand_index(contingency_table(lp, lc))
            print(f"| {f.stem} | {py:.1f} | {cc:.1f} | {py / cc:.2f} | {ari:.3f} | {lp.max() + 1} / {lc.max() + 1} |",
                  flush=True)
    n = len(files)
    print(f"\nmean per image: Python {total_py / n:.1f} ms, C++ {total_cc / n:.1f} ms; "
          f"Python / C++ = {total_py / total_cc:.2f} (sums), median per image {statistics.median(ratios):.2f} "
          f"(same run); load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
