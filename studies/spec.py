"""An ablation study's spec: a YAML file of rows x seeds, each a ``train.py`` run; loading it, checking it and
planning its runs (their folders, configs and command lines). The launchers (:mod:`studies.local`,
:mod:`studies.slurm`), :mod:`studies.status` and the README table (:mod:`studies.table`) all start here.

A spec (``ablations/*.yaml``)::
    name: synthetic                     # names the runs folder and the README markers
    base: config/quickstart.yaml        # config every run starts from (relative to the repository)
    seeds: [0, 1, 2]                    # train.seed of each repetition
    common: {solver.max_iter: 1500}     # optional: overrides of every row
    accumulate: 1                       # optional: train.py --accumulate of every row
    launcher: python                    # optional: python (default) | torchrun
    nproc_per_node: 8                   # optional, torchrun only: processes per node
    metrics: [AP, AP50, APs, APm, APl]  # optional: the table's metric columns (default AP, AP50, AP75)
    slurm: {partition: gpu, time: "24:00:00"}  # optional: the jobs of ``ablate.py --launcher slurm``
    rows:                               # the first row is the baseline of the delta column
      - {name: baseline, overrides: {}}
      - {name: no_shift, overrides: {data.random_shift: false}, accumulate: 2}

Overrides are dotted config keys (nested mappings are flattened to them) with
YAML values; a row's overrides apply after ``common``. Every (row, seed) config
is built with :func:`config.load_config` before anything runs, so an unknown
spec key, a key that names no config key or a bad value fails at once, naming it.
The ``slurm:`` section takes the options of :mod:`studies.slurm_options` (checked on load too).

Each (row, seed) is one process tree of its own (:func:`command`)::
    python train.py --config BASE --output_dir RUNS/<spec>/<row>/seed<k> \\
        --opts <common> <row overrides> train.seed=<k> [--accumulate N] [--resume] --no_progress

(``python -m torch.distributed.run --nproc_per_node N train.py ...`` with torchrun).
A run is finished when its ``metrics.jsonl`` holds its final record (the last
epoch record, evaluated, at the planned last iteration: :mod:`engine.metrics_log`);
``done.json`` only summarises it. Finished runs are never relaunched, unfinished
ones are resumed from their ``last.pth`` (or restarted when there is none); a run
killed after its last checkpoint resumes straight into its final evaluation. A run
folder whose ``config.yaml`` disagrees with the spec is an error (rename the row
or delete the folder). The small files of a finished run are copied to
``ablations/runs/<spec>/<row>/seed<k>/`` (:mod:`studies.logs`), the committed logs
from which the README table is made.
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

from config import ConfigError, config_to_dict, load_config
from config.loader import config_diff
from engine.optim import effective_schedule
from evaluation.coco_eval import STAT_NAMES
from studies.slurm_options import SlurmOptionError, SlurmOptions, layout, parse_options
from utils.errors import UserError
from utils.paths import REPO_ROOT

REPO = REPO_ROOT
DEFAULT_RUNS_DIR = REPO / "runs" / "ablations"
DEFAULT_LOGS_DIR = REPO / "ablations" / "runs"
SPEC_KEYS = ("name", "base", "seeds", "common", "accumulate", "launcher", "nproc_per_node", "metrics", "slurm",
             "rows")
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
    slurm: SlurmOptions = SlurmOptions()

    @property
    def processes_per_node(self) -> int:
        return self.nproc_per_node if self.launcher == "torchrun" else 1


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
            "launcher": launcher, "nproc_per_node": nproc, "metrics": _metrics(data.get("metrics"), path),
            "slurm": _slurm(data.get("slurm"), launcher, nproc, path)}


def _slurm(value: Any, launcher: str, nproc: int, path: Path) -> SlurmOptions:
    """The spec's ``slurm:`` section: known options with valid values that can hold a run of the spec."""
    try:
        options = SlurmOptions(**parse_options(value, f"{path}: spec key 'slurm'"))
        check_job_layout(options, launcher, nproc, f"{path}: spec key 'slurm'")
    except SlurmOptionError as e:
        raise SpecError(str(e)) from None
    return options


def check_job_layout(options: SlurmOptions, launcher: str, nproc: int, where: str) -> int:
    """A SLURM job of ``options`` can hold one run of the spec; returns the run's world size."""
    if launcher == "python" and options.nodes * options.tasks_per_node > 1:
        raise SlurmOptionError(f"{where}: {options.nodes} node(s) x {options.tasks_per_node} task(s) per node need "
                               "'launcher: torchrun' (a python run is one process)")
    return layout(options, nproc if launcher == "torchrun" else 1, where)


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


def select_runs(spec: Spec, runs: list[PlannedRun], only: Optional[Sequence[str]]) -> list[PlannedRun]:
    """The runs of the rows named in ``only`` (all without it); an unknown row name is an error."""
    if not only:
        return runs
    unknown = [o for o in only if o not in {r.name for r in spec.rows}]
    if unknown:
        raise SpecError(f"--only {unknown[0]}: no such row in {spec.path} "
                        f"(rows: {', '.join(r.name for r in spec.rows)})")
    return [r for r in runs if r.row.name in only]


# ----------------------------------------------------------------------------- runs
def display_path(path: Path) -> str:
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
    cmd += ["train.py", "--config", spec.base, "--output_dir", display_path(run.output_dir), "--opts", *run.opts]
    if run.accumulate is not None:
        cmd += ["--accumulate", str(run.accumulate)]
    if resume:
        cmd.append("--resume")
    return cmd + ["--no_progress"]


def check_existing(run: PlannedRun) -> None:
    """An existing run folder must hold the planned config (else its results would be mislabelled)."""
    path = run.output_dir / "config.yaml"
    if not path.is_file():
        return
    diff = config_diff(yaml.safe_load(path.read_text()) or {}, run.config)
    if diff:
        raise SpecError(f"{run.output_dir} was run with a different config than the spec now gives row "
                        f"'{run.row.name}' (keys {', '.join(diff)}); rename the row or delete that folder")


