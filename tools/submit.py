"""Submit one training run as a SLURM job through submitit (``bash train.sh slurm MODEL`` calls it; docs/cluster.md).

    python -m tools.submit --config config/yolof_r50_c5_1x.yaml --output_dir runs/yolof_r50_c5_1x \\
        --data datasets/coco --per-gpu 8 --nodes 2 --partition gpu --time 24:00:00 [train.py arguments]

The job is ``--nodes`` x ``--tasks-per-node`` tasks (srun); each task runs one torchrun agent for the GPUs of its
node, and the agents meet through c10d rendezvous on the job's first node (:mod:`studies.job`). Why this and not
one task per GPU with the rank read from SLURM's variables: train.py stays the torchrun program it is on one
machine (the same command line and logs), torchrun restarts every worker of the job when one dies
(``--max-restarts``) without giving the node back, and the SLURM variables are read in one place, not by the
trainer. ``--per-gpu N`` sets ``solver.batch_size`` to N x the processes (the linear rule then scales the lr and
schedule, train.sh's header).

Preemption, the time limit and ``scontrol requeue`` bring the job back and the same command continues the run from
``OUTPUT_DIR/last.pth`` (``--checkpoint-period`` sets how much a restart redoes); a train.py error ends the job,
which is not requeued. Arguments that are not this tool's go to train.py (``--opts`` are merged, the later win).

Before sbatch, as far as they can be checked from the submitting machine (the job's paths must be on a filesystem
the nodes share): the config and its overrides, the run folder (another config there stops), the ImageNet file (or
``train.init_from``) and the COCO folder (tools/launch_check.py). submitit's files and the job's log
(``<job>_0_log.out`` / ``.err``) go to ``OUTPUT_DIR/slurm/``; a second submission while the run's job is queued or
running stops.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from studies.job import TrainJob
from studies.slurm import Submission, make_executor, queue_states, read_records, submit_jobs
from studies.slurm_options import SlurmOptions, add_arguments, executor_parameters, layout, options_from_args
from studies.spec import REPO
from tools.launch_check import preflight
from utils.errors import UserError
from utils.script import run_script

DEFAULT_GPUS_PER_NODE = 8  # the official recipes' node


def parse_args(argv: Optional[Sequence[str]] = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m tools.submit", description=__doc__.split("\n\n")[0],
                                epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--config", required=True, help="the preset, e.g. config/yolof_r50_c5_1x.yaml")
    p.add_argument("--output_dir", "-o", type=Path, required=True, help="the run folder (on the shared filesystem)")
    p.add_argument("--data", type=Path, default=None, help="data.root (the COCO folder on the shared filesystem)")
    p.add_argument("--per-gpu", type=int, default=None,
                   help="images per process: solver.batch_size = N x processes (default: the config's batch)")
    p.add_argument("--checkpoint-period", type=int, default=500,
                   help="train.checkpoint_period_iters: what a requeued job redoes at most (default 500 steps)")
    p.add_argument("--max-restarts", type=int, default=3,
                   help="torchrun restarts of every worker within the job when one dies (default 3)")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, after this tool's")
    p.add_argument("--dry-run", action="store_true", help="check and print the job, submit nothing")
    add_arguments(p, "SLURM options (sbatch's; docs/cluster.md)")
    args, train_args = p.parse_known_args(argv)
    return args, train_args


def job_options(args: argparse.Namespace) -> tuple[SlurmOptions, int]:
    """The job's options (8 GPUs a node unless told) and its training processes per task."""
    options = options_from_args(args)
    if options.gpus_per_node is None:
        options = replace(options, gpus_per_node=DEFAULT_GPUS_PER_NODE)
    if options.max_parallel is not None:
        raise UserError("--max-parallel is for studies (ablate.py --launcher slurm): one run is one job")
    return options, options.gpus_per_node or 1


def train_argv(args: argparse.Namespace, train_args: Sequence[str], world: int) -> list[str]:
    opts = [f"train.checkpoint_period_iters={args.checkpoint_period}"]
    if args.data is not None:
        opts.insert(0, f"data.root={args.data}")
    if args.per_gpu is not None:
        opts.append(f"solver.batch_size={args.per_gpu * world}")
    return ["train.py", "--config", args.config, "--output_dir", str(args.output_dir), *train_args,
            "--no_progress", "--opts", *opts, *args.opts]




def main(argv: Optional[Sequence[str]] = None) -> int:
    args, train_args = parse_args(argv)
    options, per_task = job_options(args)
    world = layout(options, per_task, "tools.submit")
    argv_ = train_argv(args, train_args, world)
    # train.sh's preflight, but for the GPUs: they are the job's nodes', not this machine's
    print(preflight("slurm", per_task * options.tasks_per_node, options.nodes, argv_[1:], gpus_here=False))
    folder = args.output_dir / "slurm"
    record = read_records(folder).get(str(args.output_dir))
    if record is not None:
        entry = queue_states([record.job_id]).get(record.job_id)
        if entry is not None and entry.alive:
            raise UserError(f"{args.output_dir} is already trained by job {record.job_id} ({entry.state.lower()}): "
                            f"wait for it, or end it with scancel {record.job_id}")
    job = TrainJob(argv_, cwd=str(REPO), python=sys.executable, nproc_per_task=per_task,
                   max_restarts=args.max_restarts)
    name = f"yolof/{args.output_dir.name}"
    shown = shlex.join(["python", *argv_])
    layout_line = (f"{options.nodes} node(s) x {options.tasks_per_node} task(s) x {per_task} process(es)"
                   f"{' on GPUs' if options.gpus_per_node else ' on CPUs'}")
    if args.dry_run:
        params = executor_parameters(options, processes_per_task=per_task, job_name=name, chdir=str(REPO))
        print(f"# sbatch: {layout_line}: " + " ".join(f"{k}={v}" for k, v in params.items()
                                                       if k != "additional_parameters"))
        print(shown)
        return 0
    executor = make_executor(folder, options, processes_per_task=per_task, job_name=name)
    [record] = submit_jobs(executor, [Submission(str(args.output_dir), name, job, shown)], array=False,
                           folder=folder)
    print(f"submitted job {record.job_id}: {layout_line}, {shown}\n"
          f"log: {folder}/{record.job_id}_0_log.err; follow it: squeue -j {record.job_id}; the run: "
          f"{args.output_dir}/metrics.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
