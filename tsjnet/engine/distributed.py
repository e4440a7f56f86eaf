"""Multi-process training as torchrun launches it (RANK, WORLD_SIZE, LOCAL_RANK in the environment):
NCCL on GPUs, gloo on CPU. One process = one device; a single process needs no setup at all."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environment(cls, device_type: str) -> DistributedContext:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        context = cls(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        return context

    def mean(self, value: float, device: torch.device) -> float:
        """The mean of ``value`` over all processes (every process gets it)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def average_gradients(self, parameters) -> None:
        """For trainable modules outside DDP (task networks): all-reduce their gradients."""
        if not self.enabled:
            return
        for parameter in parameters:
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad)
                parameter.grad /= self.world_size

    def shard(self, order: list[int]) -> list[int]:
        """This process's share of an epoch's order; padded by wrapping so every share has one length."""
        if not self.enabled:
            return order
        total = -(-len(order) // self.world_size) * self.world_size
        padded = (order * (total // max(len(order), 1) + 1))[:total]
        return padded[self.rank::self.world_size]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
