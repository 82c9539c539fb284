"""Does torch.compile speed up the attention pass? (torch + CUDA machine; SD 1.5 architecture, random weights)

Times the ``encoder``-preset wrapper in fp16 at S = 512, R = 32: eager, eager + CUDA graph,
``torch.compile`` (inductor, default mode), and compiled + CUDA graph. Each variant is tried on its
own; one that fails is reported with its error and the others still run. Prints one table.

    python bench/gpu_compile.py [--runs 20] [--preset encoder]
"""

from __future__ import annotations

import argparse
import statistics
import time

import cuda_graph  # bench/cuda_graph.py, beside this script


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--preset", default="encoder")
    args = ap.parse_args(argv)

    import torch
    from walkcut.export import configs, wrapper

    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    arch = configs.load_architecture("sd15")
    unet, vae, text_encoder = configs.build_random_components(arch, seed=0, device="cuda")
    with torch.no_grad():
        emb = text_encoder(torch.tensor([arch.empty_prompt_ids()], device=dev))[0]
    del text_encoder
    unet.half()
    vae.half()
    model = wrapper.AttentionExportModel(unet, vae, emb.half(), image_size=512, attn_res=32,
                                         layers=args.preset).eval().to(dev)
    x = torch.rand(1, 3, 512, 512, device=dev) * 2 - 1
    with torch.no_grad():
        ref = model(x).float()

    def timed(fn):
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(args.runs):
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            ts.append(1e3 * (time.perf_counter() - t))
        return statistics.median(ts), sorted(ts)[int(0.9 * (len(ts) - 1))]

    def graphed(fn):
        return cuda_graph.capture(fn, x.clone())

    rows = []

    def run(name, make):
        t0 = time.perf_counter()
        try:
            call, out = make()
            setup = time.perf_counter() - t0
            med, p90 = timed(call)
            err = float((out.float() - ref).abs().max() / ref.abs().max())
            rows.append((name, f"{med:.2f}", f"{p90:.2f}", f"{err:.1e}", f"{setup:.0f} s"))
        except Exception as exc:  # noqa: BLE001 (a failing variant is a result, not a crash)
            rows.append((name, "failed", "", "", f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"))

    def direct(fn):
        def make():
            def call():
                with torch.no_grad():
                    return fn(x)
            return call, call()
        return make

    compiled = torch.compile(model)
    run("eager", direct(model))
    run("eager + CUDA graph", lambda: graphed(model))
    run("torch.compile (inductor)", direct(compiled))
    run("torch.compile + CUDA graph", lambda: graphed(compiled))
    print(f"gpu_compile: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, SD 1.5 arch (random weights), "
          f"S=512, R=32, preset {args.preset}, fp16")
    print("| variant | median ms | p90 ms | rel. err vs eager | setup / note |\n|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
