#!/usr/bin/env bash
# The dense matcher's training on a GPU (research code: bench/dense_matcher_train.py), in slices that
# fit lent machines: the published-size net (width 1, 256x256 crops, batch 16; READOUT soft-argmax by
# default, regress for the published head) on a schedule of TOTAL steps (default 60000,
# docs/reference/registration.md §5.3),
# trained for BUDGET seconds per call (default 240), then saved.
# Here first:  bash bench/gpu_wheels.sh
#              .venv/bin/python bench/registration.py --write-train-split .regdata
#              (the pairs bench/registration.py does not score; ~30 MB, ignored via .git/info/exclude)
#              mkdir -p .regstate; cp FILES_AT/matcher.training-state.pt .regstate/   (from an earlier slice)
# There:       run(command="bash bench/gpu_align.sh 240", carry=[".whl", ".regdata", ".regstate"], timeout_s=420)
# Back here:   .venv/bin/python bench/registration.py --weights FILES_AT/matcher.pt
#              (the benchmark's pairs stay here: the trained net is scored on this machine's CPU)
# Dry run here: PY=.venv/bin/python DEVICE=cpu BATCH=1 bash bench/gpu_align.sh 20
set -uo pipefail
export PYTHONUNBUFFERED=1
BUDGET=${1:-240} TOTAL=${2:-60000}
PY=${PY:-python3} DEVICE=${DEVICE:-cuda} BATCH=${BATCH:-16} READOUT=${READOUT:-soft-argmax}
OUT=${OUT:-/tmp/gpu-align}
mkdir -p "$OUT"
if [ -d .whl ] && [ "$DEVICE" != cpu ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
resume=()
if [ -f .regstate/matcher.training-state.pt ]; then
  cp .regstate/matcher.training-state.pt "$OUT/"
  resume=(--resume)
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  timeout $((BUDGET + 180)) $PY bench/dense_matcher_train.py --pairs .regdata/train --val-pairs .regdata/val \
    --out "$OUT/matcher.pt" --steps "$TOTAL" --batch "$BATCH" --crop 256 --width 1.0 --readout "$READOUT" --translation-px 22 \
    --device "$DEVICE" --val-every 2000 --save-every 1000 --max-seconds "$BUDGET" --no-progress "${resume[@]}"
  echo "(exit $?)"
  $PY -c "
import json
history = json.load(open('$OUT/matcher.history.json'))
print(f'{len(history)} of $TOTAL steps; the last 100: EPE {sum(h[\"epe\"] for h in history[-100:]) / len(history[-100:]):.2f} px')
for h in history:
    if 'val_epe_median' in h:
        print(f\"step {h['step'] + 1}: {h['seconds']:.0f} s, held-out median EPE {h['val_epe_median']:.2f} px\")"
} 2>&1 | tee "$OUT/gpu_align.txt"
