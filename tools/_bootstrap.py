"""The one place that lets ``python tools/<name>.py`` work as ``python -m tools.<name>`` does: a tool run as a script
imports this module (its folder is then ``sys.path[0]``), which puts the repository root on ``sys.path``."""
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
