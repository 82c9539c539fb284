"""walkcut export stage (torch, diffusers, onnx): install with ``pip install walkcut[export]``.

This package's ``__init__`` stays light: importing :mod:`walkcut.export` must not import torch, so
that ``walkcut --help`` works on a runtime-only install.

Modules: :mod:`~walkcut.export.configs` (architecture JSON in ``models/``),
:mod:`~walkcut.export.loading` (hub id / folder / single file), :mod:`~walkcut.export.capture`
(layer selection and the explicit self-attention processor), :mod:`~walkcut.export.aggregate`
(in-graph aggregation), :mod:`~walkcut.export.wrapper` (the exported ``nn.Module``),
:mod:`~walkcut.export.onnx_export` (atomic export and verification), :mod:`~walkcut.export.trt`
(TensorRT engine), :mod:`~walkcut.export.api` (one call), :mod:`~walkcut.cli.export` (``walkcut export``).
DINOv2 backbones: :mod:`~walkcut.export.vit_spec` (architectures, source recognition, layer selection;
no torch) and :mod:`~walkcut.export.vit` (loading, the exported ``nn.Module``, one call). An existing
ONNX vision transformer: :mod:`~walkcut.export.onnx_vit` (keeps its attention, aggregates it in-graph;
onnx and onnxruntime only). Modules import each other by absolute ``walkcut.export`` names.
"""
