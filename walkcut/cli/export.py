"""``walkcut export``: parse, call :func:`walkcut.export.api.export_model` (Stable Diffusion) or
:func:`walkcut.export.vit.export_vit_model` (DINOv2), print one line.

This module is imported by the ``walkcut`` dispatcher for its parser only: torch is imported inside
:func:`run`, so ``walkcut --help`` works without the export extra.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import warnings
from pathlib import Path

from walkcut.cli.args import output_file
from walkcut.cli.errors import CommandError, UsageError, note

logger = logging.getLogger(__name__)


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand to the dispatcher's ``subparsers``."""
    p = subparsers.add_parser(
        "export",
        help="export the attention pass of Stable Diffusion or DINOv2 to ONNX (and TensorRT)",
        description=(
            "Export image -> aggregated self-attention (1, R*R, R*R) as a verified ONNX model. "
            "MODEL is a hub id (downloaded when online), a local diffusers folder, or a single "
            ".safetensors/.ckpt checkpoint file, of SD 1.x, SD 2.x or the SDXL family (SDXL, SSD-1B, "
            "Segmind-Vega), or a DINOv2 hub id (facebook/dinov2-small, -base, -large, "
            "facebook/dinov2-with-registers-*) or save_pretrained folder. Without weights, --random-weights "
            "--arch NAME exports an architecture with random weights to try the pipeline (its segments are "
            "meaningless). MODEL may also be an ONNX vision transformer (FILE.onnx): its "
            "attention Softmax outputs are kept, the rest of the graph dropped, and the aggregation appended."
        ),
    )
    p.add_argument("--model", metavar="PATH_OR_ID",
                   help="hub id, diffusers folder or checkpoint file; or a DINOv2 hub id or transformers folder")
    p.add_argument("--random-weights", action="store_true",
                   help="no download: export --arch with random weights (try it without weights; the "
                   "segments are meaningless)")
    p.add_argument("--out", required=True, type=output_file(".onnx"), metavar="FILE.onnx",
                   help="output ONNX path, e.g. models/sd15.onnx")
    p.add_argument("--image-size", type=int, default=None, metavar="S",
                   help="input side, multiple of 64 (default: the family's native size, 512 for SD 1.x/2.x, "
                   "1024 for the SDXL family); for DINOv2 a multiple of the patch size (default 224)")
    p.add_argument("--attn-res", type=int, default=None, metavar="R",
                   help="output grid side (SD default 32: 1024 nodes); for DINOv2 it is S / patch size")
    p.add_argument("--layers", default=None, metavar="SPEC",
                   help="SD: encoder (down+mid, default), all (16 layers), or resolutions like 64,32; ViT: "
                   "all, lasthalf, lastN or 0-based layer indices like 8,9,10,11 (default: lasthalf, the tuned set)")
    p.add_argument("--normalize", default="imagenet", choices=["imagenet", "minus_one_to_one", "zero_to_one"],
                   help="ONNX ViT: the pixel scaling it was trained with (imagenet: (x/255 - mean)/std, "
                   "DINO/DINOv2 and most ViTs; minus_one_to_one: x/127.5 - 1; zero_to_one: x/255)")
    p.add_argument("--int8", action="store_true",
                   help="ONNX ViT: quantise the matrix products to 8 bits (onnxruntime dynamic quantisation: "
                   "about 1.6x faster on a CPU, 3.5x smaller; checked against float32)")
    p.add_argument("--prefix-tokens", type=int, default=None, metavar="K",
                   help="ONNX ViT: leading non-patch tokens (CLS + registers); inferred when omitted")
    p.add_argument("--timestep", type=int, default=None, metavar="T", help="UNet timestep (300; SD only)")
    p.add_argument("--noise", action="store_true", help="add fixed noise to the latent at T (off by default)")
    p.add_argument("--noise-seed", type=int, default=0, help="seed of that noise (0)")
    p.add_argument("--fp16", action="store_true", help="fp16 weights and compute (IO stays float32)")
    p.add_argument("--trt", action="store_true", help="also build a TensorRT engine beside the ONNX file")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out model (and its .data, .engine and .engine.json files); never "
                        "the --model input")
    p.add_argument("--arch", default=None,
                   help="architecture of a single checkpoint file or of --random-weights: tiny, sd15, sd2-base, "
                   "sdxl, ssd-1b, vega, tiny-sdxl, dinov2-s, dinov2-b, dinov2-l (-reg: with registers), "
                   "dinov2-tiny or a JSON config (detected from a checkpoint when omitted)")
    p.add_argument("--offline", action="store_true", help="never use the network (hub ids from cache only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


#: Packages of the ``export`` extra, checked before anything else is done.
EXPORT_PACKAGES = ("torch", "diffusers", "transformers", "onnx")
INSTALL_EXPORT = 'pip install "walkcut[export]"'
#: Seconds to wait for the model hub before deciding there is no network.
HUB_TIMEOUT_S = 3.0


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub (``$HF_ENDPOINT``) accepts a TCP connection within ``timeout``."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def offline_mode(model: str | None, offline: bool) -> bool:
    """True when the hub must not be used: ``--offline``, ``HF_HUB_OFFLINE``, or no network.

    Without this check a hub id and no network cost minutes of retries (each logged twice) before
    the error; with it the cache is searched at once and the error lists the other ways to supply
    weights.
    """
    if offline or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    if not model or Path(model).exists():
        return False  # no weights to fetch, or a local folder or file: never the network
    if hub_reachable():
        return False
    note(f"no network ({os.environ.get('HF_ENDPOINT') or 'huggingface.co'} unreachable): looking for "
         f"{model} in the local Hugging Face cache only")
    os.environ["HF_HUB_OFFLINE"] = "1"
    return True


def hub_id_cached(model: str, filename: str = "unet/config.json") -> bool:
    """Whether the local Hugging Face cache holds ``filename`` of ``model`` (no network, no torch)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return True  # cannot tell here; the loader will say
    try:
        found = try_to_load_from_cache(model, filename)
    except ValueError:  # not a valid repo id: the loader gives the full message
        return True
    return isinstance(found, str)


def quiet_third_party() -> None:
    """Keep what matters from torch / diffusers / transformers / huggingface_hub: their errors, once.

    The tracer's warnings are about graph constants the export verifies anyway, and the libraries'
    deprecation notices address their own callers, not walkcut users.
    """
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", module=r"torch\.(onnx|jit)")
    warnings.filterwarnings("ignore", message=r".*TracerWarning.*")
    for name in ("huggingface_hub", "diffusers", "transformers", "torch.onnx"):
        lib = logging.getLogger(name)
        lib.setLevel(logging.ERROR)
        lib.propagate = False  # their own handler prints it; the root handler would print it again
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def missing_export_package() -> str | None:
    """The first package of the ``export`` extra that cannot be imported, without importing any."""
    for name in EXPORT_PACKAGES:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):  # ValueError: sys.modules[name] is None (import blocked)
            return name
    return None


#: Options that describe a diffusion pass: refused for a DINOv2 source (a flag given, or a value off its default).
SD_ONLY_OPTIONS = {"timestep": None, "noise": False, "noise_seed": 0}


def check_dinov2_arguments(args: argparse.Namespace) -> None:
    """Refuse the options a DINOv2 export cannot honour, naming them (a usage error)."""
    given = [f"--{k.replace('_', '-')}" for k, unset in SD_ONLY_OPTIONS.items() if getattr(args, k) != unset]
    if given:
        raise UsageError(f"{' and '.join(given)}: Stable Diffusion options; a DINOv2 export has no diffusion "
                         f"timestep or noise")
    if args.model and args.arch:
        raise UsageError(f"--arch {args.arch}: a DINOv2 folder or hub id carries its own config.json; --arch is "
                         f"for --random-weights")


def export_dinov2(args: argparse.Namespace, options: dict, local_only: bool):
    """The DINOv2 branch of :func:`run`: a hub id or folder, or ``--random-weights --arch``."""
    from walkcut.export.vit import export_vit_model, export_vit_random

    options = {k: v for k, v in options.items() if k not in SD_ONLY_OPTIONS}
    if args.random_weights:
        return export_vit_random(args.arch, args.out, **options)
    return export_vit_model(args.model, args.out, local_files_only=local_only, **options)


def check_export_outputs(args: argparse.Namespace) -> None:
    """The output policy (:mod:`walkcut.outputs`) for every file an export writes, before any work:
    the model, its external weights, and with ``--trt`` the engine and its JSON."""
    from walkcut.export.trt import engine_paths
    from walkcut.outputs import OutputError, check_outputs

    out = Path(args.out)
    items = [(out, "--out")]
    data = out.with_name(f"{out.name}.data")
    if data.exists():  # replaced, or removed when the new model keeps its weights inside
        items.append((data, "--out"))
    if args.trt:
        items += [(p, "--out (with --trt)") for p in engine_paths(out)]
    model = Path(args.model) if args.model else None
    inputs = [model] if model is not None and model.exists() else []
    if model is not None and model.is_dir():
        for path, flag in items:
            if path.exists() and model.resolve() in path.resolve().parents:
                raise OutputError(f"{flag} {path} is a file of the --model folder {model}; walkcut never replaces "
                                  f"an input, --overwrite or not: choose another --out")
    if model is not None and model.suffix.lower() == ".onnx":
        inputs.append(model.with_name(f"{model.name}.data"))
    check_outputs(items, overwrite=args.overwrite, inputs=inputs)


def run(args: argparse.Namespace) -> int:
    """Execute ``walkcut export``; return the exit code."""
    if args.random_weights == bool(args.model) or (args.random_weights and not args.arch):
        raise UsageError("give --model PATH_OR_ID, or --random-weights with --arch NAME (not both)")
    check_export_outputs(args)
    from walkcut.export.vit_spec import is_dinov2_source  # no torch: it reads config.json at most

    dinov2 = is_dinov2_source(args.model, args.arch)
    if dinov2:
        check_dinov2_arguments(args)
    if args.model and Path(args.model).suffix.lower() == ".onnx":
        if importlib.util.find_spec("onnx") is None:
            raise CommandError(f"walkcut export --model FILE.onnx needs the onnx package: {INSTALL_EXPORT} "
                               f"(or pip install onnx)", code=2)
        return _run_onnx_vit(args)  # onnx + onnxruntime only: no torch, no hub
    onnx_only = [flag for flag, given in (("--int8", args.int8), ("--prefix-tokens", args.prefix_tokens is not None),
                                          ("--normalize", args.normalize != "imagenet")) if given]
    if onnx_only:  # silently exporting fp32 (or another scaling) would not be what was asked for
        raise UsageError(f"{' and '.join(onnx_only)}: options of an ONNX vision transformer (--model FILE.onnx); "
                         f"this export's model sets its own precision (--fp16) and pixel scaling")
    missing = missing_export_package()
    if missing:
        raise CommandError(f"walkcut export needs the export extra ({missing} is not installed): "
                           f"{INSTALL_EXPORT}", code=2)
    # Before the imports: huggingface_hub reads HF_HUB_OFFLINE once, when it is imported.
    local_only = offline_mode(args.model, args.offline)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        quiet_third_party()
    if local_only and args.model and not Path(args.model).exists() and not (
            hub_id_cached(args.model, "config.json") if dinov2 else hub_id_cached(args.model)):
        # Fail before importing torch and diffusers (seconds on a small board) for an answer known now.
        if dinov2:
            raise CommandError(
                f"{args.model}: not in the local Hugging Face cache, and the hub cannot be used "
                f"({'--offline' if args.offline else 'no network'}). Supply the weights as a folder written by "
                f"save_pretrained (`huggingface-cli download {args.model} --local-dir dinov2` on a machine with "
                f"network), or use this hub id while online.", code=2)
        raise CommandError(
            f"{args.model}: not in the local Hugging Face cache, and the hub cannot be used "
            f"({'--offline' if args.offline else 'no network'}). Supply the weights in one of these ways: "
            f"(1) a local diffusers folder (`huggingface-cli download {args.model} --local-dir sd` on a machine "
            f"with network); (2) a single .safetensors/.ckpt checkpoint file; (3) this hub id while online "
            f"(set HF_TOKEN for gated repositories).", code=2)
    try:
        from walkcut.export.api import export_model, export_random
        from walkcut.export.loading import ModelSourceError
        from walkcut.export.onnx_export import VerificationError
    except ImportError as exc:
        missing = exc.name or "a package of the export extra"
        raise CommandError(f"walkcut export needs the export extra ({missing} is not installed): "
                           f"{INSTALL_EXPORT}", code=2) from exc
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        quiet_third_party()  # again: importing torch configures its own loggers' levels
    if args.trt and importlib.util.find_spec("tensorrt") is None:
        from walkcut.export.trt import INSTALL_HINT  # fail before the long export, not after it

        raise CommandError(INSTALL_HINT, code=2)
    # options left out (None) take the exporter's own defaults, which differ between SD and DINOv2
    options = {"image_size": args.image_size, "attn_res": args.attn_res, "layers": args.layers,
               "timestep": args.timestep, "noise": args.noise, "noise_seed": args.noise_seed, "fp16": args.fp16,
               "progress": not args.no_progress}
    options = {k: v for k, v in options.items() if v is not None}
    try:
        if dinov2:
            result = export_dinov2(args, options, local_only)
        elif args.random_weights:
            result = export_random(args.arch, args.out, **options)
        else:
            result = export_model(args.model, args.out, arch=args.arch, local_files_only=local_only, **options)
    except (ModelSourceError, VerificationError, ValueError) as exc:
        raise CommandError(str(exc), code=2) from exc
    print(result.summary())
    if args.trt:
        from walkcut.export.trt import build_engine

        try:
            engine = build_engine(result.path, result.contract, fp16=args.fp16)
        except (RuntimeError, ValueError) as exc:
            raise CommandError(str(exc), code=2) from exc
        print(f"{engine}  TensorRT engine (+ {engine.name}.json)")
    return 0


def _run_onnx_vit(args: argparse.Namespace) -> int:
    """``walkcut export --model FILE.onnx``: an existing ONNX vision transformer as the backbone."""
    from walkcut.export.onnx_vit import OnnxVitError, export_onnx_vit
    from walkcut.export.verify import VerificationError

    if not Path(args.model).is_file():
        raise UsageError(f"--model {args.model}: no such ONNX file")
    for flag, given in (("--fp16", args.fp16), ("--trt", args.trt), ("--noise", args.noise),
                        ("--arch", args.arch is not None), ("--attn-res", args.attn_res is not None),
                        ("--timestep", args.timestep is not None)):
        if given:
            raise UsageError(f"{flag} does not apply to an ONNX vision transformer (its patch grid fixes R; "
                             f"build a TensorRT engine from the exported file with trtexec)")
    try:
        result = export_onnx_vit(args.model, args.out, layers=args.layers, normalize=args.normalize,
                                 image_size=args.image_size, prefix_tokens=args.prefix_tokens,
                                 int8=args.int8, progress=not args.no_progress)
    except (OnnxVitError, VerificationError) as exc:
        raise CommandError(str(exc), code=2) from exc
    print(result.summary())
    return 0
