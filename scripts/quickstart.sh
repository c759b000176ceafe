#!/usr/bin/env bash
# The README's first command: set up .venv, train the quickstart YOLOF on the built-in synthetic
# shapes (CPU, minutes), evaluate it on the held-out split, and draw its detections.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
OUT=${1:-runs/quickstart}
# solver.amp=auto: bf16 autocast where the CPU has native bf16 (avx512_bf16 / amx_bf16), fp32 elsewhere (logged);
# the preset itself stays fp32, so that tests and ablation studies built on it run alike on every machine
.venv/bin/python train.py --config config/quickstart.yaml --output_dir "$OUT" --opts solver.amp=auto
.venv/bin/python test.py --weight "$OUT/last.pth" -d synthetic --max_images 8 --save_dir "$OUT/detections"
echo "metrics: $OUT/metrics.jsonl   pictures: $OUT/detections/   PR curve: $OUT/eval/"
