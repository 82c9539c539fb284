"""Export benchmark: full SD architecture with random weights (no download) on this machine.

Measures, per layer preset: export time and peak RSS, ORT-vs-torch error, node count, FLOPs of the
torch wrapper, and latency of onnxruntime vs eager torch (median and p90 of ``--runs`` after one
warm-up) on the same input. Speed does not depend on the weights, so random ones are used.

    python bench/bench_export.py                         # SD 1.5, S=512, R=32, encoder then all
    python bench/bench_export.py --arch tiny --image-size 128 --attn-res 8 --runs 3   # smoke test
    python bench/bench_export.py --arch vega --image-size 1024 --presets encoder --runs 1  # SDXL family

Each preset runs in its own subprocess so that its peak RSS is its own. Results go to stdout as
one JSON object per preset (and ``--json FILE`` if given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def _timed(fn, runs: int) -> dict:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return {"median_s": statistics.median(times), "p90_s": times[min(len(times) - 1, int(0.9 * len(times)))],
            "runs": runs}


def run_preset(args) -> dict:
    import numpy as np
    import onnxruntime as ort
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from walkcut.export.api import build_contract
    from walkcut.export.configs import load_architecture
    from walkcut.export.loading import random_components, weights_hash
    from walkcut.export.onnx_export import export_onnx, sample_image
    from walkcut.export.wrapper import AttentionExportModel

    torch.set_num_threads(os.cpu_count())
    arch = load_architecture(args.arch)
    t0 = time.perf_counter()
    c = random_components(arch.name, seed=0)  # text encoders (both for SDXL) run once, then dropped
    unet, vae = c.unet, c.vae
    build_s = time.perf_counter() - t0
    wrapper = AttentionExportModel(unet, vae, c.prompt_embedding, pooled_embedding=c.pooled_embedding,
                                   image_size=args.image_size, attn_res=args.attn_res, layers=args.layers).eval()
    contract = build_contract(wrapper, model_id=f"random:{arch.name}",
                              model_hash=weights_hash(unet, vae.encoder, vae.quant_conv), fp16=False,
                              extra={"benchmark": True})
    out = Path(args.out_dir) / f"bench_{arch.name}_{args.layers.replace(',', '-')}_{args.image_size}_{args.attn_res}.onnx"
    result = export_onnx(wrapper, out, contract, progress=False)
    export_rss = _peak_rss_gib()
    row = {
        "arch": arch.name, "layers": args.layers, "image_size": args.image_size, "attn_res": args.attn_res,
        "n_layers": len(wrapper.selected), "resolutions": list(wrapper.resolutions),
        "unet_params_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 1),
        "build_random_s": round(build_s, 1),
        "export_s": round(result.seconds, 1), "export_peak_rss_gib": round(export_rss, 2),
        "onnx_mb": round(result.size_bytes / 1e6, 1), "onnx_nodes": result.n_nodes,
        "rel_error": result.rel_error, "max_abs_error": result.max_abs_error,
        "row_sum_error": result.row_sum_error,
    }
    if args.no_timing:  # export, size and error only (full-size SDXL runs on a shared 2-core machine)
        row["peak_rss_gib"] = round(_peak_rss_gib(), 2)
        if not args.keep:
            out.unlink(missing_ok=True)
            out.with_name(out.name + ".data").unlink(missing_ok=True)
        return row
    x = sample_image(args.image_size, seed=1)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        wrapper(x)
    row["torch_gflops"] = round(counter.get_total_flops() / 1e9, 1)

    def torch_run():
        with torch.no_grad():
            return wrapper(x)

    row["torch_eager"] = _timed(torch_run, args.runs)
    xn = x.numpy()
    variants = {"ort_default": {}}
    if args.ort_variants:
        variants["ort_extended_2threads"] = {
            "graph_optimization_level": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "intra_op_num_threads": os.cpu_count()}
        variants["ort_all_2threads_seq"] = {
            "graph_optimization_level": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "intra_op_num_threads": os.cpu_count(),
            "execution_mode": ort.ExecutionMode.ORT_SEQUENTIAL}
    reference = torch_run().numpy()
    for name, opts in variants.items():
        so = ort.SessionOptions()
        for k, v in opts.items():
            setattr(so, k, v)
        t = time.perf_counter()
        sess = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
        load_s = time.perf_counter() - t
        timing = _timed(lambda s=sess: s.run(None, {"image": xn}), args.runs)
        got = sess.run(None, {"image": xn})[0]
        timing["session_load_s"] = round(load_s, 1)
        timing["rel_error_vs_torch"] = float(np.abs(got - reference).max() / np.abs(reference).max())
        timing["speedup_vs_torch"] = round(row["torch_eager"]["median_s"] / timing["median_s"], 2)
        row[name] = timing
        sess = None  # free the session before the next variant
    row["peak_rss_gib"] = round(_peak_rss_gib(), 2)
    if not args.keep:
        out.unlink(missing_ok=True)
        out.with_name(out.name + ".data").unlink(missing_ok=True)
    return row


def flop_table(args) -> dict:
    """GFLOPs per component and preset, counted on the meta device (nothing is computed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from walkcut.export.configs import build_random_components, load_architecture
    from walkcut.export.wrapper import AttentionExportModel

    arch = load_architecture(args.arch)
    unet, vae, _ = build_random_components(arch, device="meta", text_encoder=False)
    f = 2 ** (len(arch.vae["block_out_channels"]) - 1)
    x = torch.zeros(1, 3, args.image_size, args.image_size, device="meta")
    emb = torch.zeros(1, arch.tokenizer["model_max_length"], arch.unet["cross_attention_dim"], device="meta")
    latent = torch.zeros(1, 4, args.image_size // f, args.image_size // f, device="meta")
    pooled, added = None, None
    if arch.is_xl:  # SDXL family: pooled text embedding + size/crop time ids
        pooled = torch.zeros(1, arch.text_encoder_2["projection_dim"], device="meta")
        s = args.image_size
        added = {"text_embeds": pooled, "time_ids": torch.tensor([[s, s, 0, 0, s, s]], device="meta")}
    gflops = {}

    def count(name, fn):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn()
        gflops[name] = round(counter.get_total_flops() / 1e9, 1)

    count("vae_encoder", lambda: vae.quant_conv(vae.encoder(x)))
    count("unet_full_step", lambda: unet(latent, torch.tensor(300, device="meta"), encoder_hidden_states=emb,
                                         added_cond_kwargs=added))
    for preset in args.presets.split(","):
        w = AttentionExportModel(unet, vae, emb, pooled_embedding=pooled, image_size=args.image_size,
                                 attn_res=args.attn_res, layers=preset)
        count(f"wrapper_{preset}", lambda w=w: w(x))
    params = {"unet": sum(p.numel() for p in unet.parameters()) / 1e6,
              "vae_encoder": sum(p.numel() for p in vae.encoder.parameters()) / 1e6}
    return {"arch": arch.name, "image_size": args.image_size, "gflops": gflops,
            "params_m": {k: round(v, 1) for k, v in params.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="sd15")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--attn-res", type=int, default=32)
    p.add_argument("--presets", default="encoder,all", help="comma list of layer presets to measure")
    p.add_argument("--layers", help=argparse.SUPPRESS)  # one preset, in the child process
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--ort-variants", action="store_true", help="also time ORT session-option variants")
    p.add_argument("--no-timing", action="store_true",
                   help="export, size and error only: no latency runs and no run-time FLOP count")
    p.add_argument("--out-dir", default=str(ROOT / "models"))
    p.add_argument("--keep", action="store_true", help="keep the exported ONNX files")
    p.add_argument("--json", help="append results to this JSON-lines file")
    p.add_argument("--flops", action="store_true", help="only count FLOPs per preset (meta device, seconds)")
    args = p.parse_args(argv)
    if args.flops:
        print(json.dumps(flop_table(args)), flush=True)
        return 0
    if args.layers:  # child: one preset
        print(json.dumps(run_preset(args)), flush=True)
        return 0
    print(json.dumps({"machine": platform.node(), "cpu_count": os.cpu_count(),
                      "processor": platform.processor(), "python": platform.python_version()}), flush=True)
    for preset in args.presets.split(";" if ":" in args.presets else ","):
        cmd = [sys.executable, __file__, "--layers", preset, "--arch", args.arch,
               "--image-size", str(args.image_size), "--attn-res", str(args.attn_res),
               "--runs", str(args.runs), "--out-dir", args.out_dir]
        cmd += ["--ort-variants"] * args.ort_variants + ["--keep"] * args.keep + ["--no-timing"] * args.no_timing
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if res.returncode or not lines:
            print(json.dumps({"layers": preset, "error": res.stderr[-3000:]}), flush=True)
            continue
        print(lines[-1], flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(lines[-1] + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
