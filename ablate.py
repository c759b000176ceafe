"""Run an ablation study (rows x seeds of train.py runs) and write its table into README.md.

    python ablate.py ablations/synthetic.yaml --dry-run      # print the command lines of the unfinished runs
    python ablate.py ablations/synthetic.yaml                # run them (finished runs are skipped, others resumed)
    python ablate.py ablations/synthetic.yaml --only baseline --only no_random_shift
    python ablate.py ablations/synthetic.yaml --collect      # launch nothing: copy the logs of finished runs
    python ablate.py ablations/synthetic.yaml --table-only   # README table from the logs in ablations/runs/
    python ablate.py ablations/synthetic.yaml --table-only --plot   # and every run's curves in one picture
    python ablate.py ablations/coco_r50.yaml --launcher slurm --partition gpu --time 24:00:00  # one job per run
    python ablate.py ablations/coco_r50.yaml --status --watch       # follow the jobs until every run has ended

The spec format: studies/spec.py; what "finished" means: studies/logs.py; SLURM: docs/cluster.md. The README
needs the markers <!-- ablation:NAME:start --> and <!-- ablation:NAME:end --> where the table goes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from studies.local import run_ablation
from studies.slurm import submit_study
from studies.slurm_options import add_arguments as add_slurm_arguments, options_from_args
from studies.spec import DEFAULT_LOGS_DIR, DEFAULT_RUNS_DIR, REPO, Spec, SpecError, load_spec, plan_runs
from studies.status import format_status, study_status, watch
from studies.table import update_readme
from tools import plot_runs as curves  # a module attribute: tests wrap plot_runs
from utils.errors import UserError
from utils.script import run_script


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Run an ablation spec and tabulate it", epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", type=Path, help="an ablation spec, e.g. ablations/synthetic.yaml")
    p.add_argument("--dry-run", action="store_true", help="print the command lines instead of running them")
    p.add_argument("--only", action="append", default=None, metavar="ROW", help="run only this row (repeatable)")
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR,
                   help="where the runs write (default runs/ablations; <runs-dir>/<spec>/<row>/seed<k>)")
    p.add_argument("--logs-dir", type=Path, default=DEFAULT_LOGS_DIR,
                   help="where the small logs are copied and the table reads them (default ablations/runs)")
    p.add_argument("--readme", type=Path, default=REPO / "README.md", help="the file holding the table markers")
    p.add_argument("--collect", action="store_true",
                   help="launch nothing: copy the small logs of the finished runs (e.g. started from --dry-run lines) "
                        "to --logs-dir, then rewrite the table")
    p.add_argument("--table-only", action="store_true", help="only rewrite the README table from the logs")
    p.add_argument("--no-table", action="store_true", help="do not update the README table after running")
    p.add_argument("--keep-going", action="store_true", help="go on with the other runs when one fails")
    p.add_argument("--plot", nargs="?", type=Path, const=True, default=None, metavar="PNG",
                   help="also draw the curves of every logged run of the spec, one line per row/seed, into PNG "
                        "(default <logs-dir>/<spec>/curves.png; tools/plot_runs.py)")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="local: run the runs one after the other here (default); slurm: submit each unfinished run "
                        "as a SLURM job (submitit), follow them with --status, gather them with --collect")
    p.add_argument("--status", action="store_true",
                   help="launch nothing: one line per run (finished, running, pending or failed)")
    p.add_argument("--watch", action="store_true", help="with --status: print it again until every run has ended")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between two --watch prints (default 60)")
    add_slurm_arguments(p, "SLURM options of --launcher slurm (override the spec's slurm: section; docs/cluster.md)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        spec = load_spec(args.spec)
        if args.status or args.watch:
            return show_status(spec, args)
        if args.launcher == "slurm" and not (args.collect or args.table_only):
            return submit(spec, args)
        if not args.table_only:
            status = run_ablation(spec, args.runs_dir.resolve(), args.logs_dir.resolve(), only=args.only,
                                  dry_run=args.dry_run, keep_going=args.keep_going, collect=args.collect)
            if args.dry_run:
                return 0
            print(" ".join(f"{k}: {v}" for k, v in status.items()))
        if args.table_only or not args.no_table:
            try:
                changed = update_readme(spec, args.readme, args.logs_dir.resolve())
            except SpecError as e:
                if args.table_only:
                    raise
                print(f"runs done, README table not written: {e}", file=sys.stderr)  # the runs are what matter here
                return 0
            print(f"{args.readme}: table '{spec.name}' {'updated' if changed else 'unchanged'}")
        if args.plot is not None and not args.dry_run:
            out = args.logs_dir.resolve() / spec.name / "curves.png" if args.plot is True else args.plot
            print(f"{out}: curves of {plot_spec(spec, args.logs_dir.resolve(), out)} run(s)")
    except UserError as e:  # a bad spec, option or run folder; SLURM unreachable or refusing a job
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a run failed; its log.txt has the details
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def show_status(spec: Spec, args) -> int:
    """--status (--watch): 0, or 1 when --watch ends with a failed run."""
    runs_dir, logs_dir = args.runs_dir.resolve(), args.logs_dir.resolve()
    if args.watch:
        statuses = watch(spec, runs_dir, logs_dir, only=args.only, interval=args.interval)
        return int(any(s.state == "failed" for s in statuses))
    print(format_status(spec, study_status(spec, runs_dir, logs_dir, only=args.only)))
    return 0


def submit(spec: Spec, args) -> int:
    """--launcher slurm: submit the unfinished runs that have no live job."""
    status = submit_study(spec, options_from_args(args, spec.slurm), args.runs_dir.resolve(),
                          args.logs_dir.resolve(), only=args.only, dry_run=args.dry_run)
    if not args.dry_run:
        print(" ".join(f"{k}: {v}" for k, v in status.items()))
        same = f"python ablate.py {args.spec}" + "".join(
            f" {flag} {value}" for flag, value, default in (("--runs-dir", args.runs_dir, DEFAULT_RUNS_DIR),
                                                          ("--logs-dir", args.logs_dir, DEFAULT_LOGS_DIR))
            if value.resolve() != default)
        print(f"follow them: {same} --status --watch; when they have finished: {same} --collect")
    return 0


def plot_spec(spec: Spec, logs_dir: Path, out: Path) -> int:
    """One picture of every run of ``spec`` logged under ``logs_dir``; returns how many runs it shows."""

    runs = [r for r in plan_runs(spec)
            if (logs_dir / spec.name / r.row.name / f"seed{r.seed}" / "metrics.jsonl").is_file()]
    if not runs:
        raise SpecError(f"no logged runs of '{spec.name}' under {logs_dir / spec.name} to plot")
    curves.plot_runs([logs_dir / spec.name / r.row.name / f"seed{r.seed}" for r in runs], out,
                     labels=[r.label for r in runs], title=f"ablation {spec.name}")
    return len(runs)


if __name__ == "__main__":
    sys.exit(run_script(main))
