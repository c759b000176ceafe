"""Training curves of one or more runs in one picture: loss parts, lr and every AP metric, one line per run.

    python -m tools.plot_runs runs/a runs/b --out curves.png            # x: iteration
    python -m tools.plot_runs runs/a runs/b --out curves.png --x epoch  # x: epoch (runs of different batch sizes)

Reads each run's ``metrics.jsonl`` (:mod:`engine.metrics_log`): the losses and lr from the iteration
records (every ``train.log_period`` steps; the epoch records for runs that have none), the AP metrics
from the evaluated epoch records. A line is labelled by its run's folder name. ``train.py`` draws
its own run into ``OUTPUT_DIR/curves.png``; ``ablate.py SPEC --plot`` draws every run of a spec.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence


if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from utils.errors import UserError  # noqa: E402
from engine.metrics_log import epoch_records, is_iteration_record, read_metrics  # noqa: E402
from utils.script import run_script  # noqa: E402

TRAIN_KEYS = ("loss", "loss_cls", "loss_box_reg", "lr")
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "mAP")
X_AXES = ("iteration", "epoch")


@dataclass(frozen=True)
class Run:
    label: str
    records: list

    @property
    def steps_per_epoch(self) -> Optional[int]:
        return next((r["steps_per_epoch"] for r in self.records if r.get("steps_per_epoch")), None)


def load_run(run_dir: Path | str, label: Optional[str] = None) -> Run:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir}: no metrics.jsonl (not a train.py output folder?)")
    try:
        records = read_metrics(path)
    except ValueError as e:
        raise UserError(f"{path}: not a JSON-lines file ({e})") from None
    if not records:
        raise UserError(f"{path}: no records yet")
    return Run(label or Path(run_dir).resolve().name, records)


def _x(run: Run, record: dict, x: str) -> float:
    if x == "iteration":
        return float(record["iteration"])
    if run.steps_per_epoch:
        return record["iteration"] / run.steps_per_epoch
    return float(record["epoch"] + 1)  # a run without iteration records: its epoch records close their epochs


def series(run: Run, key: str, x: str = "iteration") -> tuple[list[float], list[float]]:
    """(xs, ys) of ``key`` in ``run``: losses and lr from the iteration records when there are any, AP metrics
    from the evaluated epoch records (pycocotools' -1, "undefined", left out)."""
    if key in AP_KEYS:
        records = [r for r in epoch_records(run.records) if isinstance(r.get(key), (int, float)) and r[key] >= 0]
    else:
        iters = [r for r in run.records if is_iteration_record(r) and key in r]
        records = iters or [r for r in epoch_records(run.records) if key in r]
    return [_x(run, r, x) for r in records], [float(r[key]) for r in records]


def _load_runs(run_dirs: Sequence[Path | str], labels: Optional[Sequence[str]]) -> list[Run]:
    """The runs, labelled by ``labels`` or their folder names (with the parent's where two names clash)."""
    if labels is not None and len(labels) != len(run_dirs):
        raise UserError(f"{len(labels)} labels for {len(run_dirs)} runs")
    runs = [load_run(d, labels[i] if labels else None) for i, d in enumerate(run_dirs)]
    if labels is None and len({r.label for r in runs}) < len(runs):  # e.g. row_a/seed0 and row_b/seed0
        runs = [Run("/".join(Path(d).resolve().parts[-2:]), r.records) for d, r in zip(run_dirs, runs)]
    return runs


def _draw_panel(ax, key: str, runs: Sequence[Run], *, x: str) -> None:
    """One metric: a line per run that has it (colours by run order), a log scale for a positive lr."""
    for i, run in enumerate(runs):
        xs, ys = series(run, key, x)
        if xs:
            ax.plot(xs, ys, color=f"C{i % 10}", label=run.label, linewidth=1.2,
                    marker="o" if key in AP_KEYS or len(xs) < 3 else None, markersize=4)
    ax.set_title(key)
    ax.set_xlabel(x)
    ax.grid(True, alpha=0.3)
    if key == "lr" and all(y > 0 for line in ax.get_lines() for y in line.get_ydata()):
        ax.set_yscale("log")


def plot_runs(run_dirs: Sequence[Path | str], out: Optional[Path | str] = None, *, x: str = "iteration",
              labels: Optional[Sequence[str]] = None, title: Optional[str] = None):
    """A matplotlib ``Figure`` with one panel per metric that some run has and one line per run in it
    (titled by the metric, each line labelled by its run); saved to ``out`` when given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy
    from matplotlib.figure import Figure  # heavy

    if x not in X_AXES:
        raise UserError(f"--x {x}: expected one of {', '.join(X_AXES)}")
    runs = _load_runs(run_dirs, labels)
    keys = [k for k in TRAIN_KEYS + AP_KEYS if any(series(r, k, x)[0] for r in runs)]
    ncols = min(4, max(1, len(keys)))
    nrows = max(1, math.ceil(len(keys) / ncols))
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        _draw_panel(ax, key, runs, x=x)
    xs = [v for ax in axes[:len(keys)] for line in ax.get_lines() for v in line.get_xdata()]
    if xs:  # one x range for every panel: a metric evaluated once still sits where the run ended
        pad = 0.03 * (max(xs) - min(xs) or 1.0)
        for ax in axes[:len(keys)]:
            ax.set_xlim(min(xs) - pad, max(xs) + pad)
    for ax in axes[len(keys):]:
        fig.delaxes(ax)
    if keys:
        axes[0].legend(fontsize=7 if len(runs) <= 8 else 5, ncol=1 if len(runs) <= 12 else 2)
    if title:
        fig.suptitle(title)
    # fixed margins: tight_layout would draw the whole figure once more to measure it
    height = 3.2 * nrows  # inches; the margins below hold the x labels and the title
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.5 / height, top=1 - (0.6 if title else 0.35) / height,
                        wspace=0.28, hspace=0.5)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    return fig


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Plot training curves of runs", epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="train.py output folders (each holds metrics.jsonl)")
    p.add_argument("--out", "-o", type=Path, default=Path("curves.png"), help="the PNG to write")
    p.add_argument("--x", choices=X_AXES, default="iteration", help="x axis: optimizer steps or epochs")
    p.add_argument("--labels", nargs="+", default=None, help="one legend label per run (default: folder names)")
    p.add_argument("--title", default=None)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    fig = plot_runs(args.runs, args.out, x=args.x, labels=args.labels, title=args.title)
    print(f"{len(args.runs)} run(s), {len(fig.axes)} panels -> {args.out}")


if __name__ == "__main__":
    run_script(main)
