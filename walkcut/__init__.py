"""walkcut: training-free segmentation by random-walk Normalized Cuts.

The runtime lives in :mod:`walkcut.runtime` (numpy, scipy, OpenCV, onnxruntime; never torch) and the
export stage in :mod:`walkcut.export` (torch, diffusers, onnx; install the ``export`` extra).
"""

__version__ = "0.1.0"
