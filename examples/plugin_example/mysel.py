"""An example pseudosel plug-in: two selectors registered under their own names.

- ``mine`` (stateless): keep a pseudo-label when the top class beats the runner-up by at
  least ``margin`` (the top-2 margin, a classic confidence score).
- ``mine_ema`` (stateful): keep a pseudo-label when its confidence reaches the running mean
  of the batches' mean confidence, an EMA kept in a buffer.

Use it with ``pseudosel.select_reliable(probs, "mine")``, ``pseudosel compare preds.npz
--plugin mysel --selectors mine threshold csl`` (with this folder on PYTHONPATH) or install
this folder (its pyproject.toml declares the ``pseudosel.selectors`` entry point). The
walkthrough is docs/plugins.md.
"""

from __future__ import annotations

import torch
from torch import Tensor

import pseudosel
from pseudosel.registry import BenchCase


@pseudosel.register_selector(
    "mine",
    value_option="margin",  # `pseudosel compare --selectors mine:0.3` sets margin=0.3
    bench=(BenchCase("mine"),),  # one `pseudosel bench` row, default options
    summary="top-2 margin: keep a pseudo-label when p(top) - p(second) >= margin",
    source="example plug-in (examples/plugin_example/mysel.py)",
)
def top2_margin(probs: Tensor, *, valid: Tensor, margin: float = 0.5) -> pseudosel.Selection:
    """mask = p(top) - p(second) >= margin.

    Args:
        probs: (N, K, *spatial) class probabilities, checked and detached by pseudosel.
        valid: bool (N, *spatial), False at ignored positions.
        margin: the smallest gap between the two most likely classes, in [0, 1].
    """
    if not 0.0 <= margin <= 1.0:
        raise ValueError(f"margin must be in [0, 1], got {margin!r}")
    top2, labels = probs.topk(2, dim=1)
    gap = top2[:, 0] - top2[:, 1]
    mask = valid & (gap >= margin)
    return pseudosel.Selection(
        labels=labels[:, 0],
        weight=mask.to(gap.dtype),
        mask=mask,
        score=gap,
        valid=valid,
    )


class RunningMeanSelector(pseudosel.Selector):
    """mask = max p >= m_t, with m_t an EMA of the batches' mean max confidence.

    Args:
        num_classes: K >= 2.
        momentum: m_t = momentum * m_(t-1) + (1 - momentum) * batch mean (the weight of the
            OLD value). Default 0.99.
        validate, activation, weighting: pseudosel's shared module options.
    Buffers:
        mean (): m_t, 1/K at start.
    """

    def __init__(self, num_classes: int, *, momentum: float = 0.99, **shared) -> None:
        super().__init__(num_classes=num_classes, **shared)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        self.register_buffer("mean", torch.tensor(1.0 / num_classes))

    @torch.no_grad()
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> pseudosel.Selection:
        """Training: fold the batch's mean confidence into m_t, then select. Eval: select."""
        probs, valid, _ = self.prepare(probs, valid)  # pseudosel's front door
        confidence, labels = probs.max(1)
        if self.training:
            batch = (confidence * valid).sum() / valid.sum().clamp_min(1)
            self.mean.mul_(self.momentum).add_((1.0 - self.momentum) * batch)
        mask = valid & (confidence >= self.mean)
        selection = pseudosel.Selection(labels, mask.to(confidence.dtype), mask, confidence, valid)
        return self.finish(selection)  # applies weighting="hard" when asked

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, momentum={self.momentum}"


pseudosel.register_selector(
    "mine_ema",
    RunningMeanSelector,
    bench=(BenchCase("mine_ema step"),),
    summary="keep a pseudo-label when its confidence reaches the EMA of mean confidence",
    source="example plug-in (examples/plugin_example/mysel.py)",
)
