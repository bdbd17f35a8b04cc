#!/usr/bin/env bash
# The device checks for a GPU machine, as one script: the CUDA tests, then the GPU benchmark.
#
# Needs: this repository with its requirements installed (requirements.txt: torch/torchvision with CUDA,
# timm, pytest, ...; `make setup` or `pip install -r requirements.txt`), one or more NVIDIA GPUs, and no
# network (the benchmark makes its own demo data). Run from anywhere:
#
#     OUT=/some/folder bash bench/gpu_check.sh     # results under $OUT (default: ./gpu-check)
#
# Writes $OUT/pytest-gpu.txt (pytest -m gpu), $OUT/gpu.json (bench/gpu.py; also printed) and
# $OUT/gpu-bench.txt. Takes about 6-8 minutes on one H200. Exit status: pytest's, or the benchmark's.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT="${OUT:-$PWD/gpu-check}"
export OUT
mkdir -p "$OUT"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 || command -v python )}"

echo "== $(date -u +%FT%TZ) $("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.device_count(), "GPU(s)", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true

echo "== pytest -m gpu"
"$PY" -m pytest -m gpu -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest-gpu.txt"
tests=${PIPESTATUS[0]}

echo "== bench/gpu.py"
"$PY" bench/gpu.py --out "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu-bench.txt"
bench=${PIPESTATUS[0]}

echo "== pytest exit $tests, bench exit $bench; results in $OUT"
[ "$tests" -eq 0 ] && exit "$bench" || exit "$tests"
