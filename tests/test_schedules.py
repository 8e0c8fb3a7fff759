"""The warm-up and ramp schedule of the unlabelled-loss weight."""

from __future__ import annotations

import pytest

import pseudosel
from pseudosel.schedules import linear_rampup


def test_zero_during_warmup_then_linear_to_one():
    weights = [linear_rampup(step, 3, 4) for step in range(10)]
    assert weights == [0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]


def test_without_ramp_the_weight_jumps_after_the_warmup():
    assert [linear_rampup(step, 2) for step in range(4)] == [0.0, 0.0, 1.0, 1.0]
    assert linear_rampup(0, 0) == 1.0  # no warm-up at all


@pytest.mark.parametrize("warmup,rampup", [(-1, 0), (0, -2)])
def test_negative_lengths_are_rejected(warmup, rampup):
    with pytest.raises(ValueError, match=r"warmup_steps and rampup_steps: expected >= 0"):
        linear_rampup(0, warmup, rampup)


def test_exported_from_the_package():
    assert pseudosel.linear_rampup is linear_rampup
    assert "linear_rampup" in pseudosel.__all__
