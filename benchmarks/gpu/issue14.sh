#!/bin/bash
# GPU figures for the cached-reference issue (#14), in one device call: arms' step-time ratios (live and cached
# reference) on two architectures with random weights, and steered generation on the SmolLM2 architecture.
# Run from the repo root on a CUDA machine: bash benchmarks/gpu/issue14.sh OUTDIR
set -u
out=${1:-benchmarks/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)" | tee -a "$out/gpu.txt"
timeout 200 python3 benchmarks/bench_arms.py --config benchmarks/configs/smollm2-135m-instruct --device cuda \
  --rounds 12 --no-memory > "$out/arms_smollm2_cuda.log" 2>&1; echo "rc $?" >> "$out/arms_smollm2_cuda.log"
cp benchmarks/results/arms.json "$out/arms_smollm2_cuda.json"
timeout 200 python3 benchmarks/bench_arms.py --config benchmarks/configs/qwen2.5-1.5b-instruct --device cuda \
  --rounds 8 --no-memory > "$out/arms_qwen1.5b_cuda.log" 2>&1; echo "rc $?" >> "$out/arms_qwen1.5b_cuda.log"
cp benchmarks/results/arms.json "$out/arms_qwen1.5b_cuda.json"
timeout 100 python3 benchmarks/bench_generate.py --config benchmarks/configs/smollm2-135m-instruct --device cuda \
  --backends hf --rounds 8 > "$out/generate_smollm2_cuda.log" 2>&1; echo "rc $?" >> "$out/generate_smollm2_cuda.log"
cp benchmarks/results/generate_*cuda.json "$out/" 2>/dev/null
tail -n 25 "$out"/*.log
