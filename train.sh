#!/usr/bin/env bash
# Train YOLOF R50-C5 1x on COCO 2017 (the official recipe) with torchrun.
#
# Learning-rate scaling rule (linear, as the paper and the official code): lr = 0.12 at a total batch
# of 64 images (8 GPUs x 8 images). With solver.scale_lr=true (the default) the code applies it for
# you: lr = 0.12 * batch_size / 64, and max_iter / steps / warmup scale by 64 / batch_size so that the
# run sees the same 12 epochs. --accumulate N keeps the per-GPU memory of batch/N images.
#
# COCO layout expected under datasets/coco: annotations/instances_{train,val}2017.json, train2017/, val2017/.
# Pretrained backbone: model.backbone.weights=imagenet (torchvision's weights, put them in weights/ when offline).
set -euo pipefail
cd "$(dirname "$0")"
CONFIG=${CONFIG:-config/yolof_r50_c5_1x.yaml}
DATA=${DATA:-datasets/coco}
OUT=${OUT:-runs/yolof_r50_c5_1x}
MODE=${1:-8gpu}

case "$MODE" in
  8gpu)  # official: 8 GPUs x 8 images = 64, lr 0.12, 22.5k iterations
    torchrun --nproc_per_node 8 train.py --config "$CONFIG" --output_dir "$OUT" \
      --opts data.root="$DATA" solver.batch_size=64 ;;
  1gpu)  # 1 GPU x 8 images: lr 0.12 * 8/64 = 0.015, 180k iterations (same epochs)
    python train.py --config "$CONFIG" --output_dir "$OUT" --opts data.root="$DATA" solver.batch_size=8 ;;
  1gpu-accum)  # 1 GPU, 8 images x 8 accumulation steps = the official batch of 64 and lr 0.12
    python train.py --config "$CONFIG" --output_dir "$OUT" --accumulate 8 --opts data.root="$DATA" solver.batch_size=64 ;;
  multinode)  # e.g. 2 nodes x 8 GPUs: run on every node with NODE_RANK set; batch 128 -> lr 0.24
    torchrun --nnodes "${NNODES:-2}" --node_rank "${NODE_RANK:?set NODE_RANK}" --nproc_per_node 8 \
      --master_addr "${MASTER_ADDR:?set MASTER_ADDR}" --master_port "${MASTER_PORT:-29500}" \
      train.py --config "$CONFIG" --output_dir "$OUT" --opts data.root="$DATA" solver.batch_size=128 ;;
  *) echo "usage: $0 [8gpu|1gpu|1gpu-accum|multinode]"; exit 2 ;;
esac
