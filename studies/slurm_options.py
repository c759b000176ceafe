"""A SLURM job's resources: one table of options, read from a spec's ``slurm:`` section and from the flags of
``ablate.py --launcher slurm`` and ``python -m tools.submit`` (flags win), checked, and turned into the parameters of
submitit's ``SlurmExecutor`` (sbatch's own names: the sbatch manual says what each does on a cluster).

A job is ``nodes`` x ``tasks_per_node`` tasks; each task runs one ``train.py`` command (under torchrun when the
run has more than one process: one torchrun per task, :mod:`studies.job`).
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Mapping, Optional

from utils.errors import UserError

DEFAULT_TIME_MIN = 24 * 60


class SlurmOptionError(UserError, ValueError):
    """A SLURM option has an unknown name or a bad value (the message names the option and where it came from)."""


@dataclass(frozen=True)
class SlurmOptions:
    partition: Optional[str] = None  # sbatch --partition (the cluster's default partition when unset)
    account: Optional[str] = None  # sbatch --account
    qos: Optional[str] = None  # sbatch --qos
    time: int = DEFAULT_TIME_MIN  # time limit in minutes; a run that needs longer is requeued and continues
    nodes: int = 1  # sbatch --nodes; more than one needs torchrun (a spec's launcher: torchrun)
    gpus_per_node: Optional[int] = None  # sbatch --gpus-per-node; unset: one per process (0 on a CPU-only cluster)
    tasks_per_node: int = 1  # torchrun agents per node: 1 with GPUs; more only to try a multi-node job on one machine
    cpus_per_task: Optional[int] = None  # sbatch --cpus-per-task (a task holds its torchrun workers and loaders)
    mem: Optional[str] = None  # sbatch --mem, memory per node: 64G, 500M, ... (the partition's default when unset)
    constraint: Optional[str] = None  # sbatch --constraint, node features: a100, "a100|h100" ...
    setup: tuple[str, ...] = ()  # shell lines the job runs before the training: module load, conda activate ...
    max_parallel: Optional[int] = None  # studies: one job array with at most this many runs at once


def parse_time(value: Any) -> int:
    """A SLURM time limit in minutes (seconds rounded up): ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``,
    ``D-HH:MM``, ``D-HH:MM:SS`` (sbatch's formats), or a number of minutes."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"a time limit of at least 1 minute, got {value}")
        return value
    text = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        raise ValueError(f"{value!r} is not a SLURM time (MM, HH:MM:SS, D-HH:MM:SS ...)")
    days, a, b, c = (int(g) if g is not None else None for g in m.groups())
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = a * 3600 + b * 60 + c
    elif b is not None:  # MM:SS
        seconds = a * 60 + b
    else:  # MM
        seconds = a * 60
    if seconds < 1:
        raise ValueError(f"{value!r} is no time at all")
    return -(-seconds // 60)


def _count(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"expected an integer >= {minimum}, got {value!r}")
        return value
    return parse


def _word(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"expected one word, got {value!r}")
    return value


def _mem(value: Any) -> str:
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"[1-9]\d*[KMGT]?", text):
        raise ValueError(f"expected a memory size such as 64G or 500M, got {value!r}")
    return text


def _lines(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of shell lines, got {value!r}")
    return tuple(value)


# name -> how a value is read (from YAML or from a flag's text); SlurmOptions' comments say what each means
PARSERS: dict[str, Callable[[Any], Any]] = {
    "partition": _word, "account": _word, "qos": _word, "time": parse_time, "nodes": _count(1),
    "gpus_per_node": _count(0), "tasks_per_node": _count(1), "cpus_per_task": _count(1), "mem": _mem,
    "constraint": _word, "setup": _lines, "max_parallel": _count(1),
}
assert set(PARSERS) == {f.name for f in fields(SlurmOptions)}


def parse_options(data: Any, where: str) -> dict[str, Any]:
    """The options of a mapping (a spec's ``slurm:`` section), checked; an unknown name or a bad value fails
    naming it and ``where``."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise SlurmOptionError(f"{where}: expected a mapping of SLURM options ({', '.join(PARSERS)}), got {data!r}")
    out = {}
    for key, value in data.items():
        if key not in PARSERS:
            raise SlurmOptionError(f"{where}: unknown SLURM option '{key}'; valid options: {', '.join(PARSERS)}")
        try:
            out[key] = PARSERS[key](value)
        except ValueError as e:
            raise SlurmOptionError(f"{where}: SLURM option '{key}': {e}") from None
    return out


def add_arguments(parser: argparse.ArgumentParser, title: str) -> None:
    """One flag per option (``--gpus-per-node`` for ``gpus_per_node``), read as text and checked by
    :func:`options_from_args`."""
    group = parser.add_argument_group(title)
    for f in fields(SlurmOptions):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "setup":
            group.add_argument(flag, action="append", dest=f"slurm_{f.name}", default=None, metavar="LINE",
                               help="a shell line the job runs first (repeatable): module load, conda activate ...")
        else:
            group.add_argument(flag, dest=f"slurm_{f.name}", default=None, metavar=f.name.upper(),
                               help=_HELP[f.name])


_HELP = {
    "partition": "sbatch --partition", "account": "sbatch --account", "qos": "sbatch --qos",
    "time": f"time limit per job, e.g. 24:00:00 or 2-00:00:00 (default {DEFAULT_TIME_MIN // 60}:00:00); a longer "
            "run requeues itself and continues",
    "nodes": "nodes per job (more than one: torchrun with c10d rendezvous on the first node)",
    "gpus_per_node": "GPUs per node (default: one per process; 0 on a CPU-only cluster)",
    "tasks_per_node": "torchrun agents per node (default 1; more only with --gpus-per-node 0, to try a multi-node "
                      "job on one machine)",
    "cpus_per_task": "sbatch --cpus-per-task: CPUs of each task, its data-loading workers included",
    "mem": "sbatch --mem: memory per node, e.g. 64G", "constraint": "sbatch --constraint: node features",
    "max_parallel": "studies: submit one job array running at most N runs at once (default: one job per run)",
}


def options_from_args(args: argparse.Namespace, base: Optional[SlurmOptions] = None) -> SlurmOptions:
    """``base`` (a spec's section) with the flags that were given on top."""
    given = {f.name: getattr(args, f"slurm_{f.name}") for f in fields(SlurmOptions)
             if getattr(args, f"slurm_{f.name}", None) is not None}
    checked = {}
    for key, value in given.items():
        try:
            checked[key] = PARSERS[key](value)
        except ValueError as e:
            raise SlurmOptionError(f"--{key.replace('_', '-')}: {e}") from None
    return replace(base or SlurmOptions(), **checked)


def layout(options: SlurmOptions, processes_per_task: int, where: str) -> int:
    """Check that a job of ``options`` can hold a run of ``processes_per_task`` training processes in each task
    (1: plain python; more: torchrun), one GPU each where there are GPUs. Returns the run's world size."""
    gpus = gpus_per_node(options, processes_per_task)
    if options.tasks_per_node > 1 and gpus:
        raise SlurmOptionError(f"{where}: tasks_per_node {options.tasks_per_node} needs gpus_per_node 0: with GPUs "
                               "one task per node starts one process per GPU")
    if gpus and gpus != processes_per_task:
        raise SlurmOptionError(f"{where}: gpus_per_node {gpus} for {processes_per_task} process(es) per node: one "
                               "GPU per process (or gpus_per_node 0 to train on CPUs)")
    return options.nodes * options.tasks_per_node * processes_per_task


def gpus_per_node(options: SlurmOptions, processes_per_task: int) -> int:
    """The GPUs a node asks for: as given, else one per process of its task."""
    return processes_per_task if options.gpus_per_node is None else options.gpus_per_node


def executor_parameters(options: SlurmOptions, *, processes_per_task: int, job_name: str, chdir: str) -> dict:
    """submitit ``SlurmExecutor.update_parameters`` keywords for ``options``: every job requeueable (preemption and
    ``scontrol requeue`` bring it back), started in ``chdir`` (the repository: the job imports studies.job)."""
    params: dict[str, Any] = {"job_name": job_name, "time": options.time, "nodes": options.nodes,
                              "ntasks_per_node": options.tasks_per_node,
                              "additional_parameters": {"requeue": True, "chdir": chdir}}
    gpus = gpus_per_node(options, processes_per_task)
    if gpus:
        params["gpus_per_node"] = gpus
    for key in ("partition", "account", "qos", "cpus_per_task", "mem", "constraint"):
        if getattr(options, key) is not None:
            params[key] = getattr(options, key)
    if options.setup:
        params["setup"] = list(options.setup)
    if options.max_parallel is not None:
        params["array_parallelism"] = options.max_parallel
    return params
