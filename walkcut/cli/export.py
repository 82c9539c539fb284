"""``walkcut export``: parse, call :func:`walkcut.export.api.export_model`, print one line.

This module is imported by the ``walkcut`` dispatcher for its parser only: torch is imported inside
:func:`run`, so ``walkcut --help`` works without the export extra.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys

logger = logging.getLogger(__name__)


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand to the dispatcher's ``subparsers``."""
    p = subparsers.add_parser(
        "export",
        help="export the Stable Diffusion attention pass to ONNX (and TensorRT)",
        description=(
            "Export image -> aggregated self-attention (1, R*R, R*R) as a verified ONNX model. "
            "MODEL is a hub id (downloaded when online), a local diffusers folder, or a single "
            ".safetensors/.ckpt checkpoint file, of SD 1.x, SD 2.x or the SDXL family (SDXL, SSD-1B, "
            "Segmind-Vega). Without weights, --random-weights --arch NAME exports an architecture with "
            "random weights to try the pipeline (its segments are meaningless)."
        ),
    )
    p.add_argument("--model", metavar="PATH_OR_ID", help="hub id, diffusers folder or checkpoint file")
    p.add_argument("--random-weights", action="store_true",
                   help="no download: export --arch with random weights (try it without weights; the "
                   "segments are meaningless)")
    p.add_argument("--out", required=True, metavar="FILE.onnx", help="output ONNX path, e.g. models/sd15.onnx")
    p.add_argument("--image-size", type=int, default=None, metavar="S",
                   help="input side, multiple of 64 (default: the family's native size, 512 for SD 1.x/2.x, "
                   "1024 for the SDXL family)")
    p.add_argument("--attn-res", type=int, default=32, metavar="R", help="output grid side (32: 1024 nodes)")
    p.add_argument("--layers", default="encoder", metavar="SPEC",
                   help="encoder (down+mid, default), all (16 layers), or resolutions like 64,32")
    p.add_argument("--timestep", type=int, default=300, metavar="T", help="UNet timestep (300)")
    p.add_argument("--noise", action="store_true", help="add fixed noise to the latent at T (off by default)")
    p.add_argument("--noise-seed", type=int, default=0, help="seed of that noise (0)")
    p.add_argument("--fp16", action="store_true", help="fp16 weights and compute (IO stays float32)")
    p.add_argument("--trt", action="store_true", help="also build a TensorRT engine beside the ONNX file")
    p.add_argument("--arch", default=None,
                   help="architecture of a single checkpoint file or of --random-weights: tiny, sd15, sd2-base, "
                   "sdxl, ssd-1b, vega, tiny-sdxl or a JSON config (detected from a checkpoint when omitted)")
    p.add_argument("--offline", action="store_true", help="never use the network (hub ids from cache only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Execute ``walkcut export``; return the exit code."""
    if args.trt and importlib.util.find_spec("tensorrt") is None:
        from walkcut.export.trt import INSTALL_HINT  # fail before the long export, not after it

        print(f"walkcut export: error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    if args.random_weights == bool(args.model) or (args.random_weights and not args.arch):
        print("walkcut export: error: give --model PATH_OR_ID, or --random-weights with --arch NAME "
              "(not both)", file=sys.stderr)
        return 2
    from walkcut.export.api import export_model, export_random
    from walkcut.export.loading import ModelSourceError
    from walkcut.export.onnx_export import VerificationError

    options = {"image_size": args.image_size, "attn_res": args.attn_res, "layers": args.layers,
               "timestep": args.timestep, "noise": args.noise, "noise_seed": args.noise_seed, "fp16": args.fp16,
               "progress": not args.no_progress}
    try:
        if args.random_weights:
            result = export_random(args.arch, args.out, **options)
        else:
            result = export_model(args.model, args.out, arch=args.arch, local_files_only=args.offline, **options)
    except (ModelSourceError, VerificationError, ValueError) as exc:
        print(f"walkcut export: error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    if args.trt:
        from walkcut.export.trt import build_engine

        try:
            engine = build_engine(result.path, result.contract, fp16=args.fp16)
        except (RuntimeError, ValueError) as exc:
            print(f"walkcut export: error: {exc}", file=sys.stderr)
            return 2
        print(f"{engine}  TensorRT engine (+ {engine.name}.json)")
    return 0
