"""Scenarios for the 2-process gloo test: each selector over a few global batches.

Every rank runs the scenario on its shard (an equal slice along dim 0) of each global batch;
the test compares the ranks with each other and with one process fed the whole batches.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from probability_maps import classifier_outputs, smooth_maps

import pseudosel

STEPS = 5
WORLD = 2


def _cls(t, n=16, k=5):
    return classifier_outputs(n, k, sharpness=1.0 + t, seed=t, dtype=torch.float64)


def _dense(t):
    probs = smooth_maps(4, 5, 8, 8, sharpness=2.0 + t, seed=t, dtype=torch.float64)
    valid = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(t)) > 0.2
    return probs, valid


class _AdshEpochs(torch.nn.Module):
    """Adsh driven per step as a loop drives it per epoch: select, record, recompute."""

    def __init__(self):
        super().__init__()
        self.adsh = pseudosel.AdshSelector(5, 20, tau_1=0.8).double()

    def forward(self, probs, index):
        selection = self.adsh(probs)
        self.adsh.update(probs, index)
        self.adsh.calibrate()
        return selection


class _PrecisionHeldout(torch.nn.Module):
    """PrecisionTargetSelector: select on the unlabelled batch, then push the held-out batch
    (all-gathered across ranks) into its window and calibrate; the window wraps."""

    def __init__(self, per_class=False):
        super().__init__()
        self.selector = pseudosel.PrecisionTargetSelector(
            5, epsilon=0.3, delta=0.2, window=300, candidates=100, per_class=per_class,
            min_count=5,
        ).double()  # fmt: skip

    def forward(self, probs, heldout, labels, valid):
        selection = self.selector(probs)
        self.selector.update_heldout(heldout, labels, valid)
        self.selector.calibrate()
        return selection


def _heldout_labels(probs, t):
    """The arg-max class, wrong at random positions (about 20%)."""
    predicted = probs.argmax(1)
    flip = torch.rand(predicted.shape, generator=torch.Generator().manual_seed(500 + t)) < 0.2
    return torch.where(flip, (predicted + 1) % probs.shape[1], predicted)


def scenarios():
    """name → (factory, [(args, kwargs) per step]) with global (unsharded) batches."""
    index = [
        torch.randint(0, 20, (16,), generator=torch.Generator().manual_seed(t))
        for t in range(STEPS)
    ]
    dense = [_dense(t) for t in range(STEPS)]
    dense_steps = [((p,), {"valid": v}) for p, v in dense]
    return {
        "flexmatch-per-sample": (
            lambda: pseudosel.FlexMatchSelector(5, 20, tau=0.7).double(),
            [((_cls(t),), {"index": index[t]}) for t in range(STEPS)],
        ),
        "flexmatch-classwise": (
            lambda: pseudosel.FlexMatchSelector(5, tau=0.7).double(),
            dense_steps,
        ),
        "freematch": (lambda: pseudosel.FreeMatchSelector(5, momentum=0.9).double(), dense_steps),
        "freematch-quantile": (
            lambda: pseudosel.FreeMatchSelector(5, use_quantile=True).double(),
            dense_steps,
        ),
        "softmatch": (lambda: pseudosel.SoftMatchSelector(5, momentum=0.9).double(), dense_steps),
        "softmatch-per-class": (
            lambda: pseudosel.SoftMatchSelector(5, momentum=0.9, per_class=True).double(),
            dense_steps,
        ),
        "adamatch": (
            lambda: pseudosel.AdaMatchSelector(0.9),
            [((_cls(t), _cls(50 + t, n=8)), {}) for t in range(STEPS)],
        ),
        "adsh": (
            _AdshEpochs,
            [
                (
                    (_cls(t),),
                    {"index": torch.randperm(20, generator=torch.Generator().manual_seed(t))[:16]},
                )
                for t in range(STEPS)
            ],
        ),
        "corrmatch": (
            lambda: pseudosel.CorrMatchSelector(5, momentum=0.9).double(),
            dense_steps,
        ),
        "corrmatch-cls": (
            lambda: pseudosel.CorrMatchSelector(5, momentum=0.9).double(),
            [((_cls(t),), {}) for t in range(STEPS)],
        ),
        "precision-target": (
            _PrecisionHeldout,
            [((_cls(t), p, _heldout_labels(p, t), v), {}) for t, (p, v) in enumerate(dense)],
        ),
        "precision-target-per-class": (
            lambda: _PrecisionHeldout(per_class=True),
            [((_cls(t), p, _heldout_labels(p, t), v), {}) for t, (p, v) in enumerate(dense)],
        ),
        "u2pl": (lambda: pseudosel.EntropySplitSelector(3).double(), dense_steps),
        "dash": (lambda: pseudosel.DashSelector(1.0, update_every=2).double(), dense_steps),
        "alignment-queue": (
            lambda: pseudosel.DistributionAlignmentQueue(
                5, queue_length=3, target="model"
            ).double(),
            [((_cls(t), _cls(70 + t, n=8)), {}) for t in range(STEPS)],
        ),
        "alignment-queue-dense": (
            lambda: pseudosel.DistributionAlignmentQueue(5, queue_length=3).double(),
            dense_steps,
        ),
        "alignment": (
            lambda: pseudosel.DistributionAlignment(5, target="model").double(),
            [((_cls(t), _cls(70 + t, n=8)), {}) for t in range(STEPS)],
        ),
    }


def shard(value, rank, world):
    if isinstance(value, torch.Tensor):
        return value.chunk(world, dim=0)[rank]
    if isinstance(value, tuple):
        return tuple(shard(v, rank, world) for v in value)
    return {k: shard(v, rank, world) for k, v in value.items()}


def run_scenarios(rank=0, world=1):
    results = {}
    for name, (make, steps) in scenarios().items():
        module = make()
        outputs = []
        for args, kwargs in steps:
            out = module(*shard(args, rank, world), **shard(kwargs, rank, world))
            outputs.append(out if isinstance(out, torch.Tensor) else tuple(out))
        results[name] = {"state": module.state_dict(), "outputs": outputs}
    return results


def run_metrics(rank=0, world=1):
    """SelectionStats over every step's CSL selection of the dense batches (sharded)."""
    from pseudosel.metrics import SelectionStats

    stats = SelectionStats(num_classes=5)
    for t in range(STEPS):
        probs, valid = _dense(t)
        target = smooth_maps(4, 5, 8, 8, sharpness=1.0, seed=100 + t).argmax(1)
        target[:, 0] = 255
        probs, valid, target = (shard(x, rank, world) for x in (probs, valid, target))
        stats.update(pseudosel.select_reliable(probs, valid=valid), target)
    return stats.compute()


def worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = run_scenarios(rank, world)
        results["metrics"] = run_metrics(rank, world)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
