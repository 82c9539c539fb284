"""walkcut runtime: numpy, scipy, OpenCV and onnxruntime only; never torch."""
