#!/usr/bin/env bash
# Download, on a machine with network, the wheels an offline GPU node lacks to run scripts/gpu_check.sh with its
# own PyTorch: pycocotools and faster-coco-eval (COCO evaluation), nothing else and none of their dependencies
# (the node has numpy). For another Python or platform: PY_VERSION=3.11 PLATFORM=manylinux2014_aarch64.
#
#   bash scripts/gpu_wheels.sh DIR      then, on the node:  bash scripts/gpu_check.sh --wheels DIR
set -euo pipefail
dir=${1:?usage: bash scripts/gpu_wheels.sh DIR}
PY=${PYTHON:-python3}
version=${PY_VERSION:-3.12}
platform=${PLATFORM:-manylinux2014_x86_64}
mkdir -p "$dir"
"$PY" -m pip download --quiet --only-binary=:all: --no-deps --dest "$dir" --python-version "$version" \
  --implementation cp --platform "$platform" --platform "${platform/manylinux2014/manylinux_2_17}" \
  --platform "${platform/manylinux2014/manylinux_2_28}" "pycocotools>=2.0.7" "faster-coco-eval>=1.6,<2"
ls -l "$dir"/*.whl
du -ch "$dir"/*.whl | tail -n 1
