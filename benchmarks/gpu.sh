#!/usr/bin/env bash
# The GPU check: CUDA tests of the geometry, then `posekit bench` on mini-batches of 200 and 100 crops
# in fp16 + channels_last and in fp32. Runs from the repo root without installing
# posekit (PYTHONPATH); results go to $OUT (or ./bench_out).
set -uo pipefail
out="${OUT:-bench_out}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
python3 -m pytest -q -p no:cacheprovider tests/test_crop.py tests/test_heatmaps.py tests/test_robustness.py \
  -k "cuda or device_this_machine_lacks" 2>&1 | tail -3
for precision in fp16 fp32; do
  python3 -m posekit.cli bench --device cuda --batches 200 100 --depth 50 --max-batch 200 --repeats 5 \
    --channels-last --precision "$precision" --json "$out/bench_cuda_$precision.json" 2>&1 | tee "$out/bench_cuda_$precision.txt"
done
python3 benchmarks/user_path.py --device cuda 2>&1 | tee "$out/user_path_cuda.txt"
