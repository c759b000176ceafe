"""The distributed checks: the collectives the trainer relies on, on a 1-process NCCL group (gloo on CPU), and with
2 or more devices a 2-process torchrun run whose worker is killed and restarted by the elastic agent."""
from __future__ import annotations

import copy
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from config import load_config
from config.schema import SyntheticConfig
from data.synthetic.generate import generate_synthetic_coco
from engine.checkpointer import sync_model
from engine.ema import ModelEMA
from engine.optim import build_optimizer
from engine.step import NonFiniteLossError, train_step
from models import build_model
from utils.distributed import broadcast_bytes
from utils.paths import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _small(device):
    cfg = load_config(REPO_ROOT / "config/small_cpu.yaml")
    torch.manual_seed(0)
    return build_model(cfg).to(device), cfg


def _batch(device, n: int = 2):
    g = torch.Generator().manual_seed(0)
    images = [(torch.rand(3, 128, 160, generator=g) * 255).to(device) for _ in range(n)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 90.0, 100.0], [60.0, 30.0, 150.0, 120.0]], device=device),
                "labels": torch.tensor([1, 3], device=device)} for _ in range(n)]
    return images, targets


def collectives(device: torch.device) -> dict:
    """On a 1-process group (NCCL on CUDA, gloo on CPU): the checkpoint bytes broadcast, ``sync_model`` of the
    buffers and the EMA, the non-finite agreement of ``train_step``, and a DDP step equal to the plain step."""
    plain, cfg = _small(device)
    twin = copy.deepcopy(plain)
    images, targets = _batch(device)
    train_step(plain, build_optimizer(plain, cfg.solver, 0.01), [(images, targets)], device=device)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend, rank=0, world_size=1, device_id=device if backend == "nccl"
                                         else None)
    out = {"backend": backend}
    try:
        buffer = io.BytesIO()
        torch.save({"model": twin.state_dict()}, buffer)
        sent = buffer.getvalue()
        out["broadcast_equal"] = broadcast_bytes(sent) == sent
        out["broadcast_mib"] = len(sent) / 2**20
        ema = ModelEMA(twin, 0.9, 0)
        before = {k: v.clone() for k, v in twin.state_dict().items()}
        sync_model(twin, ema)
        out["sync_model_kept"] = all(torch.equal(v, before[k]) for k, v in twin.state_dict().items())
        ddp = torch.nn.parallel.DistributedDataParallel(twin, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
        opt = build_optimizer(ddp, cfg.solver, 0.01)
        real = twin.compute_losses

        def nan_once(*args, **kwargs):
            twin.compute_losses = real
            result = real(*args, **kwargs)
            return {**result, "loss_sum": result["loss_sum"] * float("nan")}

        twin.compute_losses = nan_once
        try:
            train_step(ddp, opt, [(images, targets)], device=device)
            out["nonfinite_agreed"] = False
        except NonFiniteLossError:
            out["nonfinite_agreed"] = True
        opt.zero_grad(set_to_none=True)
        twin.load_state_dict(before)
        train_step(ddp, build_optimizer(ddp, cfg.solver, 0.01), [(images, targets)], device=device)
    finally:
        torch.distributed.destroy_process_group()
    a, b = plain.state_dict(), twin.state_dict()
    out["ddp_max_diff"] = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    return out


def _final(out: Path) -> dict:
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return {k: v for k, v in record.items() if k not in ("time_s", "epoch_time_s")}


def elastic_restart(device: torch.device, tmp: Path, nproc: int = 2) -> dict:
    """A 2-process torchrun run of a small model, uninterrupted and with rank 1 killed (SIGKILL) as its 4th step
    starts, restarted once by the elastic agent (it continues from last.pth); returns both final records."""
    data = tmp / "data"
    generate_synthetic_coco(data, SyntheticConfig(num_train=16, num_val=4, image_size=(64, 64), seed=0,
                                                  num_objects=(1, 4), min_box=24.0, max_box=160.0))
    opts = [f"data.root={data}", "model.backbone.width_mult=0.25", "model.encoder.channels=32",
            "model.encoder.mid_channels=8", "data.synthetic.num_train=16", "data.synthetic.num_val=4",
            "data.synthetic.image_size=[64, 64]", "data.train_min_size=[64]", "data.train_max_size=64",
            "data.test_min_size=64", "data.test_max_size=64", "data.num_workers=0", "solver.batch_size=4",
            "solver.reference_batch_size=4", "solver.max_iter=6", "solver.steps=[5]", "solver.warmup_iters=2",
            "train.eval_period=0", "train.checkpoint_period_iters=2"]
    finals = {}
    for name, kill in (("uninterrupted", ""), ("killed", "1@4")):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--max-restarts", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
               "-m", "tools.gpu_check.kill_hook", "--config", "config/small_cpu.yaml", "--output_dir",
               str(tmp / name), "--device", device.type, "--no_progress", "--opts", *opts]
        env = {**os.environ, "KILL_AT": kill, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        p = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"{name} run failed ({p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
        finals[name] = _final(tmp / name)
        finals[name + "_restarted"] = "continuing it from" in (tmp / name / "log.txt").read_text()
    return finals
