"""The repository root: presets, weights and the default output folders are found relative to it."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
