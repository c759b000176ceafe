"""The README table of a study: a pure function of its committed logs (``ablations/runs/<spec>/...``), so that
``ablate.py SPEC --table-only`` rebuilds what README.md holds byte for byte.

The table goes between ``<!-- ablation:NAME:start -->`` and ``<!-- ablation:NAME:end -->`` in the README.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Sequence

from engine.metrics_log import epoch_records, read_metrics
from studies.logs import is_finished
from studies.spec import DEFAULT_LOGS_DIR, DEFAULT_RUNS_DIR, Spec, SpecError, display_path, format_value, plan_runs


def _segments_time(records: Sequence[dict]) -> float:
    """Training time of a run: ``time_s`` restarts with each (resumed) process, so sum the last of each segment."""
    total, last = 0.0, None
    for r in records:
        t = float(r.get("time_s", 0.0))
        if last is not None and t < last:
            total += last
        last = t
    return total + (last or 0.0)


def _metric(record: dict, key: str) -> float:
    v = record.get(key)
    return float(v) * 100.0 if isinstance(v, (int, float)) and v >= 0 else math.nan


def _mean_std(values: Sequence[float], signed: bool = False) -> str:
    """``mean ± sample std`` of the non-NaN values (just the mean for one, ``–`` for none)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    mean = f"{statistics.fmean(values):{'+' if signed else ''}.1f}"
    return mean if len(values) == 1 else f"{mean} ± {statistics.stdev(values):.1f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def machines_line(folders: Sequence[Path]) -> str:
    """Which machines the finished runs ran on (their ``machine.json``): a seed is one run only on one machine."""
    counts: dict[str, int] = {}
    for folder in folders:
        try:
            info = json.loads((folder / "machine.json").read_text())
            key = f"`{info.get('cpu', '?')}`, torch threads {info.get('torch_threads', '?')}"
            if info.get("cuda"):
                key += f", `{info['cuda']}`"
        except (OSError, ValueError):
            key = "not recorded (these runs predate machine.json)"
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        return "Machine: – (no finished runs)."
    if len(counts) == 1:
        return f"Machine: {next(iter(counts))}; all {sum(counts.values())} runs."
    parts = "; ".join(f"{k}: {n} runs" for k, n in sorted(counts.items()))
    return (f"Machines: {parts}. Rows run on different machines are not paired by seed: floating-point order "
            "differs between CPUs.")


def render_table(spec: Spec, logs_dir: Path | str = DEFAULT_LOGS_DIR) -> str:
    """The Markdown table of ``spec`` from the logs under ``logs_dir`` (finished runs only); deterministic."""
    runs = plan_runs(spec, DEFAULT_RUNS_DIR)
    by_row: dict[str, dict[int, list[dict]]] = {r.name: {} for r in spec.rows}  # row -> seed -> records
    for run in runs:
        folder = Path(logs_dir) / spec.name / run.row.name / f"seed{run.seed}"
        if is_finished(folder, run.max_iter):
            records = epoch_records(read_metrics(folder / "metrics.jsonl"))  # the last one is the final record
            if records:
                by_row[run.row.name][run.seed] = records
    baseline = spec.rows[0].name

    def paired_delta(row: str, key: str) -> str:
        """Mean (± sample std) over the seeds both rows finished of row - baseline: same seed, same data order."""
        return _mean_std([_metric(recs[-1], key) - _metric(by_row[baseline][seed][-1], key)
                          for seed, recs in sorted(by_row[row].items()) if seed in by_row[baseline]], signed=True)

    header = (f"Spec `{display_path(spec.path)}`: base `{spec.base}`, seeds {', '.join(map(str, spec.seeds))}"
              f"{', torchrun x' + str(spec.nproc_per_node) if spec.launcher == 'torchrun' else ''}"
              f"{', --accumulate ' + str(spec.accumulate) if spec.accumulate else ''}. "
              "COCO AP in %, mean ± sample std over the finished seeds; Δ AP50: the row minus "
              f"`{baseline}` seed by seed, mean ± std over the seeds both finished; time: the last record's "
              "`time_s` (summed over resumed processes), mean over seeds.")
    lines = [header, "", machines_line([Path(logs_dir) / spec.name / row / f"seed{seed}"
                                        for row in by_row for seed in sorted(by_row[row])])]
    if spec.common:
        lines += ["", "Common overrides: " + ", ".join(f"`{_cell(o)}`" for o in
                                                         (f"{k}={format_value(v)}" for k, v in spec.common.items()))]
    lines += ["", "| row | " + " | ".join(spec.metrics) + " | Δ AP50 | time | seeds | overrides |",
              "|---|" + "---|" * len(spec.metrics) + "---|---|---|---|"]
    for row in spec.rows:
        finished = [by_row[row.name][seed] for seed in sorted(by_row[row.name])]
        cells = [f"`{row.name}`"]
        for key in spec.metrics:
            cells.append(_mean_std([_metric(r[-1], key) for r in finished]))
        if row.name == baseline:
            cells.append("(ref)" if finished else "–")
        else:
            cells.append(paired_delta(row.name, "AP50"))
        cells.append(_duration(statistics.fmean(_segments_time(r) for r in finished)) if finished else "–")
        cells.append(f"{len(finished)}/{len(spec.seeds)}")
        overrides = [f"{k}={format_value(v)}" for k, v in row.overrides.items()]
        if row.accumulate is not None:
            overrides.append(f"--accumulate {row.accumulate}")
        cells.append(", ".join(f"`{_cell(o)}`" for o in overrides) if overrides else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markers(spec_name: str) -> tuple[str, str]:
    return f"<!-- ablation:{spec_name}:start -->", f"<!-- ablation:{spec_name}:end -->"


def update_readme(spec: Spec, readme: Path | str, logs_dir: Path | str = DEFAULT_LOGS_DIR) -> bool:
    """Rewrite the table between the spec's markers in ``readme``; returns whether the file changed."""
    readme = Path(readme)
    start, end = markers(spec.name)
    text = readme.read_text()
    i, j = text.find(start), text.find(end)
    if i < 0 or j < 0 or j < i or text.count(start) > 1 or text.count(end) > 1:
        raise SpecError(f"{readme} needs exactly one pair of markers for ablation '{spec.name}', in this order, "
                        f"where its table should go:\n{start}\n{end}")
    new = text[: i + len(start)] + "\n" + render_table(spec, logs_dir) + "\n" + text[j:]
    if new == text:
        return False
    readme.write_text(new)
    return True

