"""Ablation studies: a YAML spec of rows x seeds, each a ``train.py`` run, and a README table of their results.

A spec (``ablations/*.yaml``)::
    name: synthetic                     # names the runs folder and the README markers
    base: config/quickstart.yaml        # config every run starts from (relative to the repository)
    seeds: [0, 1, 2]                    # train.seed of each repetition
    common: {solver.max_iter: 1500}     # optional: overrides of every row
    accumulate: 1                       # optional: train.py --accumulate of every row
    launcher: python                    # optional: python (default) | torchrun
    nproc_per_node: 8                   # optional, torchrun only: processes per node
    metrics: [AP, AP50, APs, APm, APl]  # optional: the table's metric columns (default AP, AP50, AP75)
    rows:                               # the first row is the baseline of the delta column
      - {name: baseline, overrides: {}}
      - {name: no_shift, overrides: {data.random_shift: false}, accumulate: 2}

Overrides are dotted config keys (nested mappings are flattened to them) with
YAML values; a row's overrides apply after ``common``. Every (row, seed) config
is built with :func:`config.load_config` before anything runs, so an unknown
spec key, a key that names no config key or a bad value fails at once, naming it.

Each (row, seed) is one subprocess (a clean process per run)::
    python train.py --config BASE --output_dir RUNS/<spec>/<row>/seed<k> \\
        --opts <common> <row overrides> train.seed=<k> [--accumulate N] [--resume] --no_progress

(``python -m torch.distributed.run --nproc_per_node N train.py ...`` with torchrun).
A run is finished when its ``metrics.jsonl`` holds its final record (the last
epoch record, evaluated, at the planned last iteration: :mod:`engine.metrics_log`);
``done.json`` (written here after a finished run) only summarises it. Finished
runs are never relaunched, unfinished ones are resumed from their ``last.pth``
(or restarted when there is none); a run killed after its last checkpoint
resumes straight into its final evaluation. A run
folder whose ``config.yaml`` disagrees with the spec is an error (rename the row
or delete the folder). After each run its small files (``config.yaml``,
``metrics.jsonl``, ``command.txt``, ``git_commit.txt``, ``machine.json``, ``done.json``) are copied
to ``ablations/runs/<spec>/<row>/seed<k>/``, the logs that are committed and
from which :func:`render_table` makes the README table (a pure function of them).
A run whose logs there are finished (and hold the planned config) counts as done
even when its run folder is gone, so a study spans sessions and machines.
"""
from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import yaml

from config import ConfigError, config_to_dict, load_config
from config.loader import config_diff
from engine.metrics_log import epoch_records, final_record, read_metrics
from engine.optim import effective_schedule
from evaluation.coco_eval import STAT_NAMES
from utils.errors import UserError
from utils.paths import REPO_ROOT

REPO = REPO_ROOT
DEFAULT_RUNS_DIR = REPO / "runs" / "ablations"
DEFAULT_LOGS_DIR = REPO / "ablations" / "runs"
LOG_FILES = ("config.yaml", "metrics.jsonl", "command.txt", "git_commit.txt", "machine.json", "done.json")
SPEC_KEYS = ("name", "base", "seeds", "common", "accumulate", "launcher", "nproc_per_node", "metrics", "rows")
DEFAULT_METRICS = ("AP", "AP50", "AP75")  # the table's metric columns unless the spec names others
ROW_KEYS = ("name", "overrides", "accumulate")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class SpecError(UserError, ValueError):
    """An ablation spec is invalid (the message names the file, the row and the key) or cannot run."""


@dataclass(frozen=True)
class Row:
    name: str
    overrides: dict[str, Any]
    accumulate: Optional[int] = None


@dataclass(frozen=True)
class Spec:
    path: Path
    name: str
    base: str
    seeds: tuple[int, ...]
    rows: tuple[Row, ...]
    common: dict[str, Any] = field(default_factory=dict)
    accumulate: Optional[int] = None
    launcher: str = "python"
    nproc_per_node: int = 1
    metrics: tuple[str, ...] = DEFAULT_METRICS


@dataclass(frozen=True)
class PlannedRun:
    row: Row
    seed: int
    output_dir: Path
    opts: tuple[str, ...]  # the --opts of train.py, in order
    accumulate: Optional[int]
    max_iter: int  # the last iteration of the schedule
    config: dict  # resolved config (config_to_dict)

    @property
    def label(self) -> str:
        return f"{self.row.name}/seed{self.seed}"


# ----------------------------------------------------------------------------- the spec
def _flatten(data: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        key = f"{prefix}{key}"
        if isinstance(value, Mapping):  # no config value is a mapping: a nested section
            out.update(_flatten(value, key + "."))
        else:
            out[key] = value
    return out


def format_value(value: Any) -> str:
    """A value as ``train.py --opts`` writes it (YAML flow style), checked to parse back to itself."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")].strip()
    elif text.endswith("..."):
        text = text[: -len("...")].strip()
    if yaml.safe_load(text) != value:
        raise SpecError(f"value {value!r} does not survive the command line (as {text!r})")
    return text


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _overrides(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: expected a mapping of dotted config keys to values, got {value!r}")
    out = _flatten(value)
    if "train.seed" in out:
        raise SpecError(f"{where}: 'train.seed' comes from the spec's 'seeds', not from overrides")
    for k, v in out.items():
        try:
            format_value(v)
        except SpecError as e:
            raise SpecError(f"{where}: key '{k}': {e}") from None
    return out


def _read_spec_file(path: Path) -> dict:
    """The spec's YAML mapping, with only known keys and all required ones."""
    if not path.is_file():
        raise SpecError(f"ablation spec not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise SpecError(f"{path}: top level must be a mapping with keys {list(SPEC_KEYS)}")
    unknown = [k for k in data if k not in SPEC_KEYS]
    if unknown:
        raise SpecError(f"{path}: unknown spec key '{unknown[0]}'; valid keys: {', '.join(SPEC_KEYS)}")
    for key in ("name", "base", "seeds", "rows"):
        if key not in data:
            raise SpecError(f"{path}: missing spec key '{key}'")
    return data


def _check_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise SpecError(f"{where}: {value!r} must be a word of letters, digits, '_', '-', '.', '+'")
    return value


def _spec_settings(data: dict, path: Path) -> dict:
    """The spec's keys other than ``rows``, checked, as :class:`Spec` fields."""
    name = _check_name(data["name"], f"{path}: spec key 'name'")
    if not isinstance(data["base"], str):
        raise SpecError(f"{path}: spec key 'base': expected a config path, got {data['base']!r}")
    seeds = data["seeds"]
    if (not isinstance(seeds, list) or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds) or len(set(seeds)) != len(seeds)):
        raise SpecError(f"{path}: spec key 'seeds': expected a non-empty list of distinct integers, got {seeds!r}")
    launcher = data.get("launcher", "python")
    if launcher not in ("python", "torchrun"):
        raise SpecError(f"{path}: spec key 'launcher': {launcher!r} is not one of ['python', 'torchrun']")
    nproc = _positive_int(data.get("nproc_per_node", 1), f"{path}: spec key 'nproc_per_node'")
    if launcher == "python" and nproc != 1:
        raise SpecError(f"{path}: spec key 'nproc_per_node': {nproc} processes need 'launcher: torchrun'")
    accumulate = data.get("accumulate")
    if accumulate is not None:
        accumulate = _positive_int(accumulate, f"{path}: spec key 'accumulate'")
    common = _overrides(data.get("common"), f"{path}: spec key 'common'")
    return {"name": name, "base": data["base"], "seeds": tuple(seeds), "common": common, "accumulate": accumulate,
            "launcher": launcher, "nproc_per_node": nproc, "metrics": _metrics(data.get("metrics"), path)}


def _metrics(value: Any, path: Path) -> tuple[str, ...]:
    """The spec's table columns: distinct names of COCO summary metrics (evaluation.coco_eval.STAT_NAMES)."""
    if value is None:
        return DEFAULT_METRICS
    if (not isinstance(value, list) or not value or len(set(map(str, value))) != len(value)
            or any(v not in STAT_NAMES for v in value)):
        raise SpecError(f"{path}: spec key 'metrics': expected a list of distinct names of {', '.join(STAT_NAMES)}, "
                        f"got {value!r}")
    return tuple(value)


def _rows(rows_data: Any, path: Path) -> tuple[Row, ...]:
    """The spec's rows, checked: mappings of known keys, distinct names, valid overrides."""
    if not isinstance(rows_data, list) or not rows_data:
        raise SpecError(f"{path}: spec key 'rows': expected a non-empty list of {{name, overrides}} mappings")
    rows, seen = [], set()
    for i, r in enumerate(rows_data):
        where = f"{path}: rows[{i}]"
        if not isinstance(r, dict):
            raise SpecError(f"{where}: expected a mapping with keys {list(ROW_KEYS)}, got {r!r}")
        unknown = [k for k in r if k not in ROW_KEYS]
        if unknown:
            raise SpecError(f"{where}: unknown row key '{unknown[0]}'; valid keys: {', '.join(ROW_KEYS)}")
        rname = _check_name(r.get("name"), f"{where}: row key 'name'")
        if rname in seen:
            raise SpecError(f"{where}: duplicate row name '{rname}'")
        seen.add(rname)
        where = f"{path}: row '{rname}'"
        acc = r.get("accumulate")
        if acc is not None:
            acc = _positive_int(acc, f"{where}: row key 'accumulate'")
        rows.append(Row(rname, _overrides(r.get("overrides"), f"{where}: row key 'overrides'"), acc))
    return tuple(rows)


def load_spec(path: Path | str) -> Spec:
    """Read and check the spec's own structure (the configs are checked by :func:`plan_runs`)."""
    path = Path(path)
    data = _read_spec_file(path)
    settings = _spec_settings(data, path)
    return Spec(path=path, rows=_rows(data["rows"], path), **settings)


def base_path(spec: Spec) -> Path:
    p = Path(spec.base)
    return p if p.is_absolute() else REPO / p


def plan_runs(spec: Spec, runs_dir: Path | str = DEFAULT_RUNS_DIR) -> list[PlannedRun]:
    """Every (row, seed) run with its resolved config; a bad override fails here, before any run starts."""

    base = base_path(spec)
    if not base.is_file():
        raise SpecError(f"{spec.path}: spec key 'base': config file not found: {base}")
    runs = []
    for row in spec.rows:
        overrides = {**spec.common, **row.overrides}
        accumulate = row.accumulate if row.accumulate is not None else spec.accumulate
        for seed in spec.seeds:
            try:
                cfg = load_config(base, {**overrides, "train.seed": seed})
            except ConfigError as e:
                raise SpecError(f"{spec.path}: row '{row.name}': {e}") from e
            processes = (accumulate or 1) * spec.nproc_per_node
            if cfg.solver.batch_size % processes:
                raise SpecError(f"{spec.path}: row '{row.name}': solver.batch_size={cfg.solver.batch_size} is not "
                                f"divisible by nproc_per_node x accumulate = {processes}")
            opts = tuple(f"{k}={format_value(v)}" for k, v in overrides.items()) + (f"train.seed={seed}",)
            runs.append(PlannedRun(row, seed, Path(runs_dir) / spec.name / row.name / f"seed{seed}", opts, accumulate,
                                   effective_schedule(cfg.solver).max_iter, config_to_dict(cfg)))
    return runs


# ----------------------------------------------------------------------------- runs
def _display(path: Path) -> str:
    """A path relative to the repository when inside it (commands run from the repository root)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def command(spec: Spec, run: PlannedRun, *, resume: bool = False, python: str = sys.executable) -> list[str]:
    """The command line of one run (run from the repository root)."""
    if spec.launcher == "torchrun":
        cmd = [python, "-m", "torch.distributed.run", f"--nproc_per_node={spec.nproc_per_node}"]
    else:
        cmd = [python]
    cmd += ["train.py", "--config", spec.base, "--output_dir", _display(run.output_dir), "--opts", *run.opts]
    if run.accumulate is not None:
        cmd += ["--accumulate", str(run.accumulate)]
    if resume:
        cmd.append("--resume")
    return cmd + ["--no_progress"]


def is_finished(run_dir: Path, max_iter: int) -> bool:
    """The run's ``metrics.jsonl`` holds its final record: evaluated, at the planned last iteration."""
    return final_record(read_metrics(Path(run_dir) / "metrics.jsonl"), max_iter) is not None


def check_existing(run: PlannedRun) -> None:
    """An existing run folder must hold the planned config (else its results would be mislabelled)."""
    path = run.output_dir / "config.yaml"
    if not path.is_file():
        return
    diff = config_diff(yaml.safe_load(path.read_text()) or {}, run.config)
    if diff:
        raise SpecError(f"{run.output_dir} was run with a different config than the spec now gives row "
                        f"'{run.row.name}' (keys {', '.join(diff)}); rename the row or delete that folder")


def copy_logs(run: PlannedRun, spec: Spec, logs_dir: Path) -> Path:
    dest = Path(logs_dir) / spec.name / run.row.name / f"seed{run.seed}"
    dest.mkdir(parents=True, exist_ok=True)
    for name in LOG_FILES:
        if (run.output_dir / name).is_file():
            shutil.copyfile(run.output_dir / name, dest / name)
    return dest


def _write_done(run: PlannedRun) -> None:
    last = final_record(read_metrics(run.output_dir / "metrics.jsonl"))
    done = {"row": run.row.name, "seed": run.seed, "iteration": last.get("iteration"), "opts": list(run.opts),
            **{k: last[k] for k in ("AP", "AP50", "AP75") if k in last}}
    (run.output_dir / "done.json").write_text(json.dumps(done, indent=1) + "\n")


def _select(spec: Spec, runs: list[PlannedRun], only: Optional[Sequence[str]]) -> list[PlannedRun]:
    """The runs of the rows named in ``only`` (all without it); an unknown row name is an error."""
    if not only:
        return runs
    unknown = [o for o in only if o not in {r.name for r in spec.rows}]
    if unknown:
        raise SpecError(f"--only {unknown[0]}: no such row in {spec.path} (rows: {', '.join(r.name for r in spec.rows)})")
    return [r for r in runs if r.row.name in only]


def _take_finished(spec: Spec, run: PlannedRun, logs_dir: Path | str, *, dry_run: bool,
                   log: Callable[[str], None]) -> bool:
    """Whether ``run`` is finished, in its run folder (its logs are then copied) or in the logs of an earlier
    session (its run folder may be gone)."""
    logged = Path(logs_dir) / spec.name / run.row.name / f"seed{run.seed}"
    if not is_finished(run.output_dir, run.max_iter) and is_finished(logged, run.max_iter):
        check_existing(replace(run, output_dir=logged))
        if dry_run:
            log(f"# finished (logged): {run.label} ({_display(logged)})")
        return True
    if not is_finished(run.output_dir, run.max_iter):
        return False
    if dry_run:
        log(f"# finished: {run.label} ({_display(run.output_dir)})")
    else:
        if not (run.output_dir / "done.json").is_file():
            _write_done(run)
        copy_logs(run, spec, logs_dir)
    return True


def _launch(spec: Spec, run: PlannedRun, cmd: list[str], *, logs_dir: Path | str, resume: bool,
            log: Callable[[str], None], progress: str) -> Optional[str]:
    """Run ``cmd``; None when the run finished (its logs copied), else why it failed."""
    if not resume:  # a fresh start: no stale records from a run that died before its first checkpoint
        for name in ("metrics.jsonl", "done.json"):
            (run.output_dir / name).unlink(missing_ok=True)
    log(f"{progress} {run.label}{' (resumed)' if resume else ''}: {shlex.join(cmd)}")
    rc = subprocess.run(cmd, cwd=REPO).returncode
    if rc != 0 or not is_finished(run.output_dir, run.max_iter):
        reason = f"exit status {rc}" if rc != 0 else "no evaluated record at the last iteration"
        return f"run {run.label} failed ({reason}); see {_display(run.output_dir / 'log.txt')}"
    _write_done(run)
    copy_logs(run, spec, logs_dir)
    return None


def run_ablation(spec: Spec, runs_dir: Path | str = DEFAULT_RUNS_DIR, logs_dir: Path | str = DEFAULT_LOGS_DIR, *,
                 only: Optional[Sequence[str]] = None, dry_run: bool = False, keep_going: bool = False,
                 python: str = sys.executable, log: Callable[[str], None] = print,
                 collect: bool = False) -> dict[str, str]:
    """Run every unfinished (row, seed) of ``spec``; returns ``{"row/seedK": "done" | "ran" | "failed" | "planned"}``.

    ``collect``: launch nothing; copy the logs of the runs that finished (e.g. ones started by hand or on a
    cluster from the ``dry_run`` command lines) and report the others as ``"pending"``.
    """
    runs = _select(spec, plan_runs(spec, runs_dir), only)
    for run in runs:
        check_existing(run)
    status: dict[str, str] = {}
    failures = []
    for i, run in enumerate(runs, 1):
        if _take_finished(spec, run, logs_dir, dry_run=dry_run, log=log):
            status[run.label] = "done"
            continue
        if collect:
            status[run.label] = "pending"
            continue
        resume = (run.output_dir / "last.pth").is_file()
        cmd = command(spec, run, resume=resume, python="python" if dry_run else python)  # dry-run: portable lines
        if dry_run:
            log(shlex.join(cmd))
            status[run.label] = "planned"
            continue
        failure = _launch(spec, run, cmd, logs_dir=logs_dir, resume=resume, log=log,
                          progress=f"[{spec.name} {i}/{len(runs)}]")
        if failure is not None and not keep_going:
            raise RuntimeError(failure)
        if failure is not None:
            log(failure)
            failures.append(run.label)
        status[run.label] = "ran" if failure is None else "failed"
    if failures:
        raise RuntimeError(f"{len(failures)} run(s) failed: {', '.join(failures)}")
    return status


# ----------------------------------------------------------------------------- the table
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

    header = (f"Spec `{_display(spec.path)}`: base `{spec.base}`, seeds {', '.join(map(str, spec.seeds))}"
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
