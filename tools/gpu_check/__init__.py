"""The GPU acceptance check (``python -m tools.gpu_check``; ``bash scripts/gpu_check.sh`` on an offline GPU node):
see __main__.py for what it checks and docs/training.md for how to run it."""
