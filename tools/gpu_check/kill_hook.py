"""train.py with one worker killed: ``KILL_AT=RANK@STEP`` SIGKILLs that rank as its STEP-th step starts, in the first
torchrun attempt only, so that the elastic agent's restart has to continue the run from last.pth.

    python -m torch.distributed.run --nproc_per_node 2 --max-restarts 1 -m tools.gpu_check.kill_hook TRAIN_ARGS
"""
from __future__ import annotations

import os
import signal
import sys

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

import train
from engine.trainer import Trainer
from utils.script import run_script


def install(kill_at: str) -> None:
    rank, step = (int(v) for v in kill_at.split("@"))
    if int(os.environ.get("RANK", "0")) != rank or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) != 0:
        return
    real, calls = Trainer.run_step, [0]

    def run_step(self, micro_batches):
        calls[0] += 1
        if calls[0] == step:
            os.kill(os.getpid(), signal.SIGKILL)
        real(self, micro_batches)

    Trainer.run_step = run_step


if __name__ == "__main__":
    if os.environ.get("KILL_AT"):
        install(os.environ["KILL_AT"])
    run_script(lambda: train.main(sys.argv[1:]))
