"""walkcut export stage (torch, diffusers, onnx): install with ``pip install walkcut[export]``.

This package's ``__init__`` stays light: importing :mod:`walkcut.export` must not import torch, so
that ``walkcut --help`` works on a runtime-only install.
"""
