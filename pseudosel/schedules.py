"""Schedules for the unlabelled-loss weight: supervised warm-up, then a ramp to full weight.

Selection needs a model that is better than chance. From a random initialisation every
selector, and most of all one without a fixed threshold (CSL), would confirm the model's
first guesses (on the digits data, CSL swapped into an untrained model kept 81% of the
pseudo-labels at step 0, and all labels had collapsed to one class by step 19). Train on the
labelled data only for a few epochs or steps, then start the unlabelled loss, at once or
ramped up.
"""

from __future__ import annotations

__all__ = ["linear_rampup"]


def linear_rampup(step: int, warmup_steps: int, rampup_steps: int = 0) -> float:
    """Weight of the unlabelled loss at ``step``: 0 during the warm-up, then linear to 1.

    ``0.0`` for ``step < warmup_steps`` (supervised only: skip the selection too, so a
    stateful selector only sees a trained model), then ``(step - warmup_steps + 1) /
    rampup_steps`` up to ``1.0``; with ``rampup_steps=0`` the weight jumps to 1 after the
    warm-up. A plain Python float computed on the host (no tensor, no sync): multiply the
    unlabelled loss by it, ``loss = loss_x + lambda_u * weight * loss_u``.

    Args:
        step: the current optimiser step (or epoch), counted from 0.
        warmup_steps: steps of supervised-only training (weight 0).
        rampup_steps: steps over which the weight then grows linearly to 1 (default 0).

    Returns:
        The weight, a float in [0, 1].

    Raises:
        ValueError: when ``warmup_steps`` or ``rampup_steps`` is negative.

    Example:
        >>> from pseudosel.schedules import linear_rampup
        >>> tuple(linear_rampup(step, warmup_steps=2, rampup_steps=4) for step in range(7))
        (0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0)
        >>> linear_rampup(5, warmup_steps=5)
        1.0
    """
    if warmup_steps < 0 or rampup_steps < 0:
        raise ValueError(
            "warmup_steps and rampup_steps: expected >= 0, "
            f"got warmup_steps={warmup_steps}, rampup_steps={rampup_steps}"
        )
    if step < warmup_steps:
        return 0.0
    if rampup_steps == 0:
        return 1.0
    return min(1.0, (step - warmup_steps + 1) / rampup_steps)
