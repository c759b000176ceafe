"""The acceptance check's table: each row printed the moment it is measured, and the whole table so far written to
``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` after every row (a run cut short keeps what it measured)."""
from __future__ import annotations

import json
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

OK, FAIL, INFO, SKIP = "ok", "FAIL", "info", "skipped"


@dataclass
class Row:
    part: str
    check: str
    result: str
    status: str  # OK / FAIL: a check with a criterion; INFO: a measurement; SKIP: not applicable here
    criterion: str = ""
    seconds: float = 0.0


class PartTimeout(Exception):
    """A part ran past its time budget."""


@contextmanager
def time_budget(seconds: float):
    """Raise :class:`PartTimeout` in this (main) thread after ``seconds``."""

    def expire(signum, frame):
        raise PartTimeout(f"ran past its budget of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Report:
    def __init__(self, out: Optional[Path], header: dict):
        self.out, self.header, self.rows = out, header, []
        self.part, self.t_part = "", time.perf_counter()
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        print(" ".join(f"{k}: {v};" for k, v in header.items()).rstrip(";"), flush=True)
        print(f"| part | check | result | criterion | status |\n|---|---|---|---|---|", flush=True)

    def start(self, part: str) -> None:
        self.part, self.t_part = part, time.perf_counter()

    def add(self, check: str, result: str, status: str, criterion: str = "") -> None:
        row = Row(self.part, check, result, status, criterion, round(time.perf_counter() - self.t_part, 1))
        self.rows.append(row)
        print(f"| {row.part} | {row.check} | {row.result} | {row.criterion} | {row.status} |", flush=True)
        self._write()

    def check(self, check: str, result: str, ok: bool, criterion: str) -> None:
        self.add(check, result, OK if ok else FAIL, criterion)

    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.status == FAIL]

    def _write(self) -> None:
        if self.out is None:
            return
        (self.out / "gpu_check.json").write_text(json.dumps({**self.header, "rows": [asdict(r) for r in self.rows]},
                                                            indent=1) + "\n")
        lines = [" ".join(f"{k}: {v};" for k, v in self.header.items()).rstrip(";"), "",
                 "| part | check | result | criterion | status | s |", "|---|---|---|---|---|---|"]
        lines += [f"| {r.part} | {r.check} | {r.result} | {r.criterion} | {r.status} | {r.seconds} |"
                  for r in self.rows]
        (self.out / "gpu_check.md").write_text("\n".join(lines) + "\n")
