"""A run's ``metrics.jsonl``: one JSON record per line, written by the trainer (rank 0), read by the ablation
table and ``tools/plot_runs.py``.

Two kinds of record:

* **epoch records** (no ``"type"`` key; the format of the committed ablation logs): one at the end of every
  epoch and one when the run stops, with ``epoch``, ``iteration``, ``lr``, ``time_s``, ``epoch_time_s``, the
  epoch's mean losses and, when evaluated, the metrics (``AP``, ``AP50``, ... or ``mAP``). The run's result
  is its **final record**: the last epoch record, evaluated, at the planned last iteration.
* **iteration records** (``"type": "iter"``): every ``train.log_period`` steps, ``iteration``, ``epoch``,
  ``steps_per_epoch``, ``lr``, ``time_s`` and the mean losses since the previous one (the points of a curve).

A checkpoint stores how many lines the file had when it was written; a resumed run cuts the file back to
that (:meth:`MetricsLog.cut`), so the records of work a kill lost are written once, when it is redone.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

ITER = "iter"


def read_metrics(path: Path) -> list[dict]:
    """Every record of ``path`` (none when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def is_iteration_record(record: dict) -> bool:
    return record.get("type") == ITER


def epoch_records(records: Sequence[dict]) -> list[dict]:
    return [r for r in records if not is_iteration_record(r)]


def is_evaluated(record: dict) -> bool:
    return "AP50" in record or "mAP" in record


def final_record(records: Sequence[dict], max_iter: Optional[int] = None) -> Optional[dict]:
    """The last epoch record when it is evaluated (and at ``max_iter`` or later, when given), else None."""
    epochs = epoch_records(records)
    if not epochs or not is_evaluated(epochs[-1]):
        return None
    if max_iter is not None and int(epochs[-1].get("iteration", -1)) < max_iter:
        return None
    return epochs[-1]


def strict_json(value):
    """``value`` with every non-finite float (inf, NaN: not JSON) replaced by None, in dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


class MetricsLog:
    """Appends records to ``path`` (only where ``enabled``: rank 0) and counts its lines."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self.lines = 0

    def cut(self, lines: Optional[int]) -> None:
        """Keep the first ``lines`` lines (a fresh run: 0); ``None`` keeps them all (a checkpoint that predates
        this count)."""
        if not self.enabled:
            return
        kept = self.path.read_text().splitlines(keepends=True) if self.path.is_file() else []
        if lines is not None and len(kept) > lines:
            kept = kept[:lines]
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(fd, "w") as f:
                f.writelines(kept)
            os.replace(tmp, self.path)
        self.lines = len(kept)

    def append(self, record: dict) -> None:
        """Append ``record`` as one line of strict JSON: a non-finite number (a grad norm of inf) becomes null."""
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(strict_json(record), allow_nan=False) + "\n")
        self.lines += 1

    def records(self) -> list[dict]:
        return read_metrics(self.path)
