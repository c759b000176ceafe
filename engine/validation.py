"""Evaluation during training: when it is due, which weights are scored, and ``best.pth``."""
from __future__ import annotations

from pathlib import Path

from data.build import DATASETS
from engine.checkpointer import sync_model, unwrap
from evaluation.evaluator import evaluate  # a module global: tests wrap it
from models.fuse import prepare_for_inference
from utils.distributed import is_main_process

SCALARS = ("AP", "AP50", "AP75", "mAP")  # the metrics drawn in TensorBoard


class Validator:
    """Scores a trainer's model (the EMA's weights with ``train.ema``) on its validation split."""

    def __init__(self, trainer, output_dir: Path):
        self.trainer, self.output_dir = trainer, Path(output_dir)

    def due(self, epoch: int, epoch_done: bool, finished: bool) -> bool:
        """At the end of the run, and every ``train.eval_period`` epochs (0: only at the end)."""
        period = self.trainer.cfg.train.eval_period
        return finished or (epoch_done and period > 0 and (epoch + 1) % period == 0)

    def evaluate(self, final: bool) -> dict:
        """The metrics, without the per-class entries; the PR curve PNG beside the metrics JSON at the ``final``
        evaluation only (each drawing takes a noticeable fraction of a small model's evaluation)."""
        t = self.trainer
        sync_model(t.model, t.ema)
        model = t.ema.module if t.ema is not None else unwrap(t.model)
        iteration = t.state.iteration
        path = self.output_dir / "eval" / f"metrics_iter{iteration}.json" if is_main_process() else None
        metrics = evaluate(prepare_for_inference(model), t.data.val_set, t.data.val_loader, t.device,
                           DATASETS[t.cfg.data.dataset].metric, t.amp, metrics_path=path, pr_curve=final,
                           progress=t.options.progress)
        t.progress.add_scalars("val", {k: metrics[k] for k in SCALARS if k in metrics}, iteration)
        return {k: v for k, v in metrics.items() if not k.startswith("AP_")}

    def keep_best(self, record: dict, finished: bool) -> None:
        """``best.pth`` when the record's AP is the best so far (the final one is written in any case)."""
        t = self.trainer
        ap = record.get("AP", record.get("mAP", -1.0))
        if is_main_process() and (ap > t.state.best_ap or (finished and not (self.output_dir / "best.pth").is_file())):
            t.state.best_ap = max(ap, t.state.best_ap)
            t.checkpointer.save("best.pth", sync=False)  # the evaluation synchronised the model
