"""Scenarios for the 2-process gloo test: every selector over a few global batches.

Every rank runs the scenario on its shard (an equal slice along dim 0) of each global batch;
the test compares the ranks with each other and with one process fed the whole batches.

The scenarios come from the selector registry (:func:`registry_scenarios`): every registered
selector, with each option set of its declaration (``spec.examples``), on each layout it
takes — a stateful one built with ``spec.build`` and stepped with ``spec.step`` (the sample
positions ``index`` and the labelled batch ``probs_labeled`` as ``spec.needs`` asks), a
stateless one called through ``spec.function`` (and its module, if it has one). A selector
added to the registry joins the test without an edit here. Not run, with the reason:

- a selector whose statistics are not all-reduced (``spec.process_group`` False) selects each
  rank's batch on its own, so it equals one process only where each sample is its own group:
  it runs on the dense layout (one image, one group) and not on the classification layout,
  where a whole batch can be one group (CSL);
- selectors that need optional packages (``spec.requires``: cvxpy): slow, and the registry
  does not all-reduce them (tests/test_convex.py tests them).

:data:`EXTRA` holds the scenarios a declaration does not describe, built from classes:
held-out data (precision target with ``update_heldout`` and ``calibrate``), Adsh driven per
epoch, FlexMatch with repeated sample positions, and distribution alignment (a transform).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

import pseudosel
from helpers.probability_maps import classifier_outputs, smooth_maps
from helpers.selector_zoo import SteppedModule, declared_options
from pseudosel.registry import SelectorSpec, available_selectors, selector_spec

STEPS = 5
WORLD = 2
K = 5
NUM_UNLABELED = 20

Step = tuple[tuple, dict]


def _cls(t, n=16, k=K):
    return classifier_outputs(n, k, sharpness=1.0 + t, seed=t, dtype=torch.float64)


def _dense(t):
    probs = smooth_maps(4, K, 8, 8, sharpness=2.0 + t, seed=t, dtype=torch.float64)
    valid = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(t)) > 0.2
    return probs, valid


def _index(t) -> Tensor:
    """16 distinct positions in the unlabelled set (a sample is in one rank's shard only:
    records merged across ranks by a maximum, as Adsh's are, cannot order two writes)."""
    return torch.randperm(NUM_UNLABELED, generator=torch.Generator().manual_seed(t))[:16]


class _Function(nn.Module):
    """A stateless selector's function as a (stateless) module."""

    def __init__(self, spec: SelectorSpec, options: dict[str, Any]):
        super().__init__()
        self.spec, self.options = spec, options

    def forward(self, probs, valid=None, **inputs):
        return self.spec.function(probs, valid=valid, **self.options, **inputs)


def _stepped(spec: SelectorSpec, options: dict[str, Any]) -> nn.Module:
    """A registered module in float64, stepped the way its declaration says."""
    return SteppedModule(spec, K, options).double()


def _steps(spec: SelectorSpec, dense: bool, per_sample: bool) -> list[Step]:
    steps = []
    for t in range(STEPS):
        if dense:
            probs, valid = _dense(t)
            kwargs: dict[str, Any] = {"valid": valid}
        else:
            probs, kwargs = _cls(t), {}
        if per_sample:
            kwargs["index"] = _index(t)
        if "labeled" in spec.needs:
            kwargs["probs_labeled"] = _cls(50 + t, n=8)
        steps.append(((probs,), kwargs))
    return steps


def _layouts(spec: SelectorSpec, per_sample: bool) -> list[str]:
    layouts = []
    if spec.dense and not per_sample:
        layouts.append("dense")
    if spec.classification and (spec.stateful or spec.process_group):
        layouts.append("classification")  # module docstring: a local group otherwise
    return layouts


def excluded(spec: SelectorSpec) -> str | None:
    """Why ``spec`` has no scenario (module docstring), or None."""
    if spec.requires:
        return f"needs {', '.join(spec.requires)}: slow, not all-reduced (test_convex.py)"
    return None


def registry_scenarios() -> dict[str, tuple[Callable[[], nn.Module], list[Step]]]:
    """Every registered selector × option set × layout (module docstring)."""
    found = {}
    modules_seen: set[type] = set()
    for name in available_selectors():
        spec = selector_spec(name)
        if excluded(spec):
            continue
        for example, options in declared_options(spec, NUM_UNLABELED):
            per_sample = options["num_unlabeled"] is not None
            if spec.stateful:
                made = [("", functools.partial(_stepped, spec, options))]
            else:
                options.pop("num_unlabeled")
                made = [("", functools.partial(_Function, spec, options))]
                if spec.module is not None and spec.module not in modules_seen:
                    modules_seen.add(spec.module)
                    made.append(("module/", functools.partial(_stepped, spec, options)))
            for layout in _layouts(spec, per_sample):
                steps = _steps(spec, layout == "dense", per_sample)
                for kind, make in made:
                    found[f"{name}/{kind}{example}/{layout}"] = (make, steps)
    return found


# ------------------------------------------------------------------ built from classes


class _AdshEpochs(nn.Module):
    """Adsh driven per step as a loop drives it per epoch: select, record, recompute and
    forget the records (the registry's step keeps them: ``calibrate(reset=False)``)."""

    def __init__(self):
        super().__init__()
        self.adsh = pseudosel.AdshSelector(K, NUM_UNLABELED, tau_1=0.8).double()

    def forward(self, probs, index):
        selection = self.adsh(probs)
        self.adsh.update(probs, index)
        self.adsh.calibrate()
        return selection


class _PrecisionHeldout(nn.Module):
    """PrecisionTargetSelector: select on the unlabelled batch, then push the held-out batch
    (all-gathered across ranks) into its window and calibrate; the window wraps."""

    def __init__(self, per_class=False):
        super().__init__()
        self.selector = pseudosel.PrecisionTargetSelector(
            K, epsilon=0.3, delta=0.2, window=300, candidates=100, per_class=per_class,
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


def extra_scenarios() -> dict[str, tuple[Callable[[], nn.Module], list[Step]]]:
    """The scenarios a declaration does not describe (module docstring)."""
    dense = [_dense(t) for t in range(STEPS)]
    dense_steps = [((p,), {"valid": v}) for p, v in dense]
    heldout = [((_cls(t), p, _heldout_labels(p, t), v), {}) for t, (p, v) in enumerate(dense)]
    labeled = [((_cls(t), _cls(70 + t, n=8)), {}) for t in range(STEPS)]
    repeated = [
        torch.randint(0, NUM_UNLABELED, (16,), generator=torch.Generator().manual_seed(t))
        for t in range(STEPS)
    ]
    return {
        "FlexMatchSelector/repeated-index": (
            lambda: pseudosel.FlexMatchSelector(K, NUM_UNLABELED, tau=0.7).double(),
            [((_cls(t),), {"index": repeated[t]}) for t in range(STEPS)],
        ),
        "AdshSelector/epochs": (
            _AdshEpochs,
            [((_cls(t),), {"index": _index(t)}) for t in range(STEPS)],
        ),
        "PrecisionTargetSelector/heldout": (_PrecisionHeldout, heldout),
        "PrecisionTargetSelector/heldout-per-class": (
            lambda: _PrecisionHeldout(per_class=True),
            heldout,
        ),
        "DistributionAlignmentQueue/target=model": (
            lambda: pseudosel.DistributionAlignmentQueue(
                K, queue_length=3, target="model"
            ).double(),
            labeled,
        ),
        "DistributionAlignmentQueue/dense": (
            lambda: pseudosel.DistributionAlignmentQueue(K, queue_length=3).double(),
            dense_steps,
        ),
        "DistributionAlignment/target=model": (
            lambda: pseudosel.DistributionAlignment(K, target="model").double(),
            labeled,
        ),
    }


def scenarios() -> dict[str, tuple[Callable[[], nn.Module], list[Step]]]:
    """name → (factory, [(args, kwargs) per step]) with global (unsharded) batches."""
    return {**registry_scenarios(), **extra_scenarios()}


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

    stats = SelectionStats(num_classes=K)
    for t in range(STEPS):
        probs, valid = _dense(t)
        target = smooth_maps(4, K, 8, 8, sharpness=1.0, seed=100 + t).argmax(1)
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
