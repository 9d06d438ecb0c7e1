"""torch.distributed for training launched by torchrun (one or several nodes).

torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous variables; without
them a run is a single process. The backend is NCCL on CUDA and gloo on the CPU. Rank 0 writes
checkpoints and logs; the others only train.

    torchrun --nproc_per_node 2 -m geofm_lib.cli train --preset demo --experiment group_C
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as td

from geofm_lib.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def from_env() -> Dist:
    """The torchrun variables of this process (a single process when they are absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Dist(rank=int(os.environ.get("RANK", "0")),
                local_rank=int(os.environ.get("LOCAL_RANK", "0")), world_size=world,
                local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))


def setup(device: str) -> tuple[Dist, str]:
    """Join the process group of a torchrun launch (if any); return (dist, this rank's device).

    On CUDA each process takes GPU ``LOCAL_RANK`` and NCCL; on the CPU gloo, and the cores are
    shared out between the processes of a node (torchrun sets OMP_NUM_THREADS=1 unless told).
    """
    dist = from_env()
    if not dist.enabled:
        return dist, device

    on_cuda = device.startswith("cuda")
    if on_cuda:
        if torch.cuda.device_count() <= dist.local_rank:
            raise ConfigError(f"rank {dist.rank} wants GPU {dist.local_rank} but this node has "
                               f"{torch.cuda.device_count()}; lower --nproc_per_node")
        torch.cuda.set_device(dist.local_rank)
        device = f"cuda:{dist.local_rank}"
    elif "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // dist.local_world_size))
    if not td.is_initialized():
        td.init_process_group(backend="nccl" if on_cuda else "gloo")
    return dist, device


def barrier(dist: Dist) -> None:
    if dist.enabled:
        td.barrier()


def teardown(dist: Dist) -> None:
    if dist.enabled:
        if td.is_initialized():
            td.destroy_process_group()
