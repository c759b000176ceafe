#!/usr/bin/env bash
# Train a YOLOF model of the official zoo on COCO 2017 with its official recipe.
#
#   bash train.sh [MODE] [MODEL] [train.py arguments ...]
#     MODE:  8gpu (default) | 1gpu | 1gpu-accum | multinode
#     MODEL: r50_c5 (default) | r50_dc5 | r101_c5 | r101_dc5 | x101_c5 | csp_d53_dc5_3x ... | any preset's name
#     e.g.   bash train.sh 8gpu r50_c5 --opts solver.amp=bf16        bash train.sh 1gpu-accum r50_c5 --resume
#   bash train.sh slurm MODEL [SLURM options] [train.py arguments]  one SLURM job (tools/submit.py, docs/cluster.md)
#
# Each preset carries its official batch, lr, schedule and warm-up (8 GPUs x the images per GPU below).
# 8gpu, 1gpu-accum (one GPU, 8 accumulation steps) and multinode on one node write the same run config, so a run
# moves between them by itself: start it on 8 GPUs, continue it on one with the same OUT. 1gpu (batch = images per
# GPU) and multinode on N > 1 nodes (N times the batch) are other runs: the linear scaling rule (solver.scale_lr)
# gives lr = base_lr x batch / reference_batch and scales max_iter, steps and warm-up so that they see the same
# epochs. A checkpoint continues only with the global batch it was trained with.
#
# Environment: DATA (COCO root, default datasets/coco: annotations/instances_{train,val}2017.json, train2017/,
# val2017/), OUT (run folder, default runs/<preset>), CONFIG (default config/<preset>.yaml), NPROC (processes per
# node), MAX_RESTARTS (elastic restarts of a dead worker, default 3), NNODES / MASTER_ADDR / MASTER_PORT / RDZV_ID
# (multinode), PYTHON (the interpreter when there is no .venv).
#
# One interpreter runs everything: .venv/bin/python when it exists, else $PYTHON, else python3. Before any worker
# starts, tools/launch_check.py checks with it what the workers would meet: the config, the GPUs, the batch split,
# the run folder's decision (run the same command again: the run continues from OUT/last.pth; another config:
# refused), the ImageNet file (weights/README.md: where each is published) and the dataset; one line, exit 2.
# A worker that dies restarts (torchrun --max-restarts) and continues from OUT/last.pth; a run that stopped on a
# user error (OUT/stopped.json) is not restarted, and this script then exits 2.
set -euo pipefail
cd "$(dirname "$0")"
MODE=${1:-8gpu}
MODEL=${2:-${MODEL:-r50_c5}}
shift $(( $# < 2 ? $# : 2 ))
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
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=${PYTHON:-python3}; fi
[ -f "$CONFIG" ] || { echo "error: no preset $CONFIG (MODEL=$MODEL)" >&2; exit 2; }

NNODES_RUN=1; ACCUMULATE=1; BATCH=()
case "$MODE" in
  8gpu)       NPROC=${NPROC:-8} ;;                    # the preset's batch and lr as they are
  1gpu)       NPROC=1; BATCH=(solver.batch_size="$PER_GPU") ;;  # lr and schedule rescaled (same epochs)
  1gpu-accum) NPROC=1; ACCUMULATE=8 ;;                # the official batch through 8 accumulation steps
  multinode)  NPROC=${NPROC:-8}; NNODES_RUN=${NNODES:-2}  # the same command on every node; N x the batch and lr
              [ "$NNODES_RUN" -eq 1 ] || BATCH=(solver.batch_size=$((NPROC * PER_GPU * NNODES_RUN))) ;;
  slurm)  # one job from a login node: torchrun per node, c10d rendezvous on the first; a preempted, timed-out or
          # requeued job continues from OUT/last.pth. After MODEL: SLURM options and train.py's arguments.
    exec "$PY" -m tools.submit --config "$CONFIG" --output_dir "$OUT" --data "$DATA" --per-gpu "$PER_GPU" "$@" ;;
  *) echo "usage: $0 [8gpu|1gpu|1gpu-accum|multinode|slurm] [r50_c5|r50_dc5|r101_c5|r101_dc5|x101_c5|<preset>]" \
          "[train.py arguments]" >&2; exit 2 ;;
esac
# train.checkpoint_period_iters: how much an elastic restart redoes; every mode has it, so that their configs agree
ARGS=(train.py --config "$CONFIG" --output_dir "$OUT" --accumulate "$ACCUMULATE"
      --opts data.root="$DATA" train.checkpoint_period_iters=500 "${BATCH[@]}" "$@")

"$PY" -m tools.launch_check "$MODE" --nproc "$NPROC" --nnodes "$NNODES_RUN" -- "${ARGS[@]:1}"

started=$(mktemp)
trap 'rm -f "$started"' EXIT
set +e
if [ "$MODE" = 8gpu ]; then
  "$PY" -m torch.distributed.run --nproc_per_node "$NPROC" --max-restarts "${MAX_RESTARTS:-3}" "${ARGS[@]}"
elif [ "$MODE" = multinode ]; then
  # c10d rendezvous at MASTER_ADDR:MASTER_PORT; rank 0 reads OUT/last.pth and sends it to the others on a restart
  "$PY" -m torch.distributed.run --nnodes "$NNODES_RUN" --nproc_per_node "$NPROC" \
    --max-restarts "${MAX_RESTARTS:-3}" --rdzv-backend c10d \
    --rdzv-endpoint "${MASTER_ADDR:?set MASTER_ADDR}:${MASTER_PORT:-29500}" --rdzv-id "${RDZV_ID:-yolof_${PRESET}}" \
    "${ARGS[@]}"
else
  "$PY" "${ARGS[@]}"
fi
status=$?
set -e
# torchrun exits 1 whatever its workers' status: a user error recorded during this launch is exit status 2
if [ "$status" -ne 0 ] && [ "$OUT/stopped.json" -nt "$started" ]; then exit 2; fi
exit "$status"
