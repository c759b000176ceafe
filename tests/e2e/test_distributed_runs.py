"""Real torchrun runs with gloo on CPU: resume on fewer processes, resume where rank 1 has no checkpoint on its disk,
one model per run (buffers broadcast), and a user error printed once and not
replayed by the restarts.

Each run goes through a small entry script (``HOOK``) that can put each rank in its own working folder (no shared
disk), kill a rank with SIGKILL as its n-th step starts, and record the image ids of every step taken.
The tiny schedule: 16 synthetic 64-px images, a global batch of 4 (4 steps an epoch), 10 steps, a checkpoint
every 2 steps, an evaluation at the end.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from config.schema import SyntheticConfig
from data.synthetic.generate import generate_synthetic_coco
from tests.conftest import REPO
from tests.helpers import free_port as _free_port

pytestmark = pytest.mark.slow

HOOK = textwrap.dedent("""
    import json, os, signal, sys
    sys.path.insert(0, {repo!r})
    rank = int(os.environ.get("RANK", "0"))
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if os.environ.get("RANK_DIRS"):  # rank r works in folder r: the run folder is not on a shared disk
        os.chdir(os.environ["RANK_DIRS"].split(os.pathsep)[rank])
    import engine.trainer as engine
    real_step, calls = engine.Trainer.run_step, [0]

    def step(self, batches):
        calls[0] += 1
        kill = os.environ.get("KILL_AT")  # rank@call@attempt
        if kill and [int(v) for v in kill.split("@")] == [rank, calls[0], attempt]:
            os.kill(os.getpid(), signal.SIGKILL)
        iteration = self.state.iteration
        real_step(self, batches)
        if os.environ.get("RECORD"):
            with open(os.environ["RECORD"] + f".{{rank}}", "a") as f:
                ids = sorted(int(t["image_id"]) for _, ts in batches for t in ts)
                f.write(json.dumps({{"iteration": iteration, "images": ids,
                                     "launch": int(os.environ["LAUNCH"])}}) + "\\n")

    engine.Trainer.run_step = step
    import train
    from utils.script import run_script
    run_script(lambda: train.main(sys.argv[1:]))
""")


def _opts(data_root) -> list[str]:
    return ["model.backbone.width_mult=0.25", "model.encoder.channels=32", "model.encoder.mid_channels=8",
            f"data.root={data_root}", "data.synthetic.num_train=16", "data.synthetic.num_val=4",
            "data.synthetic.image_size=[64, 64]", "data.train_min_size=[64]", "data.train_max_size=64",
            "data.test_min_size=64", "data.test_max_size=64", "data.num_workers=0", "solver.batch_size=4",
            "solver.reference_batch_size=4", "solver.max_iter=10", "solver.steps=[7]", "solver.warmup_iters=2",
            "train.eval_period=0", "train.log_period=2", "train.checkpoint_period_iters=2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    data = tmp / "data"
    generate_synthetic_coco(data, SyntheticConfig(num_train=16, num_val=4, image_size=(64, 64), seed=0,
                                                  num_objects=(1, 4), min_box=24.0, max_box=160.0))  # made once
    hook = tmp / "hook.py"
    hook.write_text(HOOK.format(repo=str(REPO)))
    return tmp, data, hook


def _run(setup, out, *, nproc: int, extra_env=None, restarts: int = 0, args=(), opts=()):
    """train.py through the hook: under torchrun with ``nproc`` processes (0: plain python); returns the process."""
    tmp, data, hook = setup
    _run.launches += 1
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LAUNCH": str(_run.launches), **(extra_env or {})}
    env.pop("RANK", None)
    if nproc:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--rdzv-backend",
                    "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--max-restarts", str(restarts)]
    else:
        launcher = [sys.executable]
    cmd = [*launcher, str(hook), "--config", str(REPO / "config/small_cpu.yaml"), "--output_dir", str(out),
           "--no_progress", *args, "--opts", *_opts(data), *opts]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)


_run.launches = 0


def _final(out: Path) -> dict:
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return {k: v for k, v in record.items() if k not in ("time_s", "epoch_time_s")}


def _steps(prefix: Path) -> dict[int, list[int]]:
    """iteration -> the image ids of that step over all ranks, in the last launch that took it (a step taken by a
    rank of a killed launch after the checkpoint is taken again by the next one)."""
    records = [json.loads(line) for path in prefix.parent.glob(prefix.name + ".*")
               for line in path.read_text().splitlines()]
    last = {}
    for r in records:
        last[r["iteration"]] = max(last.get(r["iteration"], 0), r["launch"])
    steps: dict[int, list[int]] = {}
    for r in records:
        if r["launch"] == last[r["iteration"]]:
            steps[r["iteration"]] = sorted(steps.get(r["iteration"], []) + r["images"])
    return steps


@pytest.fixture(scope="module")
def uninterrupted(setup):
    tmp = setup[0]
    p = _run(setup, tmp / "full", nproc=2, extra_env={"RECORD": str(tmp / "full_steps")})
    assert p.returncode == 0, p.stderr[-3000:]
    return _final(tmp / "full"), _steps(tmp / "full_steps")


def _schedule(out: Path) -> list[tuple]:
    """(kind, epoch, iteration, lr) of every record: the schedule a run followed."""
    return [(r.get("type", "epoch"), r["epoch"], r["iteration"], r["lr"])
            for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]


def test_killed_with_2_processes_continues_as_1_process_x_accumulate_2_on_the_same_schedule_and_images(
        setup, uninterrupted):
    """The layout changes, the run does not: after a kill at step 8 of 2 processes, the same command as 1 process
    with --accumulate 2 takes each later step with the same global batch of images, at the same iteration and
    learning rate, and ends where the uninterrupted 2-process run ends."""
    tmp = setup[0]
    out, rec = tmp / "fewer", tmp / "fewer_steps"
    p = _run(setup, out, nproc=2, extra_env={"RECORD": str(rec), "KILL_AT": "0@8@0"})
    assert p.returncode != 0  # rank 0 killed as its 8th step starts; last.pth holds iteration 6
    assert torch.load(out / "last.pth", weights_only=True)["iteration"] == 6
    p = _run(setup, out, nproc=0, args=("--accumulate", "2"), extra_env={"RECORD": str(rec)})  # no --resume
    assert p.returncode == 0, p.stderr[-3000:]
    final, steps = _final(out), _steps(rec)
    assert final["iteration"] == uninterrupted[0]["iteration"] == 10
    assert final["lr"] == uninterrupted[0]["lr"]
    assert steps == uninterrupted[1]  # every step took the same global batch of images
    assert _schedule(out) == _schedule(setup[0] / "full")
    log = (out / "log.txt").read_text()
    assert "checkpointed with 2 process(es) x accumulate 1 and continues with 1 x 2" in log
    assert "the global batch (4)" in log


def test_rank_1_without_the_checkpoint_on_its_disk_resumes_from_rank_0(setup, uninterrupted):
    tmp = setup[0]
    dirs = [tmp / "node0", tmp / "node1"]
    for d in dirs:
        d.mkdir()
    env = {"RANK_DIRS": os.pathsep.join(map(str, dirs))}
    p = _run(setup, Path("run"), nproc=2, extra_env={**env, "KILL_AT": "0@8@0"})
    assert p.returncode != 0
    assert (dirs[0] / "run" / "last.pth").is_file() and not (dirs[1] / "run" / "last.pth").exists()
    p = _run(setup, Path("run"), nproc=2, extra_env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert _final(dirs[0] / "run") == uninterrupted[0]  # the same run, as if never stopped


def test_a_user_error_under_torchrun_is_printed_once_and_restarts_end_at_once(setup):
    """torchrun itself (no train.sh preflight), --max-restarts 2: the error once, then one line per restart."""
    p = _run(setup, setup[0] / "bad", nproc=2, restarts=2, opts=["model.matcher.uniform.topk=abc"])
    lines = [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("error: ")]
    assert lines[0] == "error: config key 'model.matcher.uniform.topk': expected an integer, got 'abc'", lines
    assert len(lines) == 3 and all("does not continue this run" in line for line in lines[1:]), lines
    assert p.returncode != 0 and "exitcode  : 2" in p.stderr


def _buffers_worker(rank, world, port, out):
    from engine.ema import ModelEMA
    from engine.checkpointer import sync_model
    from models import build_model
    from tests.helpers import batch as _batch, tiny_cfg as _tiny_cfg

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        cfg = _tiny_cfg(**{"model.encoder.norm": "bn", "model.decoder.norm": "bn"})
        torch.manual_seed(0)
        model = build_model(cfg)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        ema = ModelEMA(model, 0.9, 0)
        images, targets = _batch(2, seed=rank)  # each rank its own images: its own BatchNorm statistics
        ddp(images, targets, reduce_over_ranks=False)["loss_sum"].backward()
        ema.update(ddp)
        states = lambda: {"model": {k: v.clone() for k, v in model.state_dict().items()},  # noqa: E731
                          "ema": {k: v.clone() for k, v in ema.module.state_dict().items()}}
        before = states()
        sync_model(ddp, ema)
        torch.save({"before": before, "after": states()}, f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


def test_after_the_broadcast_every_rank_holds_rank_0s_buffers_and_ema(tmp_path):
    out = tmp_path / "state"
    mp.spawn(_buffers_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    r0, r1 = (torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1))
    key = "encoder.lateral_norm.running_mean"
    assert not torch.equal(r0["before"]["model"][key], r1["before"]["model"][key])  # they had drifted apart
    for part in ("model", "ema"):
        for k, v in r0["after"][part].items():
            assert torch.equal(r1["after"][part][k], v), (part, k)
            assert torch.equal(r0["before"][part][k], v), (part, k)  # rank 0 kept its own
