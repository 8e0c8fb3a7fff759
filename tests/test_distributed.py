"""DDP: 2 gloo processes hold identical state, equal to one process on the whole batches.

Every registered selector runs (helpers/ddp_scenarios.py says which layouts, and why a
selector may have none).
"""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from helpers.ddp_scenarios import (
    WORLD,
    excluded,
    registry_scenarios,
    run_metrics,
    run_scenarios,
    scenarios,
    worker,
)

import pseudosel
from pseudosel.registry import selector_spec

pytestmark = pytest.mark.slow

# scenarios that fail the comparison with one process, and why (reported; strict: a fix
# makes the test fail until the mark goes)
ONE_PROCESS_CASES = scenarios()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(WORLD, str(root / "init"), str(root)), nprocs=WORLD, join=True)
    return [torch.load(root / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single():
    return run_scenarios()


def as_fields(output):
    return (output,) if isinstance(output, torch.Tensor) else output


@pytest.mark.parametrize("name", list(scenarios()))
def test_state_is_identical_on_every_rank(ranks, name):
    states = [r[name]["state"] for r in ranks]
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key


@pytest.mark.parametrize("name", ONE_PROCESS_CASES)
def test_ranks_equal_one_process_on_the_concatenated_batches(ranks, single, name):
    for key, value in single[name]["state"].items():
        got = ranks[0][name]["state"][key]
        if value.is_floating_point():
            torch.testing.assert_close(got, value, rtol=1e-12, atol=1e-15, msg=key)
        else:
            assert torch.equal(got, value), key
    for step, expected in enumerate(single[name]["outputs"]):
        parts = [as_fields(r[name]["outputs"][step]) for r in ranks]
        for field, whole in enumerate(as_fields(expected)):
            joined = torch.cat([p[field] for p in parts])
            if whole.is_floating_point():
                torch.testing.assert_close(joined, whole, rtol=1e-10, atol=1e-12)
            else:
                assert torch.equal(joined, whole), f"step {step} field {field}"


def test_selection_stats_compute_equals_one_process(ranks):
    single = run_metrics()
    for rank in ranks:
        assert set(rank["metrics"]) == set(single)
        for key, value in single.items():
            torch.testing.assert_close(rank["metrics"][key], value, msg=key)


def test_every_registered_selector_has_a_scenario():
    """The scenarios come from the registry: only a stated reason leaves a selector out."""
    covered = {name.split("/")[0] for name in registry_scenarios()}
    for name in pseudosel.available_selectors():
        assert (name in covered) != bool(excluded(selector_spec(name))), name
