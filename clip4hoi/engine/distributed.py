"""Distributed runs: process-group set-up from ``torchrun``'s environment, and the few
collectives the engine needs. A single process (no ``WORLD_SIZE`` in the environment)
needs no process group; every helper then degrades to the trivial case.

    torchrun --nproc_per_node=N -m clip4hoi train CONFIG          # one machine
    torchrun --nnodes=M --nproc_per_node=N --rdzv_backend=c10d \\
             --rdzv_endpoint=HOST:PORT -m clip4hoi train CONFIG    # several machines

The backend is NCCL on GPUs and gloo on CPUs.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from clip4hoi.devices import parse_device


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, evaluates and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``train.device``: ``auto`` → this process's GPU when there is one, else the CPU
    (see :func:`clip4hoi.devices.parse_device`)."""
    return parse_device(name, "train.device", local_rank)


def init_distributed(device: str = "auto", timeout: timedelta | None = None) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), if any; ``timeout``:
    how long a collective may wait for the slowest rank (torch's default: 30 minutes with
    gloo, 10 with NCCL)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = resolve_device(device, local_rank)
    if torch_device.type == "cuda":
        # TF32 matmuls and convolutions on Ampere and later (fp32 range, 10-bit mantissa).
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world_size > 1 and not dist.is_initialized():
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo",
                                rank=rank, world_size=world_size, timeout=timeout,
                                store=attempt_store(rank, world_size))
    return DistInfo(rank, world_size, local_rank, torch_device)


def attempt_store(rank: int, world_size: int, wait_s: float = 300.0) -> dist.Store | None:
    """A key-value store of this attempt's ranks alone when ``torchrun`` shares its own
    store with them (``TORCHELASTIC_USE_AGENT_STORE``), else None (``env://`` as usual).

    The agent's store outlives a restart (``--max-restarts``): the restarted ranks would
    read the addresses that the killed ones left there and fail to connect ("Gloo
    connectFullMesh failed ... Connection refused"). So rank 0 serves a new store and
    publishes its port in the agent's store; the other ranks read the port until it is
    served (an earlier attempt's port is not: its rank 0 is gone) and connect to it."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    shared = dist.TCPStore(host, port, world_size, is_master=False)
    if rank == 0:
        own = dist.TCPStore(host, 0, world_size, is_master=True, wait_for_workers=False)
        shared.set("clip4hoi/attempt_store", str(own.port))
        return own
    deadline = time.monotonic() + wait_s
    while True:
        own_port = int(shared.get("clip4hoi/attempt_store"))
        try:
            socket.create_connection((host, own_port), timeout=2.0).close()
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"rank 0 serves no store at {host}:{own_port}") from None
            time.sleep(0.2)
            continue
        return dist.TCPStore(host, own_port, world_size, is_master=False)


def share_cpu_cores(local_rank: int) -> int:
    """Give this process its own share of the machine's cores when several ranks run on
    it (``LOCAL_WORLD_SIZE`` > 1): it is pinned to them and runs that many torch threads.
    Returns the number of threads."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local_world <= 1 or not hasattr(os, "sched_setaffinity"):
        return torch.get_num_threads()
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // local_world)
    mine = {cores[(local_rank * share + i) % len(cores)] for i in range(share)}
    os.sched_setaffinity(0, mine)
    torch.set_num_threads(len(mine))
    return len(mine)


def shutdown(failed: bool = False) -> None:
    """Leave the process group (no-op without one). After a normal end every rank first
    waits for the others: a rank that tears gloo down while rank 0 still evaluates aborts
    ("terminate called without an active exception"). After an error (``failed``) there is
    no barrier — the other ranks may be stuck in a collective that this rank will never
    join, and a barrier would hold this one until the NCCL/gloo timeout — the group is
    destroyed at once, so the launcher sees this rank exit and stops the job."""
    if not dist.is_initialized():
        return
    if not failed:
        dist.barrier()
    dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_objects(item: Any) -> list[Any]:
    """Every rank's ``item``, in rank order (``[item]`` in a single process)."""
    if not dist.is_initialized():
        return [item]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, item)
    return out


def gather_to_main(item: Any) -> list[Any] | None:
    """Every rank's ``item`` in rank order on rank 0, None on the others (``[item]`` in a
    single process). Send numpy arrays rather than Python lists: pickled, they stay small."""
    if not dist.is_initialized():
        return [item]
    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(item, out, dst=0)
    return out


def broadcast_object(item: Any) -> Any:
    """Rank 0's ``item`` on every rank."""
    if not dist.is_initialized():
        return item
    box = [item]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over the ranks (a copy; no host sync on NCCL)."""
    values = values.detach().clone()
    if dist.is_initialized():
        dist.all_reduce(values)
    return values


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` ``[n, ...]`` (same shape on all ranks) concatenated in rank
    order ``[world_size * n, ...]``, differentiable: the backward pass sums the gradients
    of all ranks for this rank's rows (``torch.distributed.nn.functional.all_gather``)."""
    if not dist.is_initialized():
        return tensor
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():   # deprecated in favour of a functional collective
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(tensor))
