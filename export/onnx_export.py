"""ONNX export of an attention wrapper, written atomically and verified: the Stable Diffusion
:class:`~walkcut.export.wrapper.AttentionExportModel` or the DINOv2 :class:`~walkcut.export.vit.ViTAttentionModel`.

The graph is traced with ``torch.onnx.export(dynamo=True)`` at opset 20, the model contract is
stored in its metadata, and the file (plus ``<name>.onnx.data`` when over 2 GB) is written into a
temporary folder beside the target and renamed into place only when complete. Verification runs
at once: ``onnx.checker``, one onnxruntime run on a sample image, comparison with the torch wrapper.

Error measure: ``max |ort - torch| / max |torch|`` over the (R*R, R*R) output, where ``torch`` is the
float32 eager wrapper. Tolerances: :data:`FP32_TOLERANCE` and :data:`FP16_TOLERANCE`; rows must sum
to 1 within :data:`VERIFY_ROW_SUM_TOLERANCE`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from walkcut.runtime.defaults import INPUT_NAME, OUTPUT_NAME
from walkcut.runtime.imageio import swap_in
from walkcut.export.verify import ExportResult, VerificationError, compare
from walkcut.runtime.sources.contract import ModelContract

logger = logging.getLogger(__name__)

OPSET = 20
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 3e-2
#: Export verification: rows of the exported attention must sum to 1 this closely (stricter than
#: the runtime's ``ROW_TOL``, which only rejects outputs that are not attention at all).
VERIFY_ROW_SUM_TOLERANCE = 1e-3
#: Protobuf's limit: larger models keep their weights in ``<name>.onnx.data``.
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3


def sample_image(image_size: int, seed: int = 0) -> torch.Tensor:
    """A deterministic (1, 3, S, S) test image in [-1, 1]: smooth gradients plus noise."""
    gen = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, image_size), torch.linspace(-1, 1, image_size), indexing="ij")
    base = torch.stack([x, y, (x * y).sign() * 0.5])[None]
    return (0.7 * base + 0.3 * (torch.rand(1, 3, image_size, image_size, generator=gen) * 2 - 1)).clamp(-1, 1)


@contextlib.contextmanager
def _tracing(wrapper):
    # the UNet wrapper switches to its block-by-block path while traced; a ViT wrapper has no such state
    state = getattr(wrapper, "_state", None)
    if state is None:
        yield
        return
    state.tracing = True
    try:
        yield
    finally:
        state.tracing = False


def trace_to_onnx(wrapper, sample: torch.Tensor, *, opset: int = OPSET):
    """Trace ``wrapper`` to an ``onnx_ir`` model (``torch.onnx.export``'s ``ONNXProgram``)."""
    with _tracing(wrapper), torch.no_grad():
        program = torch.onnx.export(
            wrapper, (sample,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], optimize=True, verbose=False,
        )
    return program


def _initializer_bytes(model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def count_nodes(model) -> int:
    """Number of nodes of an ``onnx_ir`` or ``onnx`` model's main graph."""
    graph = model.graph
    if isinstance(getattr(graph, "node", None), (list, tuple)) or hasattr(model, "SerializeToString"):
        return len(graph.node)  # onnx.ModelProto
    return len(list(graph))  # onnx_ir.Model: the graph iterates over its nodes


def save_atomic(program, out_path: str | Path, metadata: dict[str, str]) -> Path:
    """Save ``program`` to ``out_path`` (and ``.data`` beside it when > 2 GB) all-or-nothing."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = program.model
    for key, value in metadata.items():
        model.metadata_props[key] = value
    external = _initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        program.save(str(tmp / out_path.name), external_data=external)
        data = tmp / f"{out_path.name}.data"
        final_data = out_path.with_name(f"{out_path.name}.data")
        # The model and its weight file are swapped in together (the old pair stays on failure).
        swap_in(([(data, final_data)] if data.exists() else []) + [(tmp / out_path.name, out_path)])
        if not external and final_data.exists():
            final_data.unlink()  # a stale weight file from an earlier, larger export
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_path


def file_size(path: Path) -> int:
    data = path.with_name(f"{path.name}.data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def run_onnxruntime(path: str | Path, image: np.ndarray, **session_options) -> np.ndarray:
    """Run the model at ``path`` on CPU once; ``session_options`` are ``SessionOptions`` attributes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    for key, value in session_options.items():
        setattr(opts, key, value)
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: image})[0]


def export_onnx(wrapper, out_path: str | Path, contract: ModelContract, *, fp16: bool = False,
                sample: torch.Tensor | None = None, verify: bool = True, progress: bool = True) -> ExportResult:
    """Export ``wrapper`` to ``out_path`` with ``contract`` in its metadata, then verify it.

    Parameters
    ----------
    wrapper : AttentionExportModel or ViTAttentionModel
        In float32; with ``fp16`` it is converted to half precision after the reference run
        (``wrapper.to_fp16()``: an SDXL VAE stays float32).
    out_path : path
        Target ``.onnx`` file; written atomically.
    contract : ModelContract
        Written under ``walkcut.contract``; its ``precision`` must match ``fp16``.
    fp16 : bool
        Export weights and compute in float16 (image input and attention output stay float32;
        the softmax and the aggregation run in float32).
    sample : torch.Tensor, optional
        Image used for tracing and verification (default: :func:`sample_image`).
    verify : bool
        Check the model and compare onnxruntime with the torch wrapper.

    Raises
    ------
    VerificationError
        If the onnxruntime output differs from the torch wrapper by more than the tolerance, or
        its rows do not sum to 1. The written files are removed first.
    """
    if contract.precision != ("fp16" if fp16 else "fp32"):
        raise ValueError(f"contract precision {contract.precision!r} does not match fp16={fp16}")
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    sample = sample_image(contract.image_size) if sample is None else sample
    bar = tqdm(total=4 if verify else 2, desc="export", unit="step", disable=not progress or None)
    reference = None
    if verify:
        bar.set_postfix_str("torch reference")
        with torch.no_grad():
            reference = wrapper(sample).numpy()
    if fp16:  # the wrapper's own conversion keeps an SDXL VAE in float32
        wrapper = wrapper.to_fp16() if hasattr(wrapper, "to_fp16") else wrapper.half()
    bar.set_postfix_str("tracing to ONNX")
    program = trace_to_onnx(wrapper, sample)
    n_nodes = count_nodes(program.model)
    bar.update()
    bar.set_postfix_str("saving")
    path = save_atomic(program, out_path, contract.to_metadata())
    del program
    bar.update()
    rel = max_abs = row = float("nan")
    tolerance = FP16_TOLERANCE if fp16 else FP32_TOLERANCE
    if verify:
        import onnx

        bar.set_postfix_str("onnx.checker")
        onnx.checker.check_model(str(path))
        bar.update()
        bar.set_postfix_str("onnxruntime")
        result = run_onnxruntime(path, sample.numpy())
        bar.update()
        rel, max_abs, row = compare(result, reference)
    bar.close()
    seconds = time.perf_counter() - t0
    out = ExportResult(path=path, contract=contract, size_bytes=file_size(path), seconds=seconds,
                       n_nodes=n_nodes, rel_error=rel, max_abs_error=max_abs, row_sum_error=row,
                       tolerance=tolerance)
    if verify and not (rel <= tolerance and row <= VERIFY_ROW_SUM_TOLERANCE):
        # a model that failed its check must not be picked up by the runtime: remove it
        path.unlink(missing_ok=True)
        path.with_name(f"{path.name}.data").unlink(missing_ok=True)
        raise VerificationError(f"verification failed (model removed): {out.summary()}")
    logger.info("exported %s", out.summary())
    return out


__all__ = [
    "FP16_TOLERANCE",
    "FP32_TOLERANCE",
    "OPSET",
    "ExportResult",
    "VerificationError",
    "compare",
    "count_nodes",
    "export_onnx",
    "run_onnxruntime",
    "sample_image",
    "trace_to_onnx",
]
