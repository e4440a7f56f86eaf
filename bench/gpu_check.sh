#!/usr/bin/env bash
# One prepared GPU session (about 8 minutes on an H100): every figure the open issues wait for.
# Here first: bash bench/gpu_wheels.sh   (the packages the GPU image lacks, into .whl/)
# There:      run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=600)
# Each step has its own time limit, so one slow step cannot eat the others' time; the output goes
# to $OUT/gpu_check.txt as well (files under $OUT come back).
set -uo pipefail
export PYTHONUNBUFFERED=1
PY=python3
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
LOG=${OUT:-/tmp}/gpu_check.txt
step() { echo; echo "=== $1"; shift; timeout "$@"; echo "(exit $?)"; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, natten; print('torch', torch.__version__, 'natten', natten.__version__, 'libnatten', natten.HAS_LIBNATTEN)"
  step "neighborhood attention: natten na2d vs gather path (issue 6)" 90 $PY bench/gpu_check_na.py
  step "fusion speed at 480x640, fp32/bf16 (issue 6)" 150 $PY bench/fuse.py --skip-cpu --repeat 10
  step "training throughput, full config 480x640 batch 2 (issue 7)" 200 $PY bench/train.py --steps 6
  step "SAM prompts batched vs one by one (issue 4)" 90 $PY bench/autolabel.py --device cuda --no-detector
} 2>&1 | tee "$LOG"
