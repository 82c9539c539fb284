"""What a user would pick instead: scikit-image's ``felzenszwalb`` and ``slic``, and a 4 x 4 grid of blocks.

Scored with walkcut's own metric code (walkcut.eval.metrics) and dataset loaders, so the numbers
sit next to ``walkcut eval`` ones:

* BSDS500 val (regions): Covering / PRI / VoI at ODS and OIS over a sweep of each method's main
  parameter (``scale`` for Felzenszwalb-Huttenlocher, ``n_segments`` for SLIC), for two values of
  the secondary one (``min_size``; ``compactness``), so "best settings" are not a default's accident.
* CamVid val (semantic protocol, square centre crop): per-image Hungarian matching, mIoU and pixel
  accuracy for every setting; the best setting by dataset mIoU is reported (an oracle choice, the
  semantic analogue of ODS).

The 4 x 4 grid has no parameter. Images are processed in parallel (``--workers``, fork).

Usage::

    python bench/baselines_bsds.py [--datasets bsds500,camvid] [--workers 2] [--limit N] [--json OUT]

References
----------
.. [1] P. Felzenszwalb, D. Huttenlocher, "Efficient Graph-Based Image Segmentation", IJCV 2004.
.. [2] R. Achanta et al., "SLIC Superpixels Compared to State-of-the-Art Superpixel Methods", TPAMI 2012.
.. [3] P. Arbelaez et al., "Contour Detection and Hierarchical Image Segmentation", TPAMI 2011.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys
import time

import numpy as np
from skimage import __version__ as skimage_version
from skimage.segmentation import felzenszwalb, slic

from walkcut.eval import metrics
from walkcut.eval.datasets import load_dataset

FH_SCALES = (50, 100, 200, 400, 700, 1000, 1500, 2500, 4000, 8000)
SLIC_SEGMENTS = (2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 100, 200)

#: family name -> (parameter name, values, function(image, value) -> labels)
FAMILIES = {
    "felzenszwalb(min_size=20)": ("scale", FH_SCALES,
                                  lambda im, v: felzenszwalb(im, scale=v, sigma=0.8, min_size=20)),
    "felzenszwalb(min_size=200)": ("scale", FH_SCALES,
                                   lambda im, v: felzenszwalb(im, scale=v, sigma=0.8, min_size=200)),
    "slic(compactness=10)": ("n_segments", SLIC_SEGMENTS,
                             lambda im, v: slic(im, n_segments=v, compactness=10, start_label=0)),
    "slic(compactness=20)": ("n_segments", SLIC_SEGMENTS,
                             lambda im, v: slic(im, n_segments=v, compactness=20, start_label=0)),
    "grid 4x4": ("-", (16,), lambda im, v: grid_blocks(im.shape[:2], 4)),
}


def grid_blocks(shape, k: int) -> np.ndarray:
    """A k x k grid of equal blocks over an (H, W) image."""
    h, w = shape
    rows = np.minimum(np.arange(h) * k // h, k - 1)
    cols = np.minimum(np.arange(w) * k // w, k - 1)
    return (rows[:, None] * k + cols[None, :]).astype(np.int64)


_DS = None  # the dataset, inherited by forked workers


def _one_image(index: int):
    item = _DS.items[index]
    s = _DS._read(*item)
    out = {}
    for fam, (_, values, fn) in FAMILIES.items():
        res = []
        for v in values:
            lab = fn(s.image, v)
            n_seg = int(np.unique(lab).size)
            if _DS.protocol == "regions":
                res.append((metrics.score_regions(lab, s.gt), n_seg))
            else:
                res.append((metrics.semantic_counts(lab, s.gt, num_classes=_DS.num_classes,
                                                    ignore_label=_DS.ignore_label), n_seg))
        out[fam] = res
    return s.id, out


def run_dataset(name: str, workers: int, limit: int | None) -> dict:
    global _DS
    _DS = load_dataset(name, split="val", limit=limit)
    t0 = time.perf_counter()
    ctx = mp.get_context("fork")
    with ctx.Pool(workers) as pool:
        per_image = list(pool.imap(_one_image, range(len(_DS)), chunksize=1))
    seconds = time.perf_counter() - t0
    result = {"dataset": name, "images": len(per_image), "seconds": seconds, "families": {}}
    for fam, (pname, values, _) in FAMILIES.items():
        segs = np.array([[n for _, n in img[fam]] for _, img in per_image], dtype=np.float64)
        if _DS.protocol == "regions":
            scores = [[sc for sc, _ in img[fam]] for _, img in per_image]
            summ = metrics.summarize_region_sweep(scores)
            entry = summ.as_dict()
            entry["ods_param"] = {k: values[i] for k, i in summ.ods_index.items()}
            entry["segments_at_ods"] = float(segs[:, summ.ods_index["covering"]].mean())
        else:
            rows = []
            for t, v in enumerate(values):
                acc = metrics.SemanticCounts(_DS.num_classes)
                for _, img in per_image:
                    acc += img[fam][t][0]
                rows.append({"param": v, "miou": acc.miou, "pixel_accuracy": acc.pixel_accuracy,
                             "segments": float(segs[:, t].mean())})
            best = max(rows, key=lambda r: r["miou"])
            entry = {"miou": best["miou"], "pixel_accuracy": best["pixel_accuracy"],
                     "best_param": best["param"], "segments_at_best": best["segments"],
                     "pixel_accuracy_best": max(r["pixel_accuracy"] for r in rows), "sweep": rows}
        entry["param_name"] = pname
        result["families"][fam] = entry
    return result


def print_table(res: dict) -> None:
    print(f"\n{res['dataset']} val, {res['images']} images, {res['seconds']:.0f} s")
    fams = res["families"]
    if "covering_ods" in next(iter(fams.values())):
        print(f"{'method':28s} {'Cov ODS':>8s} {'Cov OIS':>8s} {'PRI ODS':>8s} {'PRI OIS':>8s} "
              f"{'VoI ODS':>8s} {'VoI OIS':>8s}  ODS param (cov)  segs")
        for fam, e in fams.items():
            print(f"{fam:28s} {e['covering_ods']:8.3f} {e['covering_ois']:8.3f} {e['pri_ods']:8.3f} "
                  f"{e['pri_ois']:8.3f} {e['voi_ods']:8.3f} {e['voi_ois']:8.3f}  "
                  f"{e['param_name']}={e['ods_param']['covering']}  {e['segments_at_ods']:.1f}")
    else:
        print(f"{'method':28s} {'mIoU':>8s} {'acc':>8s}  best param  segs")
        for fam, e in fams.items():
            print(f"{fam:28s} {e['miou']:8.3f} {e['pixel_accuracy']:8.3f}  "
                  f"{e['param_name']}={e['best_param']}  {e['segments_at_best']:.1f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="bsds500,camvid")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    machine = f"{platform.node()} {platform.machine()} {mp.cpu_count()} cpu, python {platform.python_version()}, " \
              f"scikit-image {skimage_version}"
    results = []
    for name in args.datasets.split(","):
        res = run_dataset(name, args.workers, args.limit)
        print_table(res)
        results.append(res)
        if args.json:  # after each dataset, so a partial run keeps what it has
            with open(args.json, "w") as f:
                json.dump({"machine": machine, "results": results}, f, indent=1, default=float)
    print(f"\nmachine: {machine}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
