"""Per-frame time of the pixel source, the cuts and the upsampling on 480 x 360 frames: the graph
without contours (the 0.1 graph, what the C++ demo computes), the defaults (contours 2.0) with the
video's 16 leaves and with 32, and the ``street`` preset, all in one run (bench/RESULTS.md, Quality v0.3).

    python bench/quality_timing.py
"""

import os

import cv2
import numpy as np
from walkcut.runtime.defaults import PRESETS, VIDEO_MAX_SEGMENTS
from walkcut.runtime.segmenter import Segmenter
from walkcut.runtime.sources.pixels import PixelSource

from walkcut.eval.datasets import load_dataset

frames = [cv2.resize(s.image, (480, 360)) for s in list(load_dataset("camvid", limit=6, crop=False))]
print("frame", frames[0].shape, "load", os.getloadavg())
street = PRESETS["street"]
for name, src, cuts in [
    ("no contours, 16 leaves (video)", PixelSource(contour_scale=None), {"max_segments": VIDEO_MAX_SEGMENTS}),
    ("defaults, 16 leaves (video)", PixelSource(), {"max_segments": VIDEO_MAX_SEGMENTS}),
    ("no contours, 32 leaves", PixelSource(contour_scale=None), {}),
    ("defaults, 32 leaves", PixelSource(), {}),
    ("street preset", PixelSource(**street["source"]), street["cuts"]),
]:
    ts = []
    for f in frames:
        r = Segmenter(src).set_image(f).segment(**cuts)  # one-shot, no warm start
        ts.append((r.timings["source"], r.timings["cuts"], r.timings["upsample"]))
    m = np.median(np.array(ts), axis=0)
    print(f"{name}: source {m[0]*1e3:.0f} ms cuts {m[1]*1e3:.0f} ms upsample {m[2]*1e3:.0f} ms "
          f"total {m.sum()*1e3:.0f} ms segs {r.n_segments}", flush=True)
print("load", os.getloadavg())
