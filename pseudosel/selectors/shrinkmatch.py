"""ShrinkMatch as a module: the certain set, and the shrunk class space weighted by the
running share of certain positions. Maths: functional.shrinkmatch."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pseudosel import functional as F
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup, all_reduce_sum
from pseudosel.functional.shrinkmatch import ShrunkClasses
from pseudosel.selection import Selection
from pseudosel.selectors._base import Selector, check_momentum, check_positive_int
from pseudosel.validation import check_real

__all__ = ["ShrinkMatchSelector"]


class ShrinkMatchSelector(Selector):
    r"""ShrinkMatch (Yang et al., ICCV 2023): certain pseudo-labels (confidence ≥ τ) as the
    Selection, FixMatch's set; for the uncertain ones :meth:`shrink` gives the shrunk class
    space (:func:`~pseudosel.functional.shrink_classes`), weighted by the running share of
    certain positions, for :func:`~pseudosel.shrunk_cross_entropy`.

    The running share r follows the published code: in training mode each call measures
    the batch's certain share s = #(valid, ĉ ≥ τ) / #valid and sets r ← s on the first
    call, then r ← m·r + (1 − m)·s. :meth:`shrink` multiplies the weights by the current r,
    so call the module first, then :meth:`shrink` (the published order: the loss uses the
    share updated with its own batch). Before any update r is 0 (no shrink loss).

    The published CIFAR and ImageNet code restarts r at every epoch (``train()`` sets it to
    None, so the first batch of each epoch sets it again); its STL-10/SVHN code never
    restarts it. Here r runs on by default; call :meth:`reset_ratio` at the start of each
    epoch — or pass ``reset_every`` = steps per epoch — to restart it as CIFAR/ImageNet do.

    Shared options: :mod:`pseudosel.selectors._base`.

    Args:
        tau: the confidence threshold τ in [0, 1]. Default 0.95 (the paper; ImageNet 0.7).
        momentum: m, the weight of the OLD value in the EMA of the certain share, in
            [0, 1]. Default 0.999 (the published code).
        reset_every: None (default: r runs on), or restart r every ``reset_every`` training
            updates counted since construction or :meth:`reset_ratio` (the published
            CIFAR/ImageNet code: the iterations of an epoch, 1024 on CIFAR).
        process_group: process group over which the certain share is summed (default: the
            default group, when torch.distributed is initialised), so every rank holds the
            same r and two ranks equal one process on the concatenated batch. (The
            published code keeps one r per rank, from its own batch.)

    Shape:
        probs (N, K) or (N, K, \*spatial); valid and every Selection field (N, \*spatial);
        :meth:`shrink`'s ``classes`` (N, K, \*spatial).

    Buffers:
        certain_ratio: (1,) float64, r (0 before the first update).
        num_updates: () long, training updates since construction or :meth:`reset_ratio`;
            the next update restarts r when it is 0 (or a multiple of ``reset_every``).

    Example:
        >>> import torch
        >>> from pseudosel import ShrinkMatchSelector
        >>> selector = ShrinkMatchSelector(tau=0.95)
        >>> probs = torch.tensor([[0.97, 0.02, 0.01, 0.0], [0.60, 0.37, 0.02, 0.01]])
        >>> selector(probs).mask  # certain: FixMatch's loss
        tensor([ True, False])
        >>> selector.certain_ratio  # the first batch's share
        tensor([0.5000], dtype=torch.float64)
        >>> shrunk = selector.shrink(probs)  # uncertain: the shrunk space
        >>> shrunk.classes[1], shrunk.weight  # weight 0.60 · 0.5
        (tensor([ True, False,  True,  True]), tensor([0.0000, 0.3000]))
    """

    shown = ("tau", "momentum", "reset_every")

    def __init__(
        self,
        tau: float = 0.95,
        momentum: float = 0.999,
        *,
        reset_every: int | None = None,
        process_group: ProcessGroup | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.tau = check_real("tau", tau, low=0.0, high=1.0)
        self.momentum = check_momentum(momentum)
        self.reset_every = (
            None if reset_every is None else check_positive_int("reset_every", reset_every)
        )
        self.process_group = process_group
        # DDP: equal on every rank (the batch's counts are summed over ranks before the EMA).
        # float64 as the published Python float; shape (1,), not (): torch.compile (inductor,
        # CPU, torch 2.13) drops in-place writes to a 0-dim float64 buffer
        self.register_buffer("certain_ratio", torch.zeros(1, dtype=torch.float64))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @no_grad
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """The certain pseudo-labels (:func:`~pseudosel.functional.shrinkmatch`); in
        training mode the certain share enters the running ratio first."""
        probs, valid, _ = self.prepare(probs, valid)
        selection = F.shrinkmatch(probs, self.tau, valid=valid, validate=False)
        if self.training:
            self._advance(selection.mask, valid)
        return self.finish(selection)

    @no_grad
    def update(self, probs: Tensor, valid: Tensor | None = None) -> None:
        """Advance the running certain share with a batch, without selecting."""
        probs, valid, _ = self.prepare(probs, valid)
        self._advance(F.shrinkmatch(probs, self.tau, valid=valid, validate=False).mask, valid)

    @no_grad
    def shrink(self, probs: Tensor, valid: Tensor | None = None) -> ShrunkClasses:
        """The shrunk class space of ``probs`` with weights times the current
        :attr:`certain_ratio` (:func:`~pseudosel.functional.shrink_classes`); reads the
        state, never changes it."""
        return F.shrink_classes(
            probs,
            self.tau,
            self.certain_ratio[0],
            valid=valid,
            validate=self.validate,
            activation=self.activation,
            multilabel=self.multilabel,
        )

    def reset_ratio(self) -> None:
        """Restart the running certain share: the next training update sets it to its
        batch's share (the published CIFAR/ImageNet code does so at each epoch's start)."""
        self.num_updates.zero_()

    def _advance(self, certain: Tensor, valid: Tensor) -> None:
        counts = torch.stack([certain.sum(), valid.sum()]).to(torch.float64)
        all_reduce_sum(counts, self.process_group)
        share = (counts[0] / counts[1].clamp_min(1)).unsqueeze(0)
        if self.reset_every is None:
            restart = self.num_updates == 0
        else:
            restart = self.num_updates % self.reset_every == 0
        moved = self.momentum * self.certain_ratio + (1.0 - self.momentum) * share
        # a batch with no valid position (on every rank) leaves the state as it is
        seen = counts[1] > 0
        self.certain_ratio.copy_(
            torch.where(seen, torch.where(restart, share, moved), self.certain_ratio)
        )
        self.num_updates.add_(seen.to(torch.long))
