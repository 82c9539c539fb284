"""GPU check of the export wrapper in torch (one command, < 5 minutes, no network).

Needs torch (with CUDA), diffusers, transformers, numpy and walkcut importable (``pip install
--no-deps -e .``: the folder-to-package mapping in pyproject.toml makes ``export/`` importable as
``walkcut.export``); the model is the full SD 1.5 architecture with random weights (speed does not
depend on the weights). Measures, at S=512 and R=32 by default:

- VAE encoder alone (fp16);
- the wrapper (VAE encoder + truncated UNet + capture + aggregation) for the ``encoder`` and ``all``
  presets, in fp16, eager and replayed from a CUDA graph;
- the fp16-vs-fp32 difference of the attention output and its row sums.

    python bench/gpu_check.py                       # CUDA, SD 1.5
    python bench/gpu_check.py --tiny --device cpu   # smoke test anywhere

Prints one table (median / p90 in ms over ``--runs`` after warm-up).
"""

from __future__ import annotations

import argparse
import statistics
import time

import cuda_graph  # bench/cuda_graph.py, beside this script


def _time(fn, runs: int, warmup: int, sync) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return statistics.median(times), times[min(runs - 1, int(0.9 * runs))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny test architecture (S=128, R=8)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--image-size", type=int)
    p.add_argument("--attn-res", type=int)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--presets", default="encoder,all")
    p.add_argument("--no-cuda-graphs", action="store_true")
    args = p.parse_args(argv)

    import torch
    from walkcut.export import configs
    from walkcut.export import wrapper as wrapper_mod
    t_start = time.perf_counter()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available; use --device cpu (with --tiny) for a smoke test")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    size = args.image_size or (128 if args.tiny else 512)
    res = args.attn_res or (8 if args.tiny else 32)
    runs, warmup = (3, 1) if args.tiny and not cuda else (args.runs, args.warmup)
    half = torch.float16 if cuda else torch.float32  # CPU fp16 convolutions are not a useful measure
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False

    arch = configs.load_architecture("tiny" if args.tiny else "sd15")
    unet, vae, text_encoder = configs.build_random_components(arch, seed=0, device=str(dev))
    with torch.no_grad():
        emb = text_encoder(torch.tensor([arch.empty_prompt_ids()], device=dev))[0].float()
    del text_encoder
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = (torch.rand(1, 3, size, size, generator=gen) * 2 - 1).to(dev)
    rows = []
    info = {"device": torch.cuda.get_device_name(dev) if cuda else "cpu", "torch": torch.__version__,
            "S": size, "R": res, "arch": arch.name}

    # fp32 references first, then the whole model goes to fp16 once
    refs = {}
    presets = args.presets.split(",")
    with torch.no_grad():
        for preset in presets:
            w = wrapper_mod.AttentionExportModel(unet, vae, emb, image_size=size, attn_res=res, layers=preset).eval().to(dev)
            refs[preset] = w(x).float().cpu()
    unet.to(half)
    vae.to(half)
    emb_h = emb.to(half)
    xh = x.to(half)

    def vae_encoder():
        with torch.no_grad():
            return vae.quant_conv(vae.encoder(xh))

    med, p90 = _time(vae_encoder, runs, warmup, sync)
    rows.append(("VAE encoder", str(half).replace("torch.", ""), "eager", med, p90, "", ""))

    for preset in presets:
        w = wrapper_mod.AttentionExportModel(unet, vae, emb_h, image_size=size, attn_res=res, layers=preset).eval().to(dev)
        with torch.no_grad():
            out = w(x)
        ref = refs[preset]
        err = float((out.float().cpu() - ref).abs().max() / ref.abs().max())
        row_err = float((out.float().sum(-1) - 1).abs().max())

        def eager(w=w):
            with torch.no_grad():
                return w(x)

        med, p90 = _time(eager, runs, warmup, sync)
        label = f"wrapper {preset} ({len(w.selected)} layers)"
        rows.append((label, str(half).replace("torch.", ""), "eager", med, p90, f"{err:.2e}", f"{row_err:.1e}"))
        if cuda and not args.no_cuda_graphs:
            replay, static_out = cuda_graph.capture(w, x.clone())
            med, p90 = _time(replay, runs, warmup, sync)
            g_err = float((static_out.float().cpu() - ref).abs().max() / ref.abs().max())
            rows.append((label, str(half).replace("torch.", ""), "CUDA graph", med, p90, f"{g_err:.2e}", ""))
            del replay, static_out

    print("gpu_check: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    header = ("what", "dtype", "mode", "median ms", "p90 ms", "rel err vs fp32", "|row sum-1|")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.2f} | {r[4]:.2f} | {r[5]} | {r[6]} |")
    print(f"gpu_check: total {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
