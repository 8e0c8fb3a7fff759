"""Two gloo ranks driving a ClassPriorSelector with a learned prior: each rank passes its
shard of the labelled labels and of every unlabelled batch (tests/selectors/
test_class_prior_module.py compares with one process on the whole data)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

import pseudosel
from helpers.probability_maps import smooth_maps

K = 5


def labelled_labels() -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return torch.multinomial(torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05]), 200, True, generator=gen)


def batch(t: int) -> tuple[torch.Tensor, torch.Tensor]:
    probs = smooth_maps(4, K, 6, 5, sharpness=3.0, seed=t, dtype=torch.float64)
    valid = torch.rand(4, 6, 5, generator=torch.Generator().manual_seed(100 + t)) < 0.8
    return probs, valid


def run(rank: int = 0, world: int = 1) -> dict:
    """Three steps; the labelled labels and each batch split into ``world`` equal shards."""
    selector = pseudosel.ClassPriorSelector(K, kept_share=0.3, momentum=0.5)
    selector.update_labeled(labelled_labels().chunk(world)[rank])
    masks = []
    for t in range(3):
        probs, valid = batch(t)
        masks.append(selector(probs.chunk(world)[rank], valid.chunk(world)[rank]).mask)
    return {"state": selector.state_dict(), "masks": masks}


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save(run(rank, world), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
