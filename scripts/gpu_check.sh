#!/usr/bin/env bash
# The GPU acceptance check, for the day a GPU is at hand: CUDA / cuDNN / the GPU, R50-C5 training under fp32, fp16
# and bf16 (losses that must agree, images/s, peak memory), inference FPS, a one-process NCCL DDP step and a resume
# on fewer devices, in one table (tools/gpu_check.py). At most 5 minutes; exits non-zero when a check fails, and 0
# after one line on a machine without CUDA. Arguments go to the tool (e.g. --device cuda:1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec timeout 300 .venv/bin/python -m tools.gpu_check "$@"
