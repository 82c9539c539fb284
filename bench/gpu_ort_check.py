"""The exported engine on a GPU: onnxruntime CUDA against torch on the same card, then end to end.

One prepared run for the GPU machine (torch + CUDA installed, no network; see bench/gpu_ort_check.sh,
which installs onnxruntime-gpu and diffusers from carried files and calls this script). Steps, in
the order that puts the issue's targets first; each step's result goes into ``OUT/gpu_ort.json`` as
soon as it finishes (written atomically), so a run cut short still reports what it did:

1. ``env``: torch, the GPU, onnxruntime and whether its CUDA provider starts.
2. ``export_fp16``: the SD 1.5 architecture with random weights (speed does not depend on the
   weights), ``encoder`` preset, S = 512, R = 32, exported in fp16 with
   ``walkcut export --random-weights --arch sd15 --fp16`` when this walkcut has that option, else
   through the export API on random components (seed 0) built here.
3. ``ort_fp16``: the shipped backend (:class:`walkcut.runtime.sources.backends.OrtBackend`,
   ``ort-cuda``) timed plain (``session.run``), with IO binding, and with IO binding + CUDA graph;
   each from the host image to the host attention (what the runtime sees) and, for the bound
   variants, the device pass alone (``run_with_iobinding``, the figure comparable with torch's).
   One extra variant outside the runtime tries the CUDA provider's ``prefer_nhwc`` layout.
4. ``accuracy``: the ORT CUDA fp16 attention against the torch fp32 wrapper with the same weights
   (relative error max|a - b| / max|b|, within the export's fp16 tolerance).
5. ``e2e``: ``walkcut video CLIP --engine sd15_fp16.onnx --backend ort-cuda`` on a 512 x 512 clip
   made here (moving shapes), with worker threads and worker processes: FPS, per-stage p50 / p90,
   and the GPU's share of the wall time (frames x engine p50 / seconds; the engine stage includes
   the CPU's output checks, so this over-counts GPU time and under-counts idle time).
6. ``export_fp32`` and ``ort_fp32``: the same in fp32.
7. ``torch``: the torch wrapper in fp16, eager, and ``torch.compile`` + CUDA graph (bench/gpu_compile.py's
   method), on the same card in the same process.

    python bench/gpu_ort_check.py --out $OUT                          # the GPU run
    python bench/gpu_ort_check.py --device cpu --arch tiny --out /tmp/dry   # dry run on a CPU machine

Preparing the carried files (here, on a machine with network, in the repository root; ``.whl/`` is
ignored by git). The GPU machine has Python 3.12, torch 2.11 + CUDA 13 (with the nvidia-* CUDA 13
and cuDNN 9 wheels), onnx, onnxscript, transformers, OpenCV and the CPU onnxruntime, but neither
onnxruntime-gpu nor diffusers::

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d /tmp/wheels onnxruntime-gpu==1.31.1 diffusers==0.42.1

The onnxruntime-gpu wheel (cp312, manylinux_2_28, CUDA 13 build) is 256 MB, and a device call
carries at most 64 MiB. Recompressing does not help much (its CUDA kernels are stored compressed
already: xz takes the unpacked wheel without its TensorRT provider, which that machine cannot use,
to 204 MB), so it travels in 4 parts of 51 MB over back-to-back calls on one warm machine, where
ignored files already there are kept between calls; bench/gpu_ort_check.sh checks the parts against
their SHA-256 and unpacks them as pip would (a wheel is a zip of site-packages)::

    mkdir -p /tmp/ortsite .whl && (cd /tmp/ortsite && unzip -q /tmp/wheels/onnxruntime_gpu-1.31.1-*.whl \
        && rm onnxruntime/capi/libonnxruntime_providers_tensorrt.so)
    N=onnxruntime_gpu-1.31.1-cp312-notrt.tar.xz
    tar -C /tmp/ortsite -cf - . | xz -6 -T0 > /tmp/$N
    split -n 4 -d -a 1 /tmp/$N .whl/$N.part && (cd /tmp && sha256sum $N) > .whl/$N.sha256
    cp /tmp/wheels/diffusers-0.42.1-py3-none-any.whl .whl/

Then four device calls in a row (each within the machine's 30 s idle window), the first three
carrying one part each with a trivial command, the last one carrying the fourth part, the checksum
and diffusers and running the check (bench/gpu_ort_check.sh's header has them verbatim; about 8
minutes of device time in all, the last call needs ``timeout_s=570``).
onnxruntime finds CUDA through torch: the script imports torch first (which loads libcudart, cuBLAS
and cuDNN from the nvidia-* wheels) and puts torch/lib and nvidia/*/lib on LD_LIBRARY_PATH for the
``walkcut video`` child, which never imports torch.

``--device cpu`` runs every step that does not need CUDA with the tiny architecture (S = 128,
R = 8) on the CPU provider: the export, the same backend variants (IO binding included; no CUDA
graph), the accuracy check, torch eager and the end-to-end video run. It proves the script, not speed.

Targets (bench/RESULTS.md): ORT CUDA ``encoder`` fp16, S = 512, R = 32: <= 10 ms per pass on an
H100 / H200; end to end >= 30 FPS.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench/cuda_graph.py

ARCH_SHAPES = {"sd15": (512, 32), "tiny": (128, 8)}


# --- bookkeeping ----------------------------------------------------------------------------------

class Report:
    """The JSON report, rewritten whole after every step (a killed run keeps what it finished)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / "gpu_ort.json"
        self.data: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "steps": {}}

    def step(self, name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        log(f"--- {name}")
        try:
            result = fn(*args, **kwargs)
            entry = {"ok": True, **(result or {})}
        except Exception as exc:  # noqa: BLE001 (a failing step is a result; the others still run)
            traceback.print_exc()
            entry = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
            result = None
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        self.data["steps"][name] = entry
        self.write()
        log(f"{name}: {json.dumps(entry, default=str)[:1500]}")
        return result

    def write(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.path)  # whole or nothing


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def timed(fn, *, runs: int, warmup: int, sync=lambda: None) -> dict:
    """Median / p90 / min in ms of ``fn()`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(1e3 * (time.perf_counter() - t))
    ts.sort()
    return {"median_ms": round(statistics.median(ts), 3), "p90_ms": round(ts[int(0.9 * (len(ts) - 1))], 3),
            "min_ms": round(ts[0], 3), "runs": runs}


def rel_error(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


# --- CUDA libraries for onnxruntime-gpu -----------------------------------------------------------

def cuda_library_dirs() -> list[str]:
    """Folders holding the CUDA 13 / cuDNN 9 libraries that torch brings (torch/lib, nvidia/*/lib)."""
    dirs = []
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        for pattern in ("torch/lib", "nvidia/*/lib", "nvidia/*/*/lib"):
            for d in sorted(glob.glob(os.path.join(entry, pattern))):
                if glob.glob(os.path.join(d, "lib*.so*")) and d not in dirs:
                    dirs.append(d)
    return dirs


def point_ort_at_cuda() -> list[str]:
    """Let onnxruntime (here and in the ``walkcut video`` child) find torch's CUDA libraries."""
    dirs = cuda_library_dirs()
    old = os.environ.get("LD_LIBRARY_PATH", "")
    os.environ["LD_LIBRARY_PATH"] = ":".join(dirs + ([old] if old else []))  # for child processes
    try:
        import torch  # noqa: F401  (loads libcudart / cuBLAS / cuDNN into this process first)
    except ImportError:
        pass
    return dirs


# --- steps ----------------------------------------------------------------------------------------

def step_env(args) -> dict:
    import numpy as np
    import onnxruntime as ort

    info = {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": ort.__version__,
            "onnxruntime_file": ort.__file__, "providers": ort.get_available_providers(),
            "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(), "device_arg": args.device}
    try:
        import torch

        info.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        info["torch"] = None
    if args.device == "cuda":
        info["cuda_library_dirs"] = args.cuda_dirs
        if hasattr(ort, "preload_dlls"):
            try:
                ort.preload_dlls(directory="")  # nvidia site packages, then the default search path
            except Exception as exc:  # noqa: BLE001
                info["preload_dlls_error"] = str(exc)
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError(f"this onnxruntime ({ort.__version__} at {ort.__file__}) has no CUDA provider; "
                               f"is onnxruntime-gpu first on PYTHONPATH?")
    try:
        info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,power.limit",
                                             "--format=csv,noheader"], check=False, capture_output=True, text=True,
                                            timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def build_torch(args) -> dict:
    """Random components (seed 0) and the fp32 wrapper: the torch side of every comparison."""
    import torch
    from walkcut.export import configs, wrapper
    from walkcut.export.loading import weights_hash

    arch = configs.load_architecture(args.arch)
    unet, vae, text_encoder = configs.build_random_components(arch, seed=0)
    with torch.no_grad():
        emb = text_encoder(torch.tensor([arch.empty_prompt_ids()]))[0]
    model = wrapper.AttentionExportModel(unet, vae, emb, image_size=args.size, attn_res=args.res,
                                         layers=args.preset).eval()
    # the digest `walkcut export` writes as model_hash: equal hashes mean equal weights
    digest = weights_hash(unet, vae.encoder, vae.quant_conv)
    return {"unet": unet, "vae": vae, "emb": emb, "torch_fp32": model, "weights_hash": digest}


def cli_has_random_weights() -> bool:
    res = subprocess.run([sys.executable, "-m", "walkcut", "export", "--help"], check=False, capture_output=True, text=True)
    return "--random-weights" in res.stdout


def step_export(args, state, precision: str) -> dict:
    from walkcut.runtime.sources.engine import read_contract

    fp16 = precision == "fp16"
    out = args.work / f"{args.arch}_{args.preset}_{precision}.onnx"
    info: dict = {"path": str(out)}
    if cli_has_random_weights():
        cmd = [sys.executable, "-m", "walkcut", "export", "--random-weights", "--arch", args.arch, "--out", str(out),
               "--image-size", str(args.size), "--attn-res", str(args.res), "--layers", args.preset,
               "--no-progress"] + (["--fp16"] if fp16 else [])
        t0 = time.perf_counter()
        res = subprocess.run(cmd, check=False, capture_output=True, text=True)
        info.update(route="cli", command=" ".join(cmd[1:]), rc=res.returncode, stdout=res.stdout.strip()[-800:],
                    stderr=res.stderr.strip()[-800:], seconds_export=round(time.perf_counter() - t0, 1))
        if res.returncode != 0:
            info["route"] = "cli failed; export API"
    if info.get("route") != "cli":
        from walkcut.export import api, onnx_export

        model = state["torch_fp32"]
        contract = api.build_contract(model, model_id=f"random-weights:{args.arch}:seed0",
                                      model_hash=state["weights_hash"], fp16=fp16,
                                      extra={"arch": args.arch, "source": "random weights (gpu_ort_check.py)"})
        result = onnx_export.export_onnx(model, out, contract, fp16=fp16, progress=False)
        info.update(route=info.get("route", "export API"), summary=result.summary())
    contract = read_contract(out)
    size = out.stat().st_size + sum(p.stat().st_size for p in out.parent.glob(out.name + ".data"))
    info.update(bytes=size, model_hash=contract.model_hash, precision=contract.precision,
                same_weights_as_torch=contract.model_hash == state["weights_hash"])
    state[f"onnx_{precision}"] = out
    return info


def _input(args):
    import numpy as np

    return np.random.default_rng(0).uniform(-1, 1, (1, 3, args.size, args.size)).astype(np.float32)


def step_ort(args, state, precision: str) -> dict:
    """The shipped backend on the model, in each variant; outputs kept for the accuracy step."""
    from walkcut.runtime.sources.backends import OrtBackend
    from walkcut.runtime.sources.engine import read_contract

    path = state[f"onnx_{precision}"]
    io = read_contract(path).io
    shapes = (io.input_shape, io.output_shape)
    name = "ort-cuda" if args.device == "cuda" else "ort-cpu"
    x = _input(args)
    variants = {"plain": {"io_binding": False}, "io_binding": {"io_binding": True}}
    if args.device == "cuda":
        variants["io_binding+cuda_graph"] = {"io_binding": True, "cuda_graph": True}
    results: dict = {"backend": name}
    for label, options in variants.items():
        try:
            t0 = time.perf_counter()
            backend = OrtBackend(path, name, io_shapes=shapes, **options)
            entry = {"session_s": round(time.perf_counter() - t0, 1)}
            first = backend.run(x)  # the CUDA graph is captured here
            entry["host_to_host"] = timed(lambda b=backend: b.run(x), runs=args.runs, warmup=args.warmup)
            bound = getattr(backend, "_bound", None)
            if bound is not None:  # the device pass alone: no copies, comparable with torch's timing
                entry["device_only"] = timed(lambda b=bound: b.session.run_with_iobinding(b.binding),
                                             runs=args.runs, warmup=args.warmup)
            entry["describe"] = backend.describe()
            state.setdefault("ort_out", {})[(precision, label)] = first
            entry["matches_plain"] = (rel_error(first, state["ort_out"][(precision, "plain")])
                                      if (precision, "plain") in state["ort_out"] and label != "plain" else None)
            del backend
        except Exception as exc:  # noqa: BLE001 (one variant failing is a result)
            traceback.print_exc()
            entry = {"error": f"{type(exc).__name__}: {exc}"[:1500]}
        results[label] = entry
    if args.device == "cuda":
        results["nhwc+io_binding+cuda_graph"] = _raw_nhwc(path, shapes, x, args)
    return results


def _raw_nhwc(path, shapes, x, args) -> dict:
    """The CUDA provider with ``prefer_nhwc`` (not a runtime option yet: measured to decide)."""
    import numpy as np
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=[
            ("CUDAExecutionProvider", {"enable_cuda_graph": "1", "prefer_nhwc": "1"}), "CPUExecutionProvider"])
        out_name = sess.get_outputs()[0].name
        xin = ort.OrtValue.ortvalue_from_shape_and_type(list(shapes[0]), np.float32, "cuda", 0)
        yout = ort.OrtValue.ortvalue_from_shape_and_type(list(shapes[1]), np.float32, "cuda", 0)
        binding = sess.io_binding()
        binding.bind_ortvalue_input(sess.get_inputs()[0].name, xin)
        binding.bind_ortvalue_output(out_name, yout)
        xin.update_inplace(x)
        sess.run_with_iobinding(binding)
        return {"device_only": timed(lambda: sess.run_with_iobinding(binding), runs=args.runs, warmup=args.warmup)}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"[:1500]}


def step_accuracy(args, state) -> dict:
    """Each ORT output against torch fp32 with the same weights (else against the ORT fp32 export)."""
    import torch
    from walkcut.export.onnx_export import FP16_TOLERANCE, FP32_TOLERANCE

    with torch.no_grad():
        ref = state["torch_fp32"](torch.from_numpy(_input(args))).numpy()  # (1, n, n), CPU fp32
    outs = state.get("ort_out", {})
    out: dict = {}
    for (precision, label), got in sorted(outs.items()):
        if state.get(f"same_weights_{precision}"):
            against, err = "torch fp32 (CPU), same weights", rel_error(got, ref)
        elif precision == "fp16" and state.get("same_exports") and ("fp32", "plain") in outs:
            against, err = "ORT fp32 export, same weights (the CLI's random weights differ from torch's)", \
                rel_error(got, outs[("fp32", "plain")])
        else:
            against, err = "none: weights differ from torch's", None
        tol = FP16_TOLERANCE if precision == "fp16" else FP32_TOLERANCE
        out[f"{precision}/{label}"] = {"rel_error": err, "against": against, "tolerance": tol,
                                       "within": None if err is None else err <= tol,
                                       "row_sum_error": float(abs(got.sum(-1) - 1).max())}
    return out


def step_torch(args, state) -> dict:
    import cuda_graph
    import torch
    from walkcut.export import wrapper

    model = state["torch_fp32"]
    cuda = args.device == "cuda"
    dev = torch.device(args.device)
    x = torch.from_numpy(_input(args)).to(dev)
    res: dict = {}
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:  # as bench/gpu_check.py: fp16 components in a new wrapper (its aggregation stays float32)
        torch.backends.cudnn.benchmark = True
        unet, vae = state["unet"].to(dev, torch.float16), state["vae"].to(dev, torch.float16)
        model = wrapper.AttentionExportModel(unet, vae, state["emb"].to(dev, torch.float16), image_size=args.size,
                                             attn_res=args.res, layers=args.preset).eval().to(dev)

    def eager():
        with torch.no_grad():
            return model(x)

    res["eager"] = timed(eager, runs=args.runs, warmup=args.warmup, sync=sync)
    if cuda:
        replay, _ = cuda_graph.capture(model, x.clone())
        res["eager+cuda_graph"] = timed(replay, runs=args.runs, warmup=args.warmup, sync=sync)
        if not args.no_compile:
            try:
                t0 = time.perf_counter()
                compiled = torch.compile(model)
                replay, _ = cuda_graph.capture(compiled, x.clone())
                res["compile_setup_s"] = round(time.perf_counter() - t0, 1)
                res["compile+cuda_graph"] = timed(replay, runs=args.runs, warmup=args.warmup, sync=sync)
            except Exception as exc:  # noqa: BLE001
                res["compile+cuda_graph"] = {"error": f"{type(exc).__name__}: {exc}"[:800]}
        res["dtype"] = "float16"
    else:
        res["dtype"] = "float32"
    return res


def make_clip(path: Path, side: int, frames: int) -> None:
    """A synthetic clip: coloured shapes moving over a gradient (what matters here is the frame size)."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (side, side))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    yy, xx = np.mgrid[0:side, 0:side]
    base = np.stack([xx * 255 // side, yy * 255 // side, np.full_like(xx, 90)], -1).astype(np.uint8)
    for t in range(frames):
        frame = base.copy()
        cx, cy = int(side * (0.3 + 0.2 * np.sin(t / 15))), int(side * (0.5 + 0.2 * np.cos(t / 20)))
        cv2.circle(frame, (cx, cy), side // 6, (30, 200, 40), -1)
        cv2.rectangle(frame, (side // 2 + t % (side // 4), side // 5), (side - 10, side // 2), (200, 40, 40), -1)
        writer.write(frame)
    writer.release()


_SUMMARY = re.compile(r"(\d+) frames written of (\d+) read, (\d+) dropped, ([\d.]+) s, ([\d.]+) FPS")
_STAGE = re.compile(r"(\w+) ([\d.]+)/([\d.]+)")


def parse_video_summary(text: str) -> dict:
    """FPS and the per-stage p50 / p90 from ``walkcut video``'s closing lines."""
    out: dict = {}
    m = _SUMMARY.search(text)
    if m:
        out.update(frames=int(m.group(1)), read=int(m.group(2)), dropped=int(m.group(3)),
                   seconds=float(m.group(4)), fps=float(m.group(5)))
    for line in text.splitlines():
        if line.startswith("latency ms (p50 / p90):"):
            out["stages_ms"] = {k: [float(a), float(b)] for k, a, b in _STAGE.findall(line.split(":", 1)[1])}
    if "fps" in out and "engine" in out.get("stages_ms", {}):
        busy = out["frames"] * out["stages_ms"]["engine"][0] / 1e3 / out["seconds"]
        out["engine_busy_share"] = round(busy, 3)  # upper bound of the GPU's busy share
        out["gpu_idle_share_at_least"] = round(max(0.0, 1 - busy), 3)
    return out


def step_e2e(args, state) -> dict:
    path = state["onnx_fp16" if args.device == "cuda" else "onnx_fp32"]
    side = 512 if args.arch == "sd15" else 128
    clip = args.work / f"clip_{side}.mp4"
    make_clip(clip, side, args.frames)
    backend = "ort-cuda" if args.device == "cuda" else "ort-cpu"
    res: dict = {"clip": f"{side}x{side}, {args.frames} frames (synthetic)", "backend": backend}
    runs = [(f"threads{w}", ["--workers", str(w)]) for w in args.workers]
    runs += [(f"processes{w}", ["--workers", str(w), "--processes"]) for w in args.process_workers]
    # the CUDA graph variant only with the largest thread count: it changes the engine stage alone
    plan = [(0, label, extra) for label, extra in runs]
    if args.device == "cuda" and args.workers:
        plan.append((1, f"threads{max(args.workers)}", ["--workers", str(max(args.workers))]))
    for graph, label, extra in plan:
        cmd = [sys.executable, "-m", "walkcut", "video", str(clip), "--engine", str(path), "--backend", backend,
               "--out", str(args.work / f"e2e_{label}.mp4"), *extra]
        env = dict(os.environ, WALKCUT_CUDA_GRAPH=str(graph))
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=args.e2e_timeout)
            entry = {"rc": p.returncode, **parse_video_summary(p.stderr)}
            if p.returncode != 0 or "fps" not in entry:
                entry["stderr_tail"] = p.stderr.strip()[-1200:]
        except subprocess.TimeoutExpired:
            entry = {"error": f"no result within --e2e-timeout {args.e2e_timeout:.0f} s"}
        entry.update(command=" ".join(cmd[1:]), wall_s=round(time.perf_counter() - t0, 1))
        res[f"{label}{'+cuda_graph' if graph else ''}"] = entry
        state["json"].data["steps"]["e2e (so far)"] = res  # replaced by the step's entry when it ends
        state["json"].write()
    state["json"].data["steps"].pop("e2e (so far)", None)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_ort_out")),
                    help="where gpu_ort.json goes (default $OUT)")
    ap.add_argument("--work", type=Path, default=None, help="models and clips (default: a temp folder)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--arch", choices=sorted(ARCH_SHAPES), default=None, help="default sd15 (cuda), tiny (cpu)")
    ap.add_argument("--preset", default="encoder")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per variant (default 30 cuda, 3 cpu)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--frames", type=int, default=150, help="frames of the end-to-end clip")
    ap.add_argument("--workers", default="4,8", help="worker-thread counts for the end-to-end run")
    ap.add_argument("--process-workers", default="8", help="worker-process counts ('' for none)")
    ap.add_argument("--e2e-timeout", type=float, default=180.0)
    ap.add_argument("--skip", default="", help="comma-separated steps to skip (export_fp32, torch, e2e, ...)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (about 40 s of compiling)")
    args = ap.parse_args(argv)
    args.arch = args.arch or ("sd15" if args.device == "cuda" else "tiny")
    args.size, args.res = ARCH_SHAPES[args.arch]
    gpu = args.device == "cuda"
    args.runs = args.runs or (30 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    try:
        args.workers = [int(w) for w in args.workers.split(",") if w]
        args.process_workers = [int(w) for w in args.process_workers.split(",") if w]
    except ValueError:
        ap.error(f"--workers / --process-workers take comma-separated integers, got {args.workers!r}, "
                 f"{args.process_workers!r}")
    if any(w < 1 for w in args.workers + args.process_workers):
        ap.error("worker counts must be >= 1")
    skip = {s for s in args.skip.split(",") if s}
    args.out.mkdir(parents=True, exist_ok=True)
    own_work = args.work is None
    if own_work:
        import tempfile

        args.work = Path(tempfile.mkdtemp(prefix="gpu_ort_"))
    args.work.mkdir(parents=True, exist_ok=True)
    args.cuda_dirs = point_ort_at_cuda() if gpu else []

    report = Report(args.out)
    report.data["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    state: dict = {"json": report}
    env = report.step("env", step_env, args)
    if env is None:
        return 1

    def prepare():
        state.update(build_torch(args))
        return {"weights_hash": state["weights_hash"], "cli_has_random_weights": cli_has_random_weights()}

    if report.step("torch_model", prepare) is None:
        return 1
    for precision in ("fp16", "fp32") if gpu else ("fp32",):
        if f"export_{precision}" in skip:
            continue
        exp = report.step(f"export_{precision}", step_export, args, state, precision)
        if exp is None:
            continue
        state[f"same_weights_{precision}"] = exp["same_weights_as_torch"]
        state.setdefault("hashes", set()).add(exp["model_hash"])
        state["same_exports"] = len(state["hashes"]) == 1
        report.step(f"ort_{precision}", step_ort, args, state, precision)
        if precision == "fp16" or not gpu:
            report.step("accuracy", step_accuracy, args, state)
            if "e2e" not in skip:
                report.step("e2e", step_e2e, args, state)
    if gpu:
        report.step("accuracy", step_accuracy, args, state)  # now with the fp32 variants too
    if "torch" not in skip:
        report.step("torch", step_torch, args, state)
    report.data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    report.write()
    if own_work:
        shutil.rmtree(args.work, ignore_errors=True)
    log(f"wrote {report.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
