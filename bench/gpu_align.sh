#!/usr/bin/env bash
# The learned registration's training run on a GPU (issue 3): the published-size net (width 1,
# 256x256 crops, batch 16) for as many steps as fit in BUDGET seconds (default 240).
# Here first:  bash bench/gpu_wheels.sh
#              .venv/bin/python bench/registration.py --write-train-split .regdata
#              (the pairs bench/registration.py does not score; ~30 MB, ignored via .git/info/exclude)
# There:       run(command="bash bench/gpu_align.sh 240", carry=[".whl", ".regdata"], timeout_s=420)
# Back here:   .venv/bin/python bench/registration.py --weights FILES_AT/matcher.pt
#              (the benchmark's pairs stay here: the trained net is scored on this machine's CPU)
# Dry run here: PY=.venv/bin/python DEVICE=cpu BATCH=1 PROBE=2 bash bench/gpu_align.sh 40
set -uo pipefail
export PYTHONUNBUFFERED=1
BUDGET=${1:-240}
PY=${PY:-python3} DEVICE=${DEVICE:-cuda} BATCH=${BATCH:-16} PROBE=${PROBE:-40}
OUT=${OUT:-/tmp/gpu-align}
mkdir -p "$OUT"
if [ -d .whl ] && [ "$DEVICE" != cpu ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
train() {  # steps, checkpoint, extra flags...
  local steps=$1 out=$2
  shift 2
  $PY -m ums align-train --pairs .regdata/train --out "$out" --steps "$steps" --batch "$BATCH" --crop 256 \
    --width 1.0 --translation-px 22 --device "$DEVICE" --no-progress "$@"
}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  # timed steps (the first ones include CUDA start-up) size the real run to the budget
  train "$PROBE" "$OUT/probe.pt"
  per_step=$($PY -c "import torch; print(torch.load('$OUT/probe.pt', weights_only=True)['training']['seconds'] / $PROBE)")
  steps=$($PY -c "print(max(8, int(($BUDGET - 20) / $per_step) // 4 * 4))")
  echo "probe: $per_step s/step -> $steps steps"
  rm -f "$OUT"/probe.*
  train "$steps" "$OUT/matcher.pt" --val-pairs .regdata/val --val-every $((steps / 4)) --save-every $((steps / 4))
  echo "(exit $?)"
  $PY -c "
import json
for x in json.load(open('$OUT/matcher.history.json')):
    if 'val_epe_median' in x:
        print(f\"step {x['step'] + 1}: {x['seconds']:.0f} s, held-out median EPE {x['val_epe_median']:.2f} px\")"
} 2>&1 | tee "$OUT/gpu_align.txt"
