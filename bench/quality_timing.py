"""Per-frame time of the pixel source, the cuts and the upsampling on 480 x 360 frames, for the 0.1
graph, the v0.2 defaults and the ``street`` preset, all in one run (bench/RESULTS.md, Quality v0.2).

    python bench/quality_timing.py
"""

import os

import cv2
import numpy as np
from walkcut.runtime.segmenter import Segmenter
from walkcut.runtime.sources.pixels import PRESETS, PixelSource

from walkcut.eval.datasets import load_dataset

frames = [cv2.resize(s.image, (480, 360)) for s in list(load_dataset("camvid", limit=6, crop=False))]
print("frame", frames[0].shape, "load", os.getloadavg())
for name, src, cuts in [("0.1 graph", PixelSource(grid=32, contour_scale=None), {}),
                        ("v0.2 default", PixelSource(**PRESETS["default"]["source"]), PRESETS["default"]["cuts"]),
                        ("street", PixelSource(**PRESETS["street"]["source"]), PRESETS["street"]["cuts"])]:
    seg = Segmenter(src)
    ts = []
    for f in frames:
        r = seg.set_image(f).segment(**cuts)
        ts.append((r.timings["source"], r.timings["cuts"], r.timings["upsample"]))
    m = np.median(np.array(ts), axis=0)
    print(f"{name}: source {m[0]*1e3:.0f} ms cuts {m[1]*1e3:.0f} ms upsample {m[2]*1e3:.0f} ms total {m.sum()*1e3:.0f} ms segs {r.n_segments}")
print("load", os.getloadavg())
