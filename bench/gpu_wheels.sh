#!/usr/bin/env bash
# Prepare, on the CPU machine, the wheels the GPU image lacks (it has python3 3.12 with torch,
# torchvision, OpenCV headless, scipy, scikit-image, rich, typer, PyYAML, safetensors, tensorboard,
# matplotlib, onnxruntime; nothing can be fetched there). Writes .whl/ (git-ignored via
# .git/info/exclude, ~12 MB); carry it: run(command="bash bench/gpu_check.sh", carry=[".whl"]).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
PIP="${PIP:-.venv/bin/python -m pip}"
$PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  albumentations==2.0.8 albucore==0.0.24 stringzilla==5.3.2 simsimd==6.5.16 defusedxml==0.7.1 \
  segment-anything==1.0 pycocotools==2.0.11 ensemble-boxes==1.0.9
# natten 0.21.7 is a source package: the pure-Python build made here (no libnatten kernels; the model
# then uses its own gather path on CUDA too, and gpu_check_na.py compares against natten's flex backend)
natten_wheel=$(find ~/.cache/pip/wheels -name 'natten-0.21.7-py3-none-any.whl' | head -1)
if [ -z "$natten_wheel" ]; then
  $PIP wheel -q --no-deps -w .whl natten==0.21.7
else
  cp "$natten_wheel" .whl/
fi
ls -la .whl && du -sh .whl
