#!/usr/bin/env bash
# One device call on the GPU machine (no network): unpack onnxruntime-gpu 1.31.1 and diffusers from the
# carried .whl/ folder, install walkcut beside them, run bench/gpu_ort_check.py (what goes into .whl/
# and why: that script's header). Call: run(command="bash bench/gpu_ort_check.sh", carry=[".whl"]).
set -euo pipefail; S=/tmp/site; mkdir -p "$S" "${OUT:=gpu_ort_out}"; tar -xJf .whl/onnxruntime_gpu-1.31.1-cp312-notrt.tar.xz -C "$S"; python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$S" .whl/diffusers-*.whl; python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$S" .; export PYTHONPATH="$S" PYTHONUNBUFFERED=1; python3 bench/gpu_ort_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_ort.log"
