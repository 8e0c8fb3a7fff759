"""How eager CPU kernels walk their input: cache-sized blocks, a bounded number of them,
and one scratch buffer per call reused by every block.

Why blocks: a temporary as large as the input comes back from the operating system as
fresh pages on every allocation (glibc hands large freed buffers back), and on a CPU the
page faults cost more than the arithmetic; a block-sized temporary stays in cache and is
reused from the heap. Why a bounded count: every op is a parallel region whose threads
meet at a barrier, and a busy machine makes each barrier costly — the number of ops per
call must not grow with the input (tests/test_op_count.py).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "BlockScratch",
    "CPU_BLOCK_ELEMENTS",
    "CPU_BLOCK_POSITIONS",
    "flatten",
    "group_blocks",
    "position_blocks",
]

# Probabilities per block of a (n, K, L) walk: the block's one temporary stays in cache.
CPU_BLOCK_ELEMENTS = 1 << 20
# ... in at most this many blocks.
CPU_MAX_BLOCKS = 16
# Positions per block of a (G, n) walk over CSL's groups, whose float64 temporaries must
# stay small enough to be reused from the heap.
CPU_BLOCK_POSITIONS = 1 << 17
# ... in at most this many blocks.
CPU_MAX_GROUP_BLOCKS = 4


def flatten(probs: Tensor) -> Tensor:
    """(N, K, *spatial) → (N, K, L) (a view when possible). Explicit sizes, so that an empty
    batch reshapes too."""
    n, k = probs.shape[:2]
    return probs.reshape(n, k, math.prod(probs.shape[2:]))


def position_blocks(flat: Tensor, budget: int | None = None) -> list[tuple[slice, slice]]:
    """(row, column) slices cutting an (n, K, L) tensor into blocks of about ``budget``
    elements (default ``CPU_BLOCK_ELEMENTS``, read at call time).

    A single block for a small tensor. Blocks are of memory, not of samples: spatial
    columns for dense input (L > 1), rows of samples for classification, at most
    ``CPU_MAX_BLOCKS`` of them.
    """
    budget = CPU_BLOCK_ELEMENTS if budget is None else budget
    n, _, length = flat.shape
    if flat.numel() <= budget:
        return [(slice(None), slice(None))]
    wanted = min(-(-flat.numel() // budget), CPU_MAX_BLOCKS)
    if length > 1:
        step = -(-length // min(wanted, length))
        return [(slice(None), slice(i, i + step)) for i in range(0, length, step)]
    step = -(-n // min(wanted, n))
    return [(slice(i, i + step), slice(None)) for i in range(0, n, step)]


def group_blocks(groups: int, size: int) -> list[slice]:
    """Column slices over (G, n) group data: at most ``CPU_MAX_GROUP_BLOCKS`` blocks of about
    ``CPU_BLOCK_POSITIONS`` positions in all (their count depends on G·n only)."""
    if groups * size <= CPU_BLOCK_POSITIONS:
        return [slice(None)]
    wanted = min(-(-groups * size // CPU_BLOCK_POSITIONS), CPU_MAX_GROUP_BLOCKS, size)
    step = -(-size // wanted)
    return [slice(i, i + step) for i in range(0, size, step)]


class BlockScratch:
    """One block-sized buffer, allocated once per call and reused by every block."""

    def __init__(self, flat: Tensor, blocks: list[tuple[slice, slice]], dtype: torch.dtype):
        largest = max(flat[rows, :, cols].numel() for rows, cols in blocks)
        self.buffer = torch.empty(largest, dtype=dtype, device=flat.device)

    def like(self, source: Tensor) -> Tensor:
        """The buffer viewed with the shape of ``source`` (uninitialised)."""
        return self.buffer[: source.numel()].view(source.shape)
