"""S4MC's neighbour refinement and percentile threshold, with the published schedule of the
kept share over training; step count in a buffer. Maths: functional.s4mc."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from pseudosel import functional as F
from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup
from pseudosel.functional.s4mc import S4MC_BETA, S4MC_INDICATORS, check_s4mc_options
from pseudosel.selection import Selection
from pseudosel.selectors._base import Selector, check_positive_int
from pseudosel.validation import check_choice, check_real

__all__ = ["S4MCSelector"]


class S4MCSelector(Selector):
    """S4MC (Kimhi et al., TMLR 2024): neighbour-refined margins against a percentile of the
    teacher's margins, the kept share growing from ``drop_percent`` to 100% over training.

    At step t (counted by training-mode calls) the kept percentage is the published
    schedule (train_semi.py), with progress π_t = ⌊min(t, T)/s⌋·s / T:

        drop_percent_t = 100 − (100 − drop_percent)·(1 − π_t),

    and the step selects with :func:`~pseudosel.functional.s4mc` at drop_percent_t: the
    positions whose refined margin beats the (100 − drop_percent_t)-th percentile of the
    unrefined margins of all valid positions (of every rank).

    Options shared by every selector module (``validate``, ``activation``, ``multilabel``,
    ``weighting``): :mod:`pseudosel.selectors._base`. Dense input only (N, K, H, W).

    Args:
        total_steps: T, the step at which every position is kept (the published code's
            number of epochs, counted here in steps).
        drop_percent: the percentage kept at the start, in [0, 100] (the authors' name).
            Default 60 (published configuration).
        steps_per_epoch: s; the published code moves the schedule once per epoch: pass the
            epoch length (with T = epochs × s) to follow its staircase exactly. Default 1:
            every step.
        indicator: ``"margin"`` (default), ``"confidence"`` or ``"entropy"``, as in
            :func:`~pseudosel.functional.s4mc`.
        connectivity: 4 (default) or 8 neighbours.
        num_neighbours: the best neighbours united per class. Default 1.
        beta: the neighbours' weight. Default e^(−1/2).
        agreement: optional per-class E_c (K values; the published code's joint estimate),
            kept as a non-persistent buffer (it moves with the module, it is not saved).
            Default None: the paper's p_c·q_c.
        process_group: process group of the global percentile (default: the default group,
            when torch.distributed is initialised).

    Buffers:
        ``step`` (long).

    Shape:
        probs (N, K, H, W); valid and every Selection field (N, H, W).

    Example:
        >>> import torch
        >>> from pseudosel import S4MCSelector
        >>> selector = S4MCSelector(total_steps=100)
        >>> probs = torch.randn(2, 5, 16, 16).softmax(1)
        >>> sel = selector(probs)
        >>> selector.kept_percent()  # 60% at step 0, then up to 100% at step 100
        tensor(60.4000, dtype=torch.float64)
    """

    shown = (
        "total_steps",
        "drop_percent",
        "steps_per_epoch",
        "indicator",
        "connectivity",
        "num_neighbours",
        "beta",
    )

    step: Tensor
    agreement: Tensor | None

    def __init__(
        self,
        total_steps: int,
        *,
        drop_percent: float = 60.0,
        steps_per_epoch: int = 1,
        indicator: str = "margin",
        connectivity: int = 4,
        num_neighbours: int = 1,
        beta: float = S4MC_BETA,
        agreement: Sequence[float] | Tensor | None = None,
        process_group: ProcessGroup | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.total_steps = check_positive_int("total_steps", total_steps)
        self.drop_percent = check_real("drop_percent", drop_percent, low=0.0, high=100.0)
        self.steps_per_epoch = check_positive_int("steps_per_epoch", steps_per_epoch)
        self.indicator = check_choice("indicator", indicator, S4MC_INDICATORS)
        self.connectivity, self.num_neighbours, self.beta = check_s4mc_options(
            connectivity, num_neighbours, beta
        )
        self.process_group = process_group
        self.register_buffer("step", torch.tensor(0))
        self.register_buffer("agreement", _agreement_buffer(agreement), persistent=False)

    def kept_percent(self) -> Tensor:
        """drop_percent_t at the current step (the percentage kept), a 0-dim float64 tensor."""
        epochs_done = self.step.clamp(max=self.total_steps) // self.steps_per_epoch
        progress = (epochs_done * self.steps_per_epoch).to(torch.float64) / self.total_steps
        return 100 - (100 - self.drop_percent) * (1 - progress)

    @no_grad
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """Select at drop_percent_t; in training mode then advance the step."""
        selection = F.s4mc(
            probs,
            self.kept_percent(),
            indicator=self.indicator,
            connectivity=self.connectivity,
            num_neighbours=self.num_neighbours,
            beta=self.beta,
            agreement=self.agreement,
            valid=valid,
            process_group=self.process_group,
            validate=self.validate,
            activation=self.activation,
            multilabel=self.multilabel,
        )
        if self.training:
            self.step.add_(1)
        return self.finish(selection)


def _agreement_buffer(agreement: Sequence[float] | Tensor | None) -> Tensor | None:
    """The per-class E_c as a float64 (K,) tensor (checked against K at the first call)."""
    if agreement is None:
        return None
    if isinstance(agreement, Tensor):
        if agreement.dim() != 1 or not agreement.is_floating_point():
            raise ValueError(
                f"agreement must be a 1-D float tensor (one value per class), got "
                f"{agreement.dtype} of shape {tuple(agreement.shape)}"
            )
        return agreement.detach().clone()
    if isinstance(agreement, Sequence) and not isinstance(agreement, str):
        values = [check_real("agreement", v, low=0.0, high=1.0) for v in agreement]
        return torch.tensor(values, dtype=torch.float64)
    raise TypeError(
        f"agreement must be None, a sequence of K numbers or a (K,) tensor, got "
        f"{type(agreement).__name__}"
    )
