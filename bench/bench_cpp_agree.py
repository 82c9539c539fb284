"""C++ demo against ``walkcut segment``: pixel-label agreement on real images, both at their defaults.

Runs ``walkcut segment`` (the Python CLI) and ``walkcut_demo --image`` on the same images, reads both
uint16 label maps and reports the adjusted Rand index (ARI) of each pair, their median and minimum,
and how many images agree exactly (up to label names). No timings.

    python bench/bench_cpp_agree.py [--images DIR] [--limit N] [--contour-scale S|off]
                                    [--build-dir DIR] [--skip-build]

Default images: BSDS500 val (``../shared/data/bsds500/images/val``). ``--contour-scale`` is passed to
both sides (default: neither gets it, i.e. their defaults).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "bsds500" / "images" / "val"


def build(build_dir: Path) -> None:
    subprocess.run(["cmake", "-S", str(REPO / "cpp_demo"), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build_dir), "-j", str(min(2, os.cpu_count() or 2))], check=True,
                   capture_output=True)


def ari(a: np.ndarray, b: np.ndarray) -> float:
    from walkcut.eval.metrics import adjusted_rand_index, contingency_table

    return adjusted_rand_index(contingency_table(a, b))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    p.add_argument("--limit", type=int, default=0, help="first N images (sorted); 0 = all")
    p.add_argument("--contour-scale", default=None, help="passed to both sides (a number or 'off')")
    p.add_argument("--build-dir", type=Path, default=REPO / "cpp_demo" / "build" / "pytest")
    p.add_argument("--skip-build", action="store_true")
    args = p.parse_args()

    images = sorted(args.images.glob("*.jpg"))[: args.limit or None]
    if not images:
        print(f"no .jpg images in {args.images}", file=sys.stderr)
        return 1
    if not args.skip_build:
        build(args.build_dir)
    demo = args.build_dir / "walkcut_demo"
    extra = ["--contour-scale", args.contour_scale] if args.contour_scale else []
    with tempfile.TemporaryDirectory() as tmp:
        py_out, cc_out = Path(tmp) / "py", Path(tmp) / "cpp"
        subprocess.run([sys.executable, "-m", "walkcut", "segment", *map(str, images), "--out", str(py_out), *extra],
                       check=True, capture_output=True)
        cc_args = [str(demo), "--out", str(cc_out), *extra]
        for image in images:
            cc_args += ["--image", str(image)]
        subprocess.run(cc_args, check=True, capture_output=True)
        scores = []
        for image in images:
            py = cv2.imread(str(py_out / f"{image.stem}_labels.png"), cv2.IMREAD_UNCHANGED)
            cc = cv2.imread(str(cc_out / f"{image.stem}_labels.png"), cv2.IMREAD_UNCHANGED)
            scores.append((ari(py, cc), image.name, int(py.max()) + 1, int(cc.max()) + 1))
    scores.sort()
    values = [s[0] for s in scores]
    print(f"images: {len(values)} from {args.images}; contour scale: {args.contour_scale or 'defaults'}")
    print(f"ARI C++ vs walkcut segment: median {statistics.median(values):.3f}, mean {statistics.fmean(values):.3f}, "
          f"min {values[0]:.3f}; identical partitions: {sum(v == 1.0 for v in values)} of {len(values)}")
    print("lowest: " + ", ".join(f"{name} {v:.3f} ({kp}/{kc} segments)" for v, name, kp, kc in scores[:5]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
