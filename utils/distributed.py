"""torchrun-style distributed helpers: rank from the environment, nothing home-made."""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def init_distributed(device: str) -> tuple[int, int, int]:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1).

    Returns (rank, local_rank, world_size). NCCL on CUDA, gloo on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or is_dist():
        return get_rank(), int(os.environ.get("LOCAL_RANK", "0")), get_world_size()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)  # before the first CUDA call: no context on GPU 0 from other ranks
    timeout = timedelta(minutes=30)
    store = _restart_store(world_size, timeout)
    if store is None:
        dist.init_process_group(backend=backend, timeout=timeout)
    else:
        dist.init_process_group(backend=backend, timeout=timeout, store=store, rank=rank, world_size=world_size)
    return rank, local_rank, world_size


def _restart_store(world_size: int, timeout: timedelta):
    """The elastic agent's store under a prefix of this restart attempt, or None outside torchrun's agent store.

    With ``--rdzv-backend c10d`` the workers of every attempt share the rendezvous' TCPStore, and torch's env://
    handler adds no per-attempt prefix. The process group's keys (gloo's peer addresses, NCCL's unique id) of a
    killed attempt are then still there when the restarted workers look them up, and a restarted rank can read
    its dead peer's address ("Gloo connectFullMesh failed ... Connection refused") or hang. A prefix per attempt
    keeps each attempt's keys to itself.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                          is_master=False, timeout=timeout)
    return dist.PrefixStore(f"yolof/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_dist():
        t = t.clone()
        dist.all_reduce(t)
    return t


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_gather_object(obj):
    if not is_dist():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's ``obj`` (small: a decision, a message) on every rank."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _comm_device() -> torch.device:
    """Where collectives put their tensors: the current GPU under NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def broadcast_bytes(data) -> bytes:
    """Rank 0's ``data`` (bytes; None elsewhere) on every rank: a checkpoint file travels this way to ranks on
    nodes that do not share rank 0's disk, and is then read with ``torch.load(weights_only=True)`` as a file is."""
    if not is_dist():
        return data
    device = _comm_device()
    size = torch.tensor([len(data) if get_rank() == 0 else 0], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    if get_rank() == 0:
        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
    else:
        buf = torch.empty(int(size), dtype=torch.uint8, device=device)
    dist.broadcast(buf, src=0)
    return data if get_rank() == 0 else buf.cpu().numpy().tobytes()


@torch.no_grad()
def broadcast_tensors(tensors) -> None:
    """Overwrite every tensor of ``tensors`` with rank 0's, in place (e.g. BatchNorm running statistics)."""
    if not is_dist():
        return
    for t in tensors:
        dist.broadcast(t.data, src=0)


def destroy_distributed() -> None:
    """Destroy the process group (at exit), where one was initialised."""
    if is_dist():
        dist.destroy_process_group()
