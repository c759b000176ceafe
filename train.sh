#!/usr/bin/env bash
# Train a YOLOF model of the official zoo on COCO 2017 with its official recipe, through torchrun.
#
#   bash train.sh [MODE] [MODEL]      MODE: 8gpu (default) | 1gpu | 1gpu-accum | multinode
#                                     MODEL: r50_c5 (default) | r50_dc5 | r101_c5 | r101_dc5 | x101_c5 | csp_d53_dc5_3x ...
#
# Each preset carries its official batch, lr, schedule and warm-up (8 GPUs x the images per GPU below).
# Learning-rate scaling rule (linear, as the paper and the official code): with solver.scale_lr=true (the
# default) a different batch gets lr = base_lr * batch / reference_batch, and max_iter / steps / warmup scale
# by reference_batch / batch so that the run sees the same epochs. --accumulate N keeps the per-GPU memory of
# batch/N images.
#
# COCO layout expected under datasets/coco: annotations/instances_{train,val}2017.json, train2017/, val2017/.
# ImageNet start: each preset names its file under weights/ (R-50.pkl, R-101.pkl, X-101-64x4d.pkl, ...);
# train.py stops before the first step and says where to download it when it is missing (weights/README.md).
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
[ -f "$CONFIG" ] || { echo "no preset $CONFIG (MODEL=$MODEL)"; exit 2; }

case "$MODE" in
  8gpu)  # official: 8 GPUs x PER_GPU images, the preset's batch and lr as they are
    torchrun --nproc_per_node 8 train.py --config "$CONFIG" --output_dir "$OUT" --opts data.root="$DATA" ;;
  1gpu)  # 1 GPU x PER_GPU images: lr and schedule rescaled by the linear rule (same epochs)
    python train.py --config "$CONFIG" --output_dir "$OUT" --opts data.root="$DATA" solver.batch_size="$PER_GPU" ;;
  1gpu-accum)  # 1 GPU, PER_GPU images x 8 accumulation steps = the official batch and lr
    python train.py --config "$CONFIG" --output_dir "$OUT" --accumulate 8 \
      --opts data.root="$DATA" solver.batch_size=$((8 * PER_GPU)) ;;
  multinode)  # e.g. 2 nodes x 8 GPUs: run on every node with NODE_RANK set; twice the batch -> twice the lr
    torchrun --nnodes "${NNODES:-2}" --node_rank "${NODE_RANK:?set NODE_RANK}" --nproc_per_node 8 \
      --master_addr "${MASTER_ADDR:?set MASTER_ADDR}" --master_port "${MASTER_PORT:-29500}" \
      train.py --config "$CONFIG" --output_dir "$OUT" \
      --opts data.root="$DATA" solver.batch_size=$((8 * PER_GPU * ${NNODES:-2})) ;;
  *) echo "usage: $0 [8gpu|1gpu|1gpu-accum|multinode] [r50_c5|r50_dc5|r101_c5|r101_dc5|x101_c5|<preset>]"; exit 2 ;;
esac
