#!/usr/bin/env bash
# scripts/gpu_check.sh: the suite's CUDA paths checked in one run that fits a GPU lease.
#
#   [GPU_CHECK_DEVICE=cuda|cpu] [PYTHON=python3] [OUT=outputs/gpu_check] scripts/gpu_check.sh
#
# 1. Installs the wheels the GPU machine lacks (built here by `make gpu-wheels` into
#    .gpu-wheels/, carried with the call) offline (--no-index) into a temporary --target
#    folder put on PYTHONPATH; the machine's own packages are left alone.
# 2. Runs scripts/gpu_check.py: the imports first, then every stage of scripts/gpu_stages.py
#    under one deadline (GPU_CHECK_DEADLINE_S, 420 s), writing to OUT at most three files:
#    status.json (each stage's status, seconds and figures), benchmark.json, logs.tar.gz.
# Exits non-zero when a package is missing, a stage fails or the deadline passes.
#
# GPU_CHECK_DEVICE=cpu rehearses every stage at a tiny size on the CPU through the same
# code (docs/performance.md). Other knobs: GPU_CHECK_STAGES (a comma list, e.g. to rerun
# the failed ones), GPU_CHECK_JOBS (stages at a time: 4 on CUDA, 1 on the CPU),
# GPU_CHECK_WHEELS (the wheels folder, .gpu-wheels).
set -u
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
WHEELS=${GPU_CHECK_WHEELS:-.gpu-wheels}
SITE=$(mktemp -d)
trap 'rm -rf "$SITE"' EXIT
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --disable-pip-version-check --target "$SITE" "$WHEELS"/*.whl \
    || echo "gpu_check: installing the wheels in $WHEELS failed" >&2
else
  echo "gpu_check: no wheels in $WHEELS (make gpu-wheels builds them)" >&2
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled \
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HYDRA_FULL_ERROR=1
"$PYTHON" scripts/gpu_check.py
