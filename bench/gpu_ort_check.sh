#!/usr/bin/env bash
# The GPU machine's side of bench/gpu_ort_check.py (its header: what .whl/ holds and why).
# onnxruntime-gpu does not fit one call's 64 MiB, so it arrives in 4 parts over back-to-back calls on
# one warm machine (ignored files already there are kept between calls):
#   run(command="ls -l .whl", carry=[".whl/onnxruntime_gpu-1.31.1-cp312-notrt.tar.xz.part0"])   # part1, part2 likewise
#   run(command="bash bench/gpu_ort_check.sh", carry=[".whl/onnxruntime_gpu-1.31.1-cp312-notrt.tar.xz.part3",
#       ".whl/onnxruntime_gpu-1.31.1-cp312-notrt.tar.xz.sha256", ".whl/diffusers-0.42.1-py3-none-any.whl"], timeout_s=570)
set -euo pipefail
N=.whl/onnxruntime_gpu-1.31.1-cp312-notrt.tar.xz; S=/tmp/site; mkdir -p "$S" "${OUT:=gpu_ort_out}"
for i in 0 1 2 3; do [ -f "$N.part$i" ] || { echo "missing $N.part$i (parts here: $(ls .whl 2>/dev/null | tr '\n' ' ')); carry it in a call on this warm machine first" >&2; exit 2; }; done
cat "$N".part0 "$N".part1 "$N".part2 "$N".part3 > /tmp/ort.tar.xz && (cd /tmp && sed "s|  .*|  ort.tar.xz|" "$OLDPWD/$N.sha256" | sha256sum -c --quiet)
tar -xJf /tmp/ort.tar.xz -C "$S" && rm /tmp/ort.tar.xz
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$S" .whl/diffusers-*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$S" .
export PYTHONPATH="$S" PYTHONUNBUFFERED=1
python3 bench/gpu_ort_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_ort.log"
