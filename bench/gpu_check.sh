#!/usr/bin/env bash
# One prepared GPU session (about 8 minutes on an H100): every figure the open issues wait for.
# Run from the repository root on the lent machine with the project's .venv:
#   bash bench/gpu_check.sh > "$OUT/gpu_check.txt" 2>&1
# Each step has its own time limit, so one slow step cannot eat the others' time.
set -uo pipefail
PY=${PY:-.venv/bin/python}
step() { echo; echo "=== $1"; shift; timeout "$@"; echo "(exit $?)"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step "neighborhood attention: natten na2d vs gather path (issue 6)" 90 $PY bench/gpu_check_na.py
step "fusion speed at 480x640, fp32/bf16 (issue 6)" 150 $PY bench/fuse.py --skip-cpu --repeat 10
step "training throughput, full config 480x640 batch 2 (issue 7)" 200 $PY bench/train.py --steps 6
step "SAM prompts batched vs one by one (issue 4)" 90 $PY bench/autolabel.py --device cuda
