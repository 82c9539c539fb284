"""Runtime latency per stage (preprocess / engine / cuts / upsample) with exported models on ORT.

Two modes:

    # 1. export models with random weights into a scratch folder (imports torch; not the runtime)
    python bench/bench_runtime.py export --arch tiny --image-size 512 --attn-res 32 --out /tmp/wc/tiny_512_32.onnx
    # 2. measure through the runtime only (no torch in this process), on a bundled example image
    python bench/bench_runtime.py measure /tmp/wc/tiny_512_32.onnx /tmp/wc/sd15_512_64.onnx --runs 5

``measure`` warms up once, then reports median and p90 of ``--runs`` over
``Segmenter(EngineSource).set_image(img).segment()``, split into the stages the Segmenter times,
plus the backend, providers, precision, contract hash and file size of each model, as one JSON line
per model and a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("preprocess", "engine", "cuts", "upsample")


def export(args) -> int:
    import torch
    from walkcut.export.api import build_contract
    from walkcut.export.configs import build_random_components, load_architecture
    from walkcut.export.loading import empty_prompt_embedding, weights_hash
    from walkcut.export.onnx_export import export_onnx
    from walkcut.export.wrapper import AttentionExportModel

    torch.set_num_threads(os.cpu_count())
    arch = load_architecture(args.arch)
    unet, vae, text_encoder = build_random_components(arch, seed=0)
    if args.arch == "tiny":  # random init leaves some tiny layers at zero; perturb so attention varies
        with torch.no_grad():
            gen = torch.Generator().manual_seed(1)
            for module in (unet, vae):
                for p in module.parameters():
                    p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    emb = empty_prompt_embedding(text_encoder, arch.empty_prompt_ids())
    del text_encoder
    wrapper = AttentionExportModel(unet, vae, emb, image_size=args.image_size, attn_res=args.attn_res,
                                   layers=args.layers).eval()
    contract = build_contract(wrapper, model_id=f"random:{arch.name}",
                              model_hash=weights_hash(unet, vae.encoder, vae.quant_conv), fp16=False,
                              extra={"benchmark": True})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result = export_onnx(wrapper, args.out, contract, progress=False)
    print(result.summary())
    return 0


def measure(args) -> int:
    import numpy as np
    from walkcut.runtime.imageio import read_image
    from walkcut.runtime.segmenter import Segmenter
    from walkcut.runtime.sources.engine import EngineSource

    assert "torch" not in sys.modules
    image = read_image(args.image)
    print(json.dumps({"machine": platform.node(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                      "load_avg": os.getloadavg(), "image": str(args.image), "image_shape": list(image.shape)}),
          flush=True)
    rows = []
    for path in args.models:
        t = time.perf_counter()
        source = EngineSource.from_path(path, backend=args.backend)
        load_s = time.perf_counter() - t
        seg = Segmenter(source)
        samples = {k: [] for k in (*STAGES, "total")}
        for i in range(args.runs + 1):
            t = time.perf_counter()
            result = seg.set_image(image).segment(threshold=args.threshold)
            total = time.perf_counter() - t
            if i == 0:
                continue  # warm-up
            for k in STAGES:
                samples[k].append(result.timings[k])
            samples["total"].append(total)

        def p90(v):
            return float(np.percentile(v, 90))

        row = {"model": str(path), "mb": round(Path(path).stat().st_size / 1e6, 1), **source.describe(),
               "session_load_s": round(load_s, 2), "runs": args.runs, "segments": result.n_segments,
               "ms": {k: [round(1e3 * statistics.median(v), 1), round(1e3 * p90(v), 1)] for k, v in samples.items()},
               "load_avg_after": os.getloadavg()}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del seg, source
    print("\n| model | S | R | backend | " + " | ".join(f"{k} ms p50/p90" for k in (*STAGES, "total")) + " |")
    print("|---|---|---|---|" + "---|" * (len(STAGES) + 1))
    for r in rows:
        cells = " | ".join(f"{r['ms'][k][0]:.1f} / {r['ms'][k][1]:.1f}" for k in (*STAGES, "total"))
        print(f"| {Path(r['model']).name} | {r['image_size']} | {r['attn_res']} | {r['backend']} | {cells} |")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    e = sub.add_parser("export")
    e.add_argument("--arch", default="tiny")
    e.add_argument("--image-size", type=int, default=512)
    e.add_argument("--attn-res", type=int, default=32)
    e.add_argument("--layers", default="encoder")
    e.add_argument("--out", required=True)
    m = sub.add_parser("measure")
    m.add_argument("models", nargs="+", type=Path)
    m.add_argument("--image", type=Path, default=ROOT / "examples" / "coffee.jpg")
    m.add_argument("--runs", type=int, default=5)
    m.add_argument("--backend", default="ort-cpu")
    m.add_argument("--threshold", default="auto-ncut")
    args = p.parse_args(argv)
    return export(args) if args.mode == "export" else measure(args)


if __name__ == "__main__":
    raise SystemExit(main())
