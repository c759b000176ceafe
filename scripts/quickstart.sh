#!/usr/bin/env bash
# The README's first command: set up .venv, train the quickstart YOLOF on the built-in synthetic
# shapes (CPU, minutes), evaluate it on the held-out split, and draw its detections.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
OUT=${1:-runs/quickstart}
.venv/bin/python train.py --config config/quickstart.yaml --output_dir "$OUT"
.venv/bin/python test.py --weight "$OUT/last.pth" -d synthetic --max_images 8 --save_dir "$OUT/detections"
echo "metrics: $OUT/metrics.jsonl   pictures: $OUT/detections/   PR curve: $OUT/eval/"
