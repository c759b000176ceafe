#!/usr/bin/env bash
# Train a YOLOF model of the official zoo on COCO 2017 with its official recipe, through torchrun.
#
#   bash train.sh [MODE] [MODEL]      MODE: 8gpu (default) | 1gpu | 1gpu-accum | multinode
#                                     MODEL: r50_c5 (default) | r50_dc5 | r101_c5 | r101_dc5 | x101_c5 | csp_d53_dc5_3x ...
#   bash train.sh slurm MODEL [SLURM options] [train.py arguments]    one SLURM job (tools/submit.py, docs/cluster.md)
#
# Each preset carries its official batch, lr, schedule and warm-up (8 GPUs x the images per GPU below).
# Learning-rate scaling rule (linear, as the paper and the official code): with solver.scale_lr=true (the
# default) a different batch gets lr = base_lr * batch / reference_batch, and max_iter / steps / warmup scale
# by reference_batch / batch so that the run sees the same epochs. --accumulate N keeps the per-GPU memory of
# batch/N images.
#
# COCO layout expected under datasets/coco: annotations/instances_{train,val}2017.json, train2017/, val2017/.
# ImageNet start: each preset names its file under weights/ (R-50.pkl, R-101.pkl, X-101-64x4d.pkl, ...).
# Before torchrun starts, tools/launch_check.py checks the GPUs the mode needs, that file and the dataset folder,
# and says in one line what is missing and how to fix it (weights/README.md lists where each file is published).
# Running the same command again continues the run in OUT (from OUT/last.pth); another config stops in one line.
set -euo pipefail
cd "$(dirname "$0")"
MODE=${1:-8gpu}
MODEL=${2:-${MODEL:-r50_c5}}
case "$MODEL" in  # preset, images per GPU of the official recipe; official COCO val AP
  r50_c5)   PRESET=yolof_r50_c5_1x;        PER_GPU=8 ;;  # 37.7 AP, weights/R-50.pkl, batch 64, lr 0.12, 22.5k it
  r50_dc5)  PRESET=yolof_r50_dc5_1x;       PER_GPU=8 ;;  # 39.2 AP, weights/R-50.pkl, batch 64, lr 0.12, 22.5k it
  r101_c5)  PRESET=yolof_r101_c5_1x;       PER_GPU=8 ;;  # 39.8 AP, weights/R-101.pkl, batch 64, lr 0.12, 22.5k it
  r101_dc5) PRESET=yolof_r101_dc5_1x;      PER_GPU=4 ;;  # 40.5 AP, weights/R-101.pkl, batch 32, lr 0.06, 45k it
  x101_c5)  PRESET=yolof_x101_64x4d_c5_1x; PER_GPU=4 ;;  # 42.2 AP, weights/X-101-64x4d.pkl, batch 32, lr 0.06, 45k it
  csp_d53_dc5_3x)           PRESET=yolof_csp_d53_dc5_3x;           PER_GPU=8 ;;  # 41.2 AP, weights/cspdarknet53.pth
  csp_d53_dc5_9x)           PRESET=yolof_csp_d53_dc5_9x;           PER_GPU=8 ;;  # 42.8 AP, weights/cspdarknet53.pth
  csp_d53_dc5_9x_stage2_3x) PRESET=yolof_csp_d53_dc5_9x_stage2_3x; PER_GPU=8 ;;  # 43.2 AP, from the 9x detector
  *)        PRESET=yolof_${MODEL};         PER_GPU=${PER_GPU:-8} ;;  # any other preset in config/ by its name
esac
CONFIG=${CONFIG:-config/${PRESET}.yaml}
DATA=${DATA:-datasets/coco}
OUT=${OUT:-runs/${PRESET}}
if [ -x .venv/bin/python ]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python}; fi
[ -f "$CONFIG" ] || { echo "error: no preset $CONFIG (MODEL=$MODEL)"; exit 2; }
case "$MODE" in 8gpu|multinode) GPUS=8 ;; 1gpu|1gpu-accum) GPUS=1 ;; *) GPUS=0 ;; esac
# before any process starts: the GPUs, the ImageNet file and the dataset, one line for what is missing
if [ "$GPUS" -gt 0 ]; then
  "$PY" -m tools.launch_check "$MODE" --config "$CONFIG" --data "$DATA" --gpus "$GPUS" >/dev/null || exit 2
fi

case "$MODE" in
  8gpu)  # official: 8 GPUs x PER_GPU images, the preset's batch and lr as they are; a dead worker restarts all
    torchrun --nproc_per_node 8 --max-restarts "${MAX_RESTARTS:-3}" train.py --config "$CONFIG" --output_dir "$OUT" \
      --opts data.root="$DATA" train.checkpoint_period_iters=500 ;;
  1gpu)  # 1 GPU x PER_GPU images: lr and schedule rescaled by the linear rule (same epochs)
    python train.py --config "$CONFIG" --output_dir "$OUT" --opts data.root="$DATA" solver.batch_size="$PER_GPU" ;;
  1gpu-accum)  # 1 GPU, PER_GPU images x 8 accumulation steps = the official batch and lr
    python train.py --config "$CONFIG" --output_dir "$OUT" --accumulate 8 \
      --opts data.root="$DATA" solver.batch_size=$((8 * PER_GPU)) ;;
  multinode)  # e.g. 2 nodes x 8 GPUs: run on every node with the same command; twice the batch -> twice the lr.
    # c10d rendezvous: the nodes find each other at MASTER_ADDR:MASTER_PORT; an elastic restart (a node or worker
    # dies) restarts every worker, and they continue from OUT/last.pth by themselves (rank 0 reads it and sends it
    # to the others: no shared disk needed). train.checkpoint_period_iters sets how much a restart redoes.
    torchrun --nnodes "${NNODES:-2}" --nproc_per_node 8 --max-restarts "${MAX_RESTARTS:-3}" \
      --rdzv-backend c10d --rdzv-endpoint "${MASTER_ADDR:?set MASTER_ADDR}:${MASTER_PORT:-29500}" \
      --rdzv-id "${RDZV_ID:-yolof_${PRESET}}" \
      train.py --config "$CONFIG" --output_dir "$OUT" \
      --opts data.root="$DATA" solver.batch_size=$((8 * PER_GPU * ${NNODES:-2})) train.checkpoint_period_iters=500 ;;
  slurm)  # one SLURM job, submitted from a login node: torchrun per node, c10d rendezvous on the first; a preempted,
    # timed-out or requeued job continues from OUT/last.pth. After MODEL: SLURM options and train.py's arguments.
    "$PY" -m tools.submit --config "$CONFIG" --output_dir "$OUT" --data "$DATA" --per-gpu "$PER_GPU" "${@:3}" ;;
  *) echo "usage: $0 [8gpu|1gpu|1gpu-accum|multinode|slurm] [r50_c5|r50_dc5|r101_c5|r101_dc5|x101_c5|<preset>]"
     exit 2 ;;
esac
