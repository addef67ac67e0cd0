"""Data-parallel helpers for `torchrun` runs (gloo on CPU): feature gathering and gradient averaging.

Every rank holds a full model copy and a slice of the global batch. The loss gathers features from
all ranks *with* gradients, so each rank contrasts its rows against the global batch; gradients are
then averaged over ranks once per optimizer step. Outside `torchrun` everything here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Only the main rank writes logs, checkpoints and the final model."""
        return self.rank == 0


def init_from_env() -> DistEnv:
    """Joins the process group `torchrun` describes in the environment (gloo), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv()
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return DistEnv(dist.get_rank(), dist.get_world_size())


def shutdown(env: DistEnv) -> None:
    """Leaves the process group once every rank is done."""
    if env.world_size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sends each rank the summed gradient of its own slice."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)  # [W * B, ...]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        # Every rank's loss depends on every slice: the gradient of our slice is the sum over ranks.
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenates `x` [B, ...] from all ranks in rank order into [W * B, ...], differentiably."""
    return _GatherWithGrad.apply(x) if _active() else x  # type: ignore[no-any-return]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenates `x` [B, ...] from all ranks without gradients (masks, labels)."""
    if not _active():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def rank_offset(rows: int) -> int:
    """Index of this rank's first row in a gathered [W * rows, ...] tensor."""
    return dist.get_rank() * rows if _active() else 0


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Averages `.grad` over ranks in one flat all-reduce, as DDP would after backward."""
    if not _active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # [sum of numels]
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_over_ranks(value: float) -> float:
    """The mean of a scalar over ranks (for logging the global loss)."""
    if not _active():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()
