"""An existing ONNX vision transformer as the backbone: keep its attention, aggregate it in-graph.

``export_onnx_vit("vit.onnx", "models/vit.onnx")`` reads a ViT that someone else exported (any
producer, any opset >= 13), finds its attention probabilities — the ``Softmax`` nodes whose output
is ``(B, heads, T, T)`` over the ``T`` tokens — and writes a walkcut model:

1. the graph is cut after the last selected ``Softmax`` (``onnx.utils.Extractor``): the value
   products of that layer, the later layers and any head (a classifier, a saliency decoder) are
   dropped, so nothing is computed that the cuts do not read;
2. each selected ``(1, heads, T, T)`` probability tensor is averaged over heads and sliced to its
   patch-to-patch block (the first ``T - R^2`` tokens, CLS and registers, are dropped); the blocks
   are summed over layers and every row is renormalised to 1, which equals the layer mean of the
   renormalised blocks' numerators (the renormalisation removes any constant factor), so one
   division serves both means;
3. the input is renamed ``image`` with batch 1, the output is ``attention`` ``(1, R*R, R*R)``, and the
   contract (``backbone="vit"``, S, R, normalisation, the selected layers, the cut settings tuned
   for ViT attention) goes into the metadata.

The result is verified at once against the original model run with its ``Softmax`` outputs exposed
(the same comparison and tolerance as the Stable Diffusion export), on a real photograph
(``examples/coffee.jpg`` when present) and a synthetic image; a file that fails is removed.

This module needs ``onnx`` and ``onnxruntime`` only (no torch; a test checks it): the source graph is rewritten, not
re-traced.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from walkcut.runtime import defaults as _d
from walkcut.runtime.sources.contract import ModelContract

from walkcut import __version__
from walkcut.export.verify import ExportResult, VerificationError, compare
from walkcut.export.vit_spec import parse_layers

logger = logging.getLogger(__name__)

#: Tolerance of the exported attention against the aggregation of the original model's own
#: Softmax outputs (both float32 onnxruntime runs: only the order of additions differs).
TOLERANCE = 1e-4
#: int8 exports (weights of the matrix products in 8 bits, activations quantised on the fly) are
#: checked against the float32 export: the mean over rows of the total-variation distance between
#: the two attention rows must stay under this (0.023 on vit_s_focus.onnx and examples/coffee.jpg).
INT8_TV_TOLERANCE = 0.05
#: Most non-patch tokens (CLS + registers) a ViT may carry for the patch grid to be inferred.
MAX_PREFIX_TOKENS = 16
_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "coffee.jpg"


class OnnxVitError(ValueError):
    """The ONNX file is not a vision transformer walkcut can read attention from (message says why)."""


@dataclass(frozen=True)
class AttentionSoftmax:
    """One attention-probability tensor of the source graph."""

    index: int  # 0-based layer index, in graph order
    node: str  # Softmax node name
    output: str  # its output tensor
    heads: int
    tokens: int  # T


@dataclass(frozen=True)
class VitExport(ExportResult):
    """An :class:`~walkcut.export.verify.ExportResult` plus the int8 check (None for float32)."""

    tolerance: float = TOLERANCE
    int8_tv: float | None = None  # int8 exports: mean row total variation against float32

    def summary(self) -> str:
        """The one line the CLI prints: the shared summary, the ViT's grid and layers, the int8 check."""
        c = self.contract
        int8 = "" if self.int8_tv is None else (f"  int8: mean row total variation vs fp32 {self.int8_tv:.3f} "
                                                f"(tolerance {INT8_TV_TOLERANCE})")
        return f"{super().summary()}  vit S={c.image_size} R={c.attn_res} layers {c.layers}{int8}"


# --- reading the source graph ----------------------------------------------------------------------

def _load(path: Path):
    import onnx

    if not path.is_file():
        raise OnnxVitError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf decode errors have no common base class
        raise OnnxVitError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if len(model.graph.input) - len({i.name for i in model.graph.initializer} & {i.name for i in model.graph.input}) != 1:
        raise OnnxVitError(f"{path}: expected one image input, got {[i.name for i in model.graph.input]}")
    return model


def _image_input(model, path: Path, image_size: int | None) -> tuple[str, int]:
    """Name of the image input and S (its static side, or ``image_size``).

    A fixed input side other than ``image_size`` is made symbolic: ViTs exported from transformers
    interpolate their position embeddings in-graph, so they run at any multiple of the patch size
    (``find_attention`` probes it; a graph that cannot is refused there).
    """
    inits = {i.name for i in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    dims = inp.type.tensor_type.shape.dim
    sizes = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(sizes) != 4 or sizes[1] not in (3, None):
        raise OnnxVitError(f"{path}: input {inp.name!r} has shape {sizes}; expected an NCHW image (B, 3, S, S)")
    h, w = sizes[2], sizes[3]
    if h is not None and w is not None and h != w:
        raise OnnxVitError(f"{path}: input {inp.name!r} is {h} x {w}; walkcut feeds square images")
    if image_size is None:
        if h is None or w is None:
            raise OnnxVitError(f"{path}: input {inp.name!r} has no fixed size; give --image-size S")
        return inp.name, h
    if h != image_size or w != image_size:
        for axis in (2, 3):
            dims[axis].ClearField("dim_value")
            dims[axis].dim_param = f"side_{axis}"
    return inp.name, int(image_size)


def _with_outputs(model, names: list[str]):
    """A copy of ``model`` that also returns the tensors ``names``."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    for name in names:
        if name not in have:
            out.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return out


def _session(model_or_path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    data = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def find_attention(model, *, input_name: str, image_size: int, path: Path) -> list[AttentionSoftmax]:
    """The ``Softmax`` nodes of ``model`` whose output is ``(1, heads, T, T)`` attention probabilities.

    Shapes are measured by one onnxruntime run on a zero image (shape inference cannot always
    resolve a producer's dynamic reshapes); the nodes keep their graph order, which is layer order.
    """
    softmax = [n for n in model.graph.node if n.op_type == "Softmax"]
    if not softmax:
        raise OnnxVitError(f"{path}: the graph has no Softmax node, so no attention probabilities to read; "
                           f"is it a vision transformer?")
    probe = _with_outputs(model, [n.output[0] for n in softmax])
    x = np.zeros((1, 3, image_size, image_size), dtype=np.float32)
    try:
        values = _session(probe).run([n.output[0] for n in softmax], {input_name: x})
    except Exception as exc:  # onnxruntime raises its own exception types
        raise OnnxVitError(f"{path}: onnxruntime could not run the model on a {image_size} x {image_size} "
                           f"image ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); if --image-size was "
                           f"given, this graph may not interpolate its position embeddings: omit it") from None
    found = []
    for node, value in zip(softmax, values):
        shape = value.shape
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        if len(shape) == 4 and shape[0] == 1 and shape[2] == shape[3] and axis in (-1, 3):
            found.append(AttentionSoftmax(index=len(found), node=node.name, output=node.output[0],
                                          heads=int(shape[1]), tokens=int(shape[2])))
    if not found:
        raise OnnxVitError(f"{path}: none of its {len(softmax)} Softmax outputs is a (1, heads, T, T) attention "
                           f"map (shapes: {sorted({v.shape for v in values})})")
    tokens = {a.tokens for a in found}
    if len(tokens) > 1:  # a hierarchical ViT (Swin, ...) mixes token counts: not one patch grid
        raise OnnxVitError(f"{path}: attention maps over different token counts {sorted(tokens)}; walkcut reads "
                           f"plain ViTs with one patch grid")
    return found


def patch_grid(tokens: int, image_size: int, *, prefix_tokens: int | None = None) -> tuple[int, int]:
    """``(R, prefix)``: the patch grid side and the number of leading non-patch tokens.

    Without ``prefix_tokens`` the grid is the largest square ``R^2 <= T`` whose side divides ``S``
    and leaves at most :data:`MAX_PREFIX_TOKENS` tokens (CLS, registers) in front.
    """
    if prefix_tokens is not None:
        n = tokens - prefix_tokens
        R = math.isqrt(max(n, 0))
        if prefix_tokens < 0 or R * R != n or R < 2:
            raise OnnxVitError(f"--prefix-tokens {prefix_tokens}: {tokens} tokens minus {prefix_tokens} is not a "
                               f"square patch grid")
        return R, prefix_tokens
    for R in range(math.isqrt(tokens), 1, -1):
        prefix = tokens - R * R
        if prefix > MAX_PREFIX_TOKENS:
            break
        if image_size % R == 0:
            return R, prefix
    raise OnnxVitError(f"cannot tell the patch grid from {tokens} tokens at S = {image_size}: no square of side "
                       f"dividing S leaves <= {MAX_PREFIX_TOKENS} leading tokens; give --prefix-tokens K")


# --- building the walkcut graph --------------------------------------------------------------------

def aggregate_reference(maps: list[np.ndarray], prefix: int) -> np.ndarray:
    """The walkcut aggregation in numpy: ``(1, heads, T, T)`` maps -> ``(1, N, N)`` row-stochastic."""
    total = sum(m.astype(np.float64).mean(axis=1)[:, prefix:, prefix:] for m in maps)  # (1, N, N)
    return total / total.sum(axis=-1, keepdims=True)


def build_graph(model, *, input_name: str, image_size: int, selected: list[AttentionSoftmax], prefix: int):
    """The walkcut model: ``model`` cut after the last selected Softmax, aggregation appended."""
    from onnx import TensorProto, helper

    extracted = _cut_after(model, [s.output for s in selected])
    graph = extracted.graph
    opset = next((o.version for o in extracted.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset < 13:
        raise OnnxVitError(f"the model's opset is {opset}; walkcut reads opset >= 13 (re-export the ViT)")
    T = selected[0].tokens
    N = (T - prefix)
    nodes, inits = [], []

    def const(name, values):
        inits.append(helper.make_tensor(name, TensorProto.INT64, [len(values)], values))
        return name

    starts = const("wc_slice_starts", [prefix, prefix])
    ends = const("wc_slice_ends", [T, T])
    axes = const("wc_slice_axes", [1, 2])
    last_axis = const("wc_last_axis", [-1])
    heads_axis = const("wc_heads_axis", [1]) if opset >= 18 else None
    blocks = []
    for s in selected:
        mean = f"wc_headmean_{s.index}"
        if opset >= 18:  # ReduceMean took its axes as an input from opset 18 on
            nodes.append(helper.make_node("ReduceMean", [s.output, heads_axis], [mean], keepdims=0))
        else:
            nodes.append(helper.make_node("ReduceMean", [s.output], [mean], axes=[1], keepdims=0))
        block = f"wc_patch_{s.index}"
        nodes.append(helper.make_node("Slice", [mean, starts, ends, axes], [block]))
        blocks.append(block)
    total = blocks[0]
    if len(blocks) > 1:
        total = "wc_layer_sum"
        nodes.append(helper.make_node("Sum", blocks, [total]))
    nodes.append(helper.make_node("ReduceSum", [total, last_axis], ["wc_row_sum"], keepdims=1))
    nodes.append(helper.make_node("Div", [total, "wc_row_sum"], [_d.OUTPUT_NAME]))
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(_d.OUTPUT_NAME, TensorProto.FLOAT, [1, N, N]))
    # The runtime feeds one image named `image` (GraphIO): rename the producer's input, fix batch 1.
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == input_name:
                node.input[i] = _d.INPUT_NAME
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(_d.INPUT_NAME, TensorProto.FLOAT, [1, 3, image_size, image_size]))
    del graph.value_info[:]  # the producer's shapes had a symbolic batch; let consumers re-infer them
    return extracted


def _cut_after(model, outputs: list[str]):
    """A copy of ``model`` with only the nodes and weights that ``outputs`` depend on.

    (``onnx.utils.Extractor`` needs shape information for the cut tensors, which producers with
    symbolic batch dimensions often leave out; reachability needs none.)
    """
    import onnx

    needed, keep = set(outputs), []
    for node in reversed(model.graph.node):
        if needed.intersection(node.output):
            keep.append(node)
            needed.update(name for name in node.input if name)
            for attr in node.attribute:  # subgraphs (If/Loop) read outer tensors too
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    needed.update(name for n in sub.node for name in n.input if name)
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    graph = cut.graph
    del graph.node[:]
    graph.node.extend(reversed(keep))
    kept_inits = [i for i in model.graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    return cut


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _samples(image_size: int, normalization: str) -> list[np.ndarray]:
    """Model inputs for verification: the example photograph (if present) and a synthetic image,
    scaled as the runtime's preprocessing scales them."""
    import cv2
    from walkcut.runtime.sources.preprocess import normalization_affine, resize_square

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:image_size, 0:image_size] / max(image_size - 1, 1)
    synthetic = np.stack([x, y, (x > 0.5) ^ (y > 0.5)], axis=-1) * 200 + rng.integers(0, 55, (image_size, image_size, 3))
    images = [synthetic.astype(np.uint8)]
    bgr = cv2.imread(str(_EXAMPLE), cv2.IMREAD_COLOR) if _EXAMPLE.exists() else None
    if bgr is not None:
        images.insert(0, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    scale, shift = normalization_affine(normalization)
    return [(resize_square(im, image_size).transpose(2, 0, 1) * scale - shift)[None].astype(np.float32)
            for im in images]


def export_onnx_vit(source: str | Path, out: str | Path, *, layers: str | None = None,
                    normalize: str = "imagenet", image_size: int | None = None, prefix_tokens: int | None = None,
                    cut_defaults: dict | None = None, int8: bool = False, progress: bool = True) -> VitExport:
    """Turn the ONNX vision transformer ``source`` into the walkcut model ``out`` and verify it.

    Parameters
    ----------
    source : path
        An ONNX ViT: one NCHW image input; ``Softmax`` nodes giving ``(B, heads, T, T)`` attention.
    out : path
        The ``.onnx`` file to write (atomically; removed again if verification fails).
    layers : str, optional
        ``all``, ``lasthalf``, ``lastK`` or a comma list of 0-based attention-layer indices (default
        ``walkcut.runtime.defaults.VIT_LAYERS``, tuned on real ViT attention).
    normalize : {"imagenet", "minus_one_to_one", "zero_to_one"}
        The pixel scaling the ViT was trained with (DINO, DINOv2 and most ViTs: ``imagenet``).
    image_size : int, optional
        S for a model whose input size is not fixed (a fixed size is read from the graph).
    prefix_tokens : int, optional
        Leading non-patch tokens (CLS + registers); inferred from the token count when omitted.
    cut_defaults : dict, optional
        Cut settings written into the contract (default ``VIT_CUT_DEFAULTS``).
    int8 : bool
        Quantise the matrix products to 8 bits (onnxruntime dynamic quantisation: int8 weights,
        activations quantised per call): about 1.6x faster on a CPU and 3.5x smaller, checked against
        the float32 graph (:data:`INT8_TV_TOLERANCE`). The contract says ``precision="int8"``.

    Raises
    ------
    OnnxVitError
        The file is not a ViT walkcut can read, or an option does not fit it (the message says which).
    VerificationError
        The exported attention differs from the original model's own Softmax outputs.
    """
    t0 = time.perf_counter()
    source, out = Path(source), Path(out)
    if normalize not in _d.NORMALIZATIONS:
        raise OnnxVitError(f"--normalize {normalize!r}: expected one of {', '.join(_d.NORMALIZATIONS)}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16):
        raise OnnxVitError(f"--image-size must be an integer >= 16, got {image_size!r}")
    if source.resolve() == out.resolve():
        raise OnnxVitError(f"--out {out} is the source model itself; write the walkcut model to another file")
    model = _load(source)
    input_name, S = _image_input(model, source, image_size)
    found = find_attention(model, input_name=input_name, image_size=S, path=source)
    R, prefix = patch_grid(found[0].tokens, S, prefix_tokens=prefix_tokens)
    if R > _d.MAX_ATTN_RES:
        raise OnnxVitError(f"{source}: a {R} x {R} patch grid is larger than the runtime handles "
                           f"(R <= {_d.MAX_ATTN_RES}); export at a smaller --image-size")
    try:
        picked = list(parse_layers(layers if layers is not None else _d.VIT_LAYERS, len(found)))
    except ValueError as exc:
        raise OnnxVitError(f"--layers: {exc}") from None
    selected = [found[i] for i in picked]
    graph = build_graph(model, input_name=input_name, image_size=S, selected=selected, prefix=prefix)
    layer_spec = layers if layers is not None else _d.VIT_LAYERS
    contract = ModelContract(
        image_size=S, attn_res=R, backbone="vit", layers=str(layer_spec), resolutions=(R,), weights=(1.0,),
        model_id=str(source), model_hash=_file_hash(source), normalization=normalize,
        precision="int8" if int8 else "fp32",
        opset=next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), 0),
        exporter_version=__version__,
        cut_defaults=dict(_d.VIT_CUT_DEFAULTS if cut_defaults is None else cut_defaults),
        extra={"source": "onnx", "family": "vit", "patch_size": S // R, "prefix_tokens": prefix,
               "heads": selected[0].heads, "attention_layers": len(found), "layer_indices": picked,
               "softmax_nodes": [s.node for s in selected]},
    )
    del graph.metadata_props[:]
    for key, value in contract.to_metadata().items():
        graph.metadata_props.add(key=key, value=value)
    path = _save_atomic(graph, out)
    import onnx

    try:
        onnx.checker.check_model(str(path))
        exported = _session(path)
        original = _session(_with_outputs(model, [s.output for s in selected]))
        rel = max_abs = row = 0.0
        for x in _samples(S, normalize):
            maps = original.run([s.output for s in selected], {input_name: x})
            got = exported.run([_d.OUTPUT_NAME], {_d.INPUT_NAME: x})[0]
            r, a, w = compare(got, aggregate_reference(maps, prefix))
            rel, max_abs, row = max(rel, r), max(max_abs, a), max(row, w)
    except Exception:
        path.unlink(missing_ok=True)
        raise
    tv = None
    if int8 and rel <= TOLERANCE and row <= 1e-3:
        try:
            tv, n_nodes = quantize_int8(path, _samples(S, normalize))
        except Exception:
            path.unlink(missing_ok=True)
            raise
    result = VitExport(path=path, contract=contract, size_bytes=path.stat().st_size,
                       seconds=time.perf_counter() - t0, n_nodes=n_nodes if int8 and tv is not None
                       else len(graph.graph.node), rel_error=rel, max_abs_error=max_abs, row_sum_error=row,
                       int8_tv=tv)
    if not (rel <= TOLERANCE and row <= 1e-3) or (tv is not None and not tv <= INT8_TV_TOLERANCE):
        path.unlink(missing_ok=True)
        raise VerificationError(f"verification failed (model removed): {result.summary()}")
    logger.info("exported %s", result.summary())
    return result


def quantize_int8(path: Path, samples: list[np.ndarray]) -> tuple[float, int]:
    """Replace the verified float32 walkcut model at ``path`` by its int8 version, in place.

    onnxruntime's dynamic quantisation of the ``MatMul`` nodes (int8 weights; activations quantised
    per call, so no calibration data is needed). Returns the mean row total-variation distance
    between the int8 and float32 attention over ``samples`` and the int8 graph's node count; the
    metadata (the contract, which already says ``int8``) is carried over.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".int8.part", dir=path.parent)
    os.close(fd)
    try:
        logging.disable(logging.WARNING)  # its advice to pre-process is for calibrated static quantisation
        try:
            quantize_dynamic(str(path), tmp, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        finally:
            logging.disable(logging.NOTSET)
        quantized = onnx.load(tmp)
        source = onnx.load(str(path), load_external_data=False)
        del quantized.metadata_props[:]
        quantized.metadata_props.extend(source.metadata_props)
        fp32, q = _session(path), _session(quantized)
        tv = max(float(0.5 * np.abs(q.run([_d.OUTPUT_NAME], {_d.INPUT_NAME: x})[0].astype(np.float64)
                                    - fp32.run([_d.OUTPUT_NAME], {_d.INPUT_NAME: x})[0]).sum(-1).mean())
                 for x in samples)
        n_nodes = len(quantized.graph.node)
        _save_atomic(quantized, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return tv, n_nodes


def _save_atomic(model, out: Path) -> Path:
    """Write ``model`` to ``out`` through a temporary file in the same folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the model private to this user
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


__all__ = ["INT8_TV_TOLERANCE", "AttentionSoftmax", "OnnxVitError", "VitExport", "aggregate_reference", "export_onnx_vit",
           "find_attention", "patch_grid", "quantize_int8"]
