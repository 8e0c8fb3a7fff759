"""Selectors as ``nn.Module``s: hold the options and, for adaptive ones, their state in
registered buffers, and call :mod:`pseudosel.functional`.

Stateful selectors follow BatchNorm's convention: in training mode ``forward`` advances the
statistics and selects, in the order the published method uses; in eval mode it selects
with frozen state. ``update`` is public for users who drive the two steps themselves.
State round-trips through ``state_dict`` exactly."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from pseudosel import functional as F
from pseudosel.features import confidence_and_labels
from pseudosel.functional.csl import check_csl_options
from pseudosel.functional.flexmatch import MAPPINGS
from pseudosel.selection import Selection
from pseudosel.validation import (
    check_choice,
    check_probability_values,
    check_probs,
    check_real,
    compute_dtype,
    resolve_valid,
)

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = [
    "AdaMatchSelector",
    "CSLSelector",
    "DashSelector",
    "DistributionAlignment",
    "EntropySplitSelector",
    "FlexMatchSelector",
    "FreeMatchSelector",
    "SoftMatchSelector",
    "ThresholdSelector",
]


class ThresholdSelector(nn.Module):
    """Fixed confidence threshold (FixMatch): mask = max p >= tau. Stateless.

    Args:
        tau: threshold in [0, 1]. Default 0.95 (FixMatch, UniMatch).
        validate: check input values on every call (default True).

    Shape:
        probs (N, K) or (N, K, *spatial); valid (N, *spatial); every Selection field
        (N, *spatial).

    Example:
        >>> import torch
        >>> from pseudosel import ThresholdSelector
        >>> selector = ThresholdSelector(tau=0.9)
        >>> selector(torch.tensor([[0.95, 0.05]])).mask
        tensor([True])
    """

    def __init__(self, tau: float = 0.95, *, validate: bool = True) -> None:
        super().__init__()
        self.tau = check_real("tau", tau, low=0.0, high=1.0)
        self.validate = bool(validate)

    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """Select on ``probs``; see :func:`pseudosel.functional.threshold`."""
        return F.threshold(probs, self.tau, valid=valid, validate=self.validate)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


class CSLSelector(nn.Module):
    """CSL, the convex-separation selector (ICCV 2025): per-image boundary, soft weights.

    Stateless: every call splits each group (image, or batch for (N, K) input) afresh.
    Options and defaults are those of :func:`pseudosel.functional.csl`; they are kept in
    the ``options`` dict.

    Shape:
        probs (N, K) or (N, K, *spatial) with K >= 2; valid (N, *spatial); every Selection
        field (N, *spatial).

    Example:
        >>> import torch
        >>> from pseudosel import CSLSelector
        >>> selector = CSLSelector(alpha=8.0)
        >>> sel = selector(torch.randn(2, 4, 16, 16).softmax(1))
        >>> sel.weight.shape
        torch.Size([2, 16, 16])
    """

    def __init__(
        self,
        *,
        alpha: float = 2.0,
        group: str = "auto",
        cluster_rule: str = "confidence",
        residual: str = "theory",
        g_scale: float = 1.0,
        min_var: float = 0.0,
        eps: float = 1e-8,
        validate: bool = True,
        solver: str = "closed_form",
        boundary: str = "paper",
        max_points: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.options: dict[str, Any] = dict(
            alpha=alpha,
            group=group,
            cluster_rule=cluster_rule,
            residual=residual,
            g_scale=g_scale,
            min_var=min_var,
            eps=eps,
            solver=solver,
            boundary=boundary,
            max_points=max_points,
        )
        check_csl_options(**self.options)
        self.seed = seed
        self.validate = bool(validate)

    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """Select on ``probs``; see :func:`pseudosel.functional.csl`."""
        return F.csl(probs, valid=valid, validate=self.validate, seed=self.seed, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.options.items())


def _checked_inputs(
    probs: Tensor, valid: Tensor | None, validate: bool, num_classes: int | None = None
) -> Tensor:
    """Shape/dtype/value checks shared by the selector modules; returns the validity mask."""
    check_probs(probs)
    if num_classes is not None and probs.shape[1] != num_classes:
        raise ValueError(
            f"probs has {probs.shape[1]} classes at dim 1 (shape {tuple(probs.shape)}), but "
            f"the selector was built for num_classes={num_classes}"
        )
    valid = resolve_valid(probs, valid)
    if validate:
        check_probability_values(probs, valid)
    return valid


def _check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return num_classes


class FlexMatchSelector(nn.Module):
    """FlexMatch's curriculum thresholds T(k) = τ·M(β(k)), held in buffers.

    Two forms (see :mod:`pseudosel.functional.flexmatch`):

    - per-sample (``num_unlabeled`` given): the published curriculum; ``forward`` needs
      ``index``, the positions of the batch's samples in the unlabeled set, and (N, K) input;
    - class-wise (``num_unlabeled=None``): for dense input (or classification without
      indices), driven by cumulative counts of confident positions per class.

    In training mode ``forward`` selects with the current thresholds, then records the
    batch (as USB); in eval mode it only selects. Under torch.distributed all ranks apply
    every rank's writes, so they hold the same state.

    Args:
        num_classes: K.
        num_unlabeled: size of the unlabeled set (per-sample form), or None.
        tau: base threshold τ. Default 0.95.
        warmup: FlexMatch's threshold warm-up (β divided by max(max σ, unused)). Default True.
        mapping: ``"convex"`` (default), ``"linear"`` or ``"concave"``.
        process_group: for the collectives (default: the default group, if initialised).
        validate: check input values on every call (default True).

    Buffers:
        ``classwise_acc`` (K,) β; ``counts`` (K + 1,) long σ and the unused count;
        ``selected_label`` (num_unlabeled,) long, -1 = unused (per-sample form only).

    Example:
        >>> import torch
        >>> from pseudosel import FlexMatchSelector
        >>> selector = FlexMatchSelector(10, num_unlabeled=1000)
        >>> sel = selector(torch.randn(64, 10).softmax(1), index=torch.arange(64))
        >>> int(selector.counts.sum())
        1000
    """

    classwise_acc: Tensor
    counts: Tensor
    selected_label: Tensor

    def __init__(
        self,
        num_classes: int,
        num_unlabeled: int | None = None,
        *,
        tau: float = 0.95,
        warmup: bool = True,
        mapping: str = "convex",
        process_group: ProcessGroup | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = _check_num_classes(num_classes)
        if num_unlabeled is not None:
            if isinstance(num_unlabeled, bool) or not isinstance(num_unlabeled, int):
                raise TypeError(
                    f"num_unlabeled must be an int or None, got {type(num_unlabeled).__name__}"
                )
            if num_unlabeled < 1:
                raise ValueError(f"num_unlabeled must be >= 1, got {num_unlabeled}")
        self.num_unlabeled = num_unlabeled
        self.tau = check_real("tau", tau, low=0.0, high=1.0)
        self.warmup = bool(warmup)
        self.mapping = check_choice("mapping", mapping, MAPPINGS)
        self.process_group = process_group
        self.validate = bool(validate)
        self.register_buffer("classwise_acc", torch.zeros(num_classes))
        counts = torch.zeros(num_classes + 1, dtype=torch.long)
        if num_unlabeled is not None:
            counts[-1] = num_unlabeled
            self.register_buffer(
                "selected_label", torch.full((num_unlabeled,), -1, dtype=torch.long)
            )
        self.register_buffer("counts", counts)

    def thresholds(self) -> Tensor:
        """The current class thresholds T(k), (K,)."""
        return F.flexmatch_thresholds(self.classwise_acc, tau=self.tau, mapping=self.mapping)

    def _inputs(self, probs: Tensor, index: Tensor | None, valid: Tensor | None) -> Tensor:
        valid = _checked_inputs(probs, valid, self.validate, self.num_classes)
        if self.num_unlabeled is None:
            if index is not None:
                raise ValueError(
                    "index was given but this FlexMatchSelector is class-wise; build it with "
                    "num_unlabeled=<size of the unlabeled set> for the per-sample curriculum"
                )
            return valid
        if index is None:
            raise ValueError(
                "index (positions of the batch's samples in the unlabeled set, long (N,)) is "
                "required: this FlexMatchSelector was built with "
                f"num_unlabeled={self.num_unlabeled}"
            )
        if probs.dim() != 2:
            raise ValueError(
                "the per-sample FlexMatch takes (N, K) probs, got shape "
                f"{tuple(probs.shape)}; use num_unlabeled=None for dense input"
            )
        if not isinstance(index, Tensor) or index.dtype != torch.long:
            got = index.dtype if isinstance(index, Tensor) else type(index).__name__
            raise TypeError(f"index must be a torch.long tensor, got {got}")
        if tuple(index.shape) != (probs.shape[0],) or index.device != probs.device:
            raise ValueError(
                f"index must have shape ({probs.shape[0]},) on {probs.device}, got "
                f"{tuple(index.shape)} on {index.device}"
            )
        if self.validate:
            in_range = ((index >= 0) & (index < self.num_unlabeled)).all()
            if torch.compiler.is_compiling() or index.device.type != "cpu":
                torch._assert_async(in_range, "index out of range [0, num_unlabeled)")
            elif not bool(in_range):
                raise ValueError(
                    f"index must lie in [0, {self.num_unlabeled}) (num_unlabeled), got values "
                    f"from {int(index.min())} to {int(index.max())}"
                )
        return valid

    def forward(
        self, probs: Tensor, index: Tensor | None = None, valid: Tensor | None = None
    ) -> Selection:
        """Select with the current thresholds; in training mode then record the batch."""
        valid = self._inputs(probs, index, valid)
        selection = F.flexmatch_select(
            probs, self.classwise_acc, valid, tau=self.tau, mapping=self.mapping
        )
        if self.training:
            self._record(probs, selection.labels, index, valid)
        return selection

    @torch.no_grad()
    def update(
        self, probs: Tensor, index: Tensor | None = None, valid: Tensor | None = None
    ) -> None:
        """Record a batch (store writes or class counts) and recompute β, without selecting."""
        valid = self._inputs(probs, index, valid)
        self._record(probs, confidence_and_labels(probs)[1], index, valid)

    def _record(self, probs: Tensor, labels: Tensor, index: Tensor | None, valid: Tensor):
        confident = valid & (probs.amax(1).to(compute_dtype(probs.dtype)) >= self.tau)
        if index is None:
            F.flexmatch_record_classes(
                self.counts, labels, confident, valid, group=self.process_group, inplace=True
            )
        else:
            F.flexmatch_record_samples(
                self.selected_label,
                self.counts,
                labels,
                confident,
                index,
                group=self.process_group,
                inplace=True,
            )
        self.classwise_acc.copy_(
            F.flexmatch_classwise_acc(self.counts, self.classwise_acc, warmup=self.warmup)
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, num_unlabeled={self.num_unlabeled}, "
            f"tau={self.tau}, warmup={self.warmup}, mapping={self.mapping!r}"
        )


class _UpdateThenSelect(nn.Module):
    """Selectors whose statistics absorb the batch before selecting (FreeMatch, SoftMatch).

    Subclasses give ``state()`` (their buffers as a NamedTuple), ``_advance`` (the new state
    from a batch) and ``_select``.
    """

    num_classes: int
    validate: bool

    def state(self) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def _advance(self, probs: Tensor, valid: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def _select(self, probs: Tensor, valid: Tensor) -> Selection:
        raise NotImplementedError

    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """In training mode update the statistics, then select; in eval mode select."""
        valid = _checked_inputs(probs, valid, self.validate, self.num_classes)
        if self.training:
            self._update(probs, valid)
        return self._select(probs, valid)

    @torch.no_grad()
    def update(self, probs: Tensor, valid: Tensor | None = None) -> None:
        """Advance the statistics with a batch, without selecting."""
        self._update(probs, _checked_inputs(probs, valid, self.validate, self.num_classes))

    def _update(self, probs: Tensor, valid: Tensor) -> None:
        for buffer, value in zip(self.state(), self._advance(probs, valid), strict=True):
            buffer.copy_(value)


class FreeMatchSelector(_UpdateThenSelect):
    """FreeMatch's self-adaptive threshold τ_t · p̃_t(ŷ) / max p̃_t, held in buffers.

    In training mode ``forward`` first updates the statistics with the batch, then selects
    (USB's order); in eval mode it selects with frozen statistics.

    Args:
        num_classes: K.
        momentum: EMA momentum. Default 0.999.
        use_quantile: use the 0.8-quantile of max p instead of the mean for τ_t (off).
        clip_thresh: clip τ_t to [0, 0.95] (off).
        process_group: process group of the collectives (default: the default group, when
            torch.distributed is initialised).
        validate: check input values on every call (default True).

    Buffers:
        ``time_p`` (0-dim), ``p_model`` (K,), ``label_hist`` (K,); initially 1/K each.

    Example:
        >>> import torch
        >>> from pseudosel import FreeMatchSelector
        >>> selector = FreeMatchSelector(10)
        >>> sel = selector(torch.randn(64, 10).softmax(1))
        >>> float(selector.time_p) > 0.1
        True
    """

    time_p: Tensor
    p_model: Tensor
    label_hist: Tensor

    def __init__(
        self,
        num_classes: int,
        *,
        momentum: float = 0.999,
        use_quantile: bool = False,
        clip_thresh: bool = False,
        process_group: ProcessGroup | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = _check_num_classes(num_classes)
        self.momentum = check_real("momentum", momentum, low=0.0, high=1.0)
        self.use_quantile = bool(use_quantile)
        self.clip_thresh = bool(clip_thresh)
        self.process_group = process_group
        self.validate = bool(validate)
        state = F.freematch_init(num_classes)
        for name, value in zip(state._fields, state, strict=True):
            self.register_buffer(name, value)

    def state(self) -> F.FreeMatchState:
        """The current statistics as a :class:`~pseudosel.functional.FreeMatchState`."""
        return F.FreeMatchState(self.time_p, self.p_model, self.label_hist)

    def _advance(self, probs: Tensor, valid: Tensor) -> F.FreeMatchState:
        return F.freematch_update(
            self.state(),
            probs,
            valid,
            momentum=self.momentum,
            use_quantile=self.use_quantile,
            clip_thresh=self.clip_thresh,
            group=self.process_group,
        )

    def _select(self, probs: Tensor, valid: Tensor) -> Selection:
        return F.freematch_select(probs, self.state(), valid)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, momentum={self.momentum}, "
            f"use_quantile={self.use_quantile}, clip_thresh={self.clip_thresh}"
        )


class SoftMatchSelector(_UpdateThenSelect):
    """SoftMatch's truncated-Gaussian weights on the max confidence, EMA state in buffers.

    In training mode ``forward`` updates μ_t, σ²_t with the batch, then weighs (USB's
    order). Usually combined with :class:`DistributionAlignment` before it, as in USB.

    Args:
        num_classes: K.
        momentum: EMA momentum. Default 0.999.
        n_sigma: width factor n_σ (weights use σ²/n_σ²). Default 2.0.
        per_class: keep (K,) statistics, grouped by pseudo-label. Default False.
        process_group: process group of the collectives (default: the default group, when
            torch.distributed is initialised).
        validate: check input values on every call (default True).

    Buffers:
        ``mu``, ``var``: 0-dim (or (K,)); initially 1/K and 1.

    Example:
        >>> import torch
        >>> from pseudosel import SoftMatchSelector
        >>> sel = SoftMatchSelector(10)(torch.randn(64, 10).softmax(1))
        >>> bool((sel.weight > 0).all())
        True
    """

    mu: Tensor
    var: Tensor

    def __init__(
        self,
        num_classes: int,
        *,
        momentum: float = 0.999,
        n_sigma: float = 2.0,
        per_class: bool = False,
        process_group: ProcessGroup | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = _check_num_classes(num_classes)
        self.momentum = check_real("momentum", momentum, low=0.0, high=1.0)
        self.n_sigma = check_real("n_sigma", n_sigma, low=0.0, low_open=True)
        self.per_class = bool(per_class)
        self.process_group = process_group
        self.validate = bool(validate)
        state = F.softmatch_init(num_classes, per_class=self.per_class)
        self.register_buffer("mu", state.mu)
        self.register_buffer("var", state.var)

    def state(self) -> F.SoftMatchState:
        """The current statistics as a :class:`~pseudosel.functional.SoftMatchState`."""
        return F.SoftMatchState(self.mu, self.var)

    def _advance(self, probs: Tensor, valid: Tensor) -> F.SoftMatchState:
        return F.softmatch_update(
            self.state(),
            probs,
            valid,
            momentum=self.momentum,
            per_class=self.per_class,
            group=self.process_group,
        )

    def _select(self, probs: Tensor, valid: Tensor) -> Selection:
        return F.softmatch_select(probs, self.state(), valid, n_sigma=self.n_sigma)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, momentum={self.momentum}, "
            f"n_sigma={self.n_sigma}, per_class={self.per_class}"
        )


class AdaMatchSelector(nn.Module):
    """AdaMatch's relative threshold τ · mean labeled confidence. Stateless.

    ``forward(probs, probs_labeled, valid=None, valid_labeled=None)``; with
    :func:`~pseudosel.select_reliable`, pass ``probs_labeled=`` as an option.

    Example:
        >>> import torch
        >>> from pseudosel import AdaMatchSelector
        >>> labeled = torch.tensor([[0.9, 0.1], [0.7, 0.3]])
        >>> AdaMatchSelector()(torch.tensor([[0.78, 0.22]]), labeled).mask
        tensor([True])
    """

    def __init__(
        self, tau: float = 0.95, *, process_group: ProcessGroup | None = None, validate: bool = True
    ) -> None:
        super().__init__()
        self.tau = check_real("tau", tau, low=0.0, high=1.0)
        self.process_group = process_group
        self.validate = bool(validate)

    def forward(
        self,
        probs: Tensor,
        probs_labeled: Tensor,
        valid: Tensor | None = None,
        valid_labeled: Tensor | None = None,
    ) -> Selection:
        """Select on ``probs`` with a cutoff relative to ``probs_labeled``."""
        return F.adamatch(
            probs,
            probs_labeled,
            self.tau,
            valid=valid,
            valid_labeled=valid_labeled,
            group=self.process_group,
            validate=self.validate,
        )

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


class DashSelector(nn.Module):
    """Dash: keep positions with −log max p <= ρ_t; ρ decays every ``update_every`` steps.

    In training mode each ``forward`` is one step: ρ is updated when ``step`` is a multiple
    of ``update_every`` (also at step 0: ρ = C·ρ_init), then positions are selected, then
    ``step`` advances. ``use_hard_labels`` turns True once ρ reaches ρ_min.

    Args:
        rho_init: ρ_init, the mean labeled cross-entropy after warm-up (> 0). Can be reset
            later through the ``rho_init`` buffer.
        update_every: steps between ρ updates (Dash: 10 epochs' worth).
        gamma: decay γ > 1. Default 1.27.
        c: constant C. Default 1.0001.
        rho_min: floor ρ_min. Default 0.05.

    Buffers:
        ``rho_init``, ``rho``, ``step`` (long), ``update_count`` (long).

    Example:
        >>> import torch
        >>> from pseudosel import DashSelector
        >>> selector = DashSelector(1.0, update_every=100)
        >>> sel = selector(torch.tensor([[0.5, 0.5], [0.2, 0.8]]))
        >>> sel.mask, int(selector.step)
        (tensor([True, True]), 1)
    """

    rho_init: Tensor
    rho: Tensor
    step: Tensor
    update_count: Tensor

    def __init__(
        self,
        rho_init: float,
        *,
        update_every: int,
        gamma: float = 1.27,
        c: float = 1.0001,
        rho_min: float = 0.05,
        validate: bool = True,
    ) -> None:
        super().__init__()
        rho_init = check_real("rho_init", rho_init, low=0.0, low_open=True)
        if isinstance(update_every, bool) or not isinstance(update_every, int):
            raise TypeError(f"update_every must be an int, got {type(update_every).__name__}")
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        self.update_every = update_every
        self.gamma = check_real("gamma", gamma, low=0.0, low_open=True)
        self.c = check_real("c", c, low=0.0, low_open=True)
        self.rho_min = check_real("rho_min", rho_min, low=0.0)
        self.validate = bool(validate)
        init = torch.tensor(rho_init)
        self.register_buffer("rho_init", init)
        self.register_buffer("rho", self._rho_at(torch.tensor(0), init))
        self.register_buffer("step", torch.tensor(0))
        self.register_buffer("update_count", torch.tensor(0))

    def _rho_at(self, count: Tensor, rho_init: Tensor) -> Tensor:
        return F.dash_rho(count, rho_init, gamma=self.gamma, c=self.c, rho_min=self.rho_min)

    @property
    def use_hard_labels(self) -> Tensor:
        """0-dim bool tensor: ρ has reached ρ_min (Dash switches to hard labels)."""
        return self.rho <= self.rho_min

    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """One Dash step in training mode (update ρ if due, select, count); else select."""
        valid = _checked_inputs(probs, valid, self.validate)
        if self.training:
            due = self.step % self.update_every == 0
            self.rho.copy_(
                torch.where(due, self._rho_at(self.update_count, self.rho_init), self.rho)
            )
            self.update_count.add_(due.long())
            self.step.add_(1)
        return F.dash_select(probs, self.rho, valid)

    def extra_repr(self) -> str:
        return (
            f"update_every={self.update_every}, gamma={self.gamma}, c={self.c}, "
            f"rho_min={self.rho_min}"
        )


class EntropySplitSelector(nn.Module):
    """U2PL's reliable/unreliable split by entropy percentile, α_t annealed over training.

    α_t = α₀·(1 − min(t, T)/T) at step t (counted by training-mode calls); reliable = valid
    positions with entropy below the global (1 − α_t)-quantile.

    Args:
        total_steps: T, the step at which α reaches 0.
        alpha0: initial unreliable share α₀ in [0, 1]. Default 0.2 (U2PL).
        process_group: process group of the collectives (default: the default group, when
            torch.distributed is initialised).
        validate: check input values on every call (default True).

    Buffers:
        ``step`` (long).

    Example:
        >>> import torch
        >>> from pseudosel import EntropySplitSelector
        >>> sel = EntropySplitSelector(1000)(torch.randn(2, 5, 16, 16).softmax(1))
        >>> round(float(sel.ratio()), 2)
        0.8
    """

    step: Tensor

    def __init__(
        self,
        total_steps: int,
        *,
        alpha0: float = 0.2,
        process_group: ProcessGroup | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(total_steps, bool) or not isinstance(total_steps, int):
            raise TypeError(f"total_steps must be an int, got {type(total_steps).__name__}")
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps = total_steps
        self.alpha0 = check_real("alpha0", alpha0, low=0.0, high=1.0)
        self.process_group = process_group
        self.validate = bool(validate)
        self.register_buffer("step", torch.tensor(0))

    def unreliable_share(self) -> Tensor:
        """α_t at the current step, a 0-dim float64 tensor."""
        progress = self.step.clamp(max=self.total_steps).to(torch.float64) / self.total_steps
        return self.alpha0 * (1 - progress)

    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """Split with α_t; in training mode then advance the step."""
        valid = _checked_inputs(probs, valid, self.validate)
        selection = F.split_by_entropy(probs, valid, self.unreliable_share(), self.process_group)
        if self.training:
            self.step.add_(1)
        return selection

    def extra_repr(self) -> str:
        return f"total_steps={self.total_steps}, alpha0={self.alpha0}"


class DistributionAlignment(nn.Module):
    """Distribution alignment of probabilities (a transform, used before a selector).

    ``forward(probs, probs_labeled=None, valid=None, valid_labeled=None)`` returns aligned
    probabilities of the same shape. In training mode it first updates p_model (the EMA of
    the mean unlabeled prediction; the first batch sets it) and, with ``target="model"``,
    p_target from ``probs_labeled``.

    Args:
        num_classes: K.
        momentum: EMA momentum. Default 0.999.
        target: None (uniform, default), ``"model"`` (EMA of labeled predictions) or a (K,)
            probability vector.
        process_group: process group of the collectives (default: the default group, when
            torch.distributed is initialised).
        validate: check input values on every call (default True).

    Buffers:
        ``p_model`` (K,), ``p_target`` (K,), ``initialized`` (bool).

    Example:
        >>> import torch
        >>> from pseudosel import DistributionAlignment, SoftMatchSelector
        >>> align, select = DistributionAlignment(10), SoftMatchSelector(10)
        >>> sel = select(align(torch.randn(64, 10).softmax(1)))
    """

    p_model: Tensor
    p_target: Tensor
    initialized: Tensor

    def __init__(
        self,
        num_classes: int,
        *,
        momentum: float = 0.999,
        target: None | str | Tensor = None,
        process_group: ProcessGroup | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = _check_num_classes(num_classes)
        self.momentum = check_real("momentum", momentum, low=0.0, high=1.0)
        self.process_group = process_group
        self.validate = bool(validate)
        self.learn_target = isinstance(target, str)
        if isinstance(target, str):
            check_choice("target", target, ("model",))
            p_target = torch.full((num_classes,), 1.0 / num_classes)
        elif target is None:
            p_target = torch.full((num_classes,), 1.0 / num_classes)
        elif isinstance(target, Tensor) and tuple(target.shape) == (num_classes,):
            p_target = target.detach().to(torch.float32).clone()
        else:
            raise ValueError(
                f"target must be None, 'model' or a ({num_classes},) tensor, got {target!r}"
            )
        self.register_buffer("p_model", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("p_target", p_target)
        self.register_buffer("initialized", torch.tensor(False))

    def state(self) -> F.AlignmentState:
        """The current distributions as a :class:`~pseudosel.functional.AlignmentState`."""
        return F.AlignmentState(self.p_model, self.p_target, self.initialized)

    def forward(
        self,
        probs: Tensor,
        probs_labeled: Tensor | None = None,
        valid: Tensor | None = None,
        valid_labeled: Tensor | None = None,
    ) -> Tensor:
        """Aligned probabilities (N, K, *spatial); updates first in training mode."""
        valid = _checked_inputs(probs, valid, self.validate, self.num_classes)
        if self.training:
            if self.learn_target:
                if probs_labeled is None:
                    raise ValueError(
                        "probs_labeled is required in training mode with target='model'"
                    )
                valid_labeled = _checked_inputs(
                    probs_labeled, valid_labeled, self.validate, self.num_classes
                )
            new = F.alignment_update(
                self.state(),
                probs,
                valid,
                momentum=self.momentum,
                probs_labeled=probs_labeled if self.learn_target else None,
                valid_labeled=valid_labeled if self.learn_target else None,
                group=self.process_group,
            )
            for buffer, value in zip(self.state(), new, strict=True):
                buffer.copy_(value)
        return F.align(probs, self.state())

    def extra_repr(self) -> str:
        target = "model" if self.learn_target else "fixed"
        return f"num_classes={self.num_classes}, momentum={self.momentum}, target={target}"
