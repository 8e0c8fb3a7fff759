"""Collective helpers for selector state: no-ops unless torch.distributed is initialised.

Selectors reduce sufficient statistics (sums, counts, maxima, histograms) so that every rank
holds identical state and a run on R ranks equals one process fed the R batches
concatenated in rank order. Raw predictions are never gathered.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

if dist.is_available():
    from torch.distributed import ProcessGroup
else:  # a torch build without distributed support: no groups exist
    ProcessGroup = Any

__all__ = ["ProcessGroup", "all_gather_cat", "all_reduce_max", "all_reduce_sum", "is_distributed"]


def is_distributed() -> bool:
    """True when torch.distributed is available and a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(tensor: Tensor, group: ProcessGroup | None = None) -> Tensor:
    """Sum ``tensor`` over the ranks of ``group`` in place (no-op without a process group)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor


def all_reduce_max(tensor: Tensor, group: ProcessGroup | None = None) -> Tensor:
    """Element-wise maximum of ``tensor`` over the ranks of ``group``, in place."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=group)
    return tensor


def all_gather_cat(tensor: Tensor, group: ProcessGroup | None = None) -> Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, in rank order.

    Every rank must pass the same shape (equal per-rank batch sizes, as with a
    ``DistributedSampler``). Without a process group, returns ``tensor`` itself.
    """
    if not is_distributed():
        return tensor
    world = dist.get_world_size(group)
    out = torch.empty(
        (world * tensor.shape[0], *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device
    )
    dist.all_gather_into_tensor(out, tensor.contiguous(), group=group)
    return out
