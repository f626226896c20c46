"""Distributed training: the process group of a torchrun or spawned launch, and which process is the
main one."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field

import torch


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


_LAUNCH_NUMBERS = itertools.count(1)  # torchrun launches in this process


def _fresh_group_names() -> None:
    """A job may launch several runs under one torchrun (adapt-backbone: warm-up, adaptation, probes); each
    makes and destroys the default process group, and torch names a re-made one "0" again, so it would meet
    the previous group's keys in torchrun's store (stale peer addresses: "Connection refused"). A distinct
    name per launch (every rank launches in the same order) keeps them apart; torch has no public way to
    name the default group."""
    from torch.distributed import distributed_c10d

    distributed_c10d._world.group_count = 1000 * next(_LAUNCH_NUMBERS)


def _env_dist() -> Dist | None:
    """torchrun (possibly multi-node): RANK / WORLD_SIZE / LOCAL_RANK in the environment."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    cuda = torch.cuda.is_available()
    _fresh_group_names()
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
    return Dist(rank, world, torch.device(f"cuda:{local}") if cuda else torch.device("cpu"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"
