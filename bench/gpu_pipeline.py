"""End-to-end stage timings with the attention pass on a CUDA GPU (torch fp16) and the cuts on the CPU.

For a machine with torch + CUDA (no TensorRT or onnxruntime-gpu needed): the full SD 1.5
architecture with random weights (timing does not depend on the weights; segments from random
weights mean nothing), S = 512, R = 32, ``encoder`` preset. Stages per image: preprocess (CPU),
attention (GPU, fp16, CUDA-graph replay, copied back to host as float32), cuts and upsampling (CPU,
walkcut runtime). Needs walkcut importable (``pip install --no-deps .``).

    python bench/gpu_pipeline.py [--image examples/coffee.jpg] [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import cuda_graph  # bench/cuda_graph.py, beside this script


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default="examples/coffee.jpg")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--preset", default="encoder")
    ap.add_argument("--tiny", action="store_true", help="tiny architecture on the CPU (S=128, R=8): a smoke test")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from walkcut.export import configs, wrapper
    from walkcut.runtime import cut_transition_matrix
    from walkcut.runtime.imageio import read_image
    from walkcut.runtime.sources.contract import ModelContract
    from walkcut.runtime.sources.preprocess import preprocess
    from walkcut.runtime.upsample import upsample_labels

    dev = torch.device("cpu" if args.tiny else "cuda")
    S, R = (128, 8) if args.tiny else (512, 32)
    arch = configs.load_architecture("tiny" if args.tiny else "sd15")
    unet, vae, text_encoder = configs.build_random_components(arch, seed=0, device=str(dev))
    with torch.no_grad():
        emb = text_encoder(torch.tensor([arch.empty_prompt_ids()], device=dev))[0]
    del text_encoder
    dtype = torch.float32 if args.tiny else torch.float16
    unet.to(dtype)
    vae.to(dtype)
    model = wrapper.AttentionExportModel(unet, vae, emb.to(dtype), image_size=S, attn_res=R, layers=args.preset).eval().to(dev)
    contract = ModelContract(image_size=S, attn_res=R)
    image = read_image(args.image)

    static_x = torch.zeros(1, 3, S, S, device=dev)
    if args.tiny:
        def replay():
            with torch.no_grad():
                return model(static_x)
    else:
        replay_graph, static_out = cuda_graph.capture(model, static_x)

        def replay():
            replay_graph()
            return static_out

    times = {k: [] for k in ("preprocess", "attention (GPU + copy)", "cuts", "upsample", "total")}
    for i in range(args.runs + 3):
        t0 = time.perf_counter()
        x = preprocess(image, contract)
        t1 = time.perf_counter()
        static_x.copy_(torch.from_numpy(x).to(dev, non_blocking=True))
        P = replay()[0].float().cpu().numpy()
        t2 = time.perf_counter()
        P = P / P.sum(axis=1, keepdims=True)
        cut = cut_transition_matrix(P)
        t3 = time.perf_counter()
        upsample_labels(cut.labels.reshape(R, R), image.shape[:2], image_rgb=image)
        t4 = time.perf_counter()
        if i >= 3:
            for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                times[k].append(1e3 * v)
    name = "cpu (tiny arch)" if args.tiny else torch.cuda.get_device_name(dev)
    print(f"gpu_pipeline: {name}, torch {torch.__version__}, {arch.name} arch (random weights), "
          f"S={S}, R={R}, preset {args.preset}, {dtype}; image {args.image} {image.shape[1]}x{image.shape[0]}; "
          f"{cut.n_segments} segments; rows sum to 1 within {float(np.abs(P.sum(1) - 1).max()):.1e}")
    print("| stage | median ms | p90 ms |\n|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {statistics.median(v):.1f} | {float(np.percentile(v, 90)):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
