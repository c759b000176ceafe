#!/usr/bin/env bash
# The GPU acceptance check on a GPU node, with the node's own Python and PyTorch (torch >= 2.11): no virtual
# environment is created and nothing touches the network.
#
#   bash scripts/gpu_check.sh [--wheels DIR] [--out DIR] [--device cuda:N | cpu]
#
# --wheels DIR: the wheels the node lacks (pycocotools, ...), prepared on a machine with network by
# `bash scripts/gpu_wheels.sh DIR`; they are unpacked into a temporary folder put first on PYTHONPATH.
# The interpreter is $PYTHON, else python3. Each row of the table is printed as it is measured and the table is
# written to OUT/gpu_check.{json,md} (tools/gpu_check). Exit status: 0 passed, 1 a check failed, 3 no CUDA device
# (one line says why; --device cpu runs the same checks small on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
args=()
wheels=""
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels=${2:?--wheels needs a folder}; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -n "$wheels" ]; then
  [ -d "$wheels" ] || {
    echo "error: --wheels $wheels is not a folder (bash scripts/gpu_wheels.sh $wheels)" >&2
    exit 2
  }
  target=$(mktemp -d)
  trap 'rm -rf "$target"' EXIT
  # a wheel is a zip file laid out as site-packages: unpacking it is installing it (no pip, no network)
  "$PY" - "$wheels" "$target" <<'PYEOF'
import pathlib, sys, zipfile
wheels, target = pathlib.Path(sys.argv[1]), sys.argv[2]
found = sorted(wheels.glob("*.whl"))
if not found:
    sys.exit(f"error: no .whl file in {wheels} (bash scripts/gpu_wheels.sh {wheels})")
for wheel in found:
    zipfile.ZipFile(wheel).extractall(target)
print(f"gpu_check: {len(found)} wheel(s) from {wheels}: {', '.join(w.name.split('-')[0] for w in found)}")
PYEOF
  export PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PY" -m tools.gpu_check "${args[@]}"
