"""How good is a selection? Statistics of a Selection, and its quality against true labels.

Two forms, as in torchmetrics: :func:`selection_quality` for one batch, and
:class:`SelectionStats`, a Module that accumulates sums and counts over many batches
(``update``), reduces them across ranks and derives the numbers (``compute``), and starts
over (``reset``).

Definitions (over valid positions — ``selection.valid`` and, with a target, target not
equal to ``ignore_index``):

- ``ratio``: selected / valid positions — the one definition of the selection ratio used
  everywhere in pseudosel (:meth:`pseudosel.Selection.ratio`), also called coverage;
- ``mean_weight``: mean of ``selection.weight`` over valid positions;
- ``accepted`` and ``acceptance`` (per class, by pseudo-label): selected positions of
  class k, and their share of the valid positions pseudo-labelled k;
- with a target: ``precision`` (accuracy of the selected pseudo-labels), ``weighted_precision``
  (Σ w·correct / Σ w), ``recall`` (share of the correct pseudo-labels that are selected),
  ``accuracy`` (of all pseudo-labels) and ``auroc`` (how well ``selection.score`` ranks
  correct above incorrect pseudo-labels; 0.5 when either kind is absent).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from pseudosel._grad import no_grad
from pseudosel.distributed import ProcessGroup, all_reduce_sum
from pseudosel.selection import Selection
from pseudosel.validation import check_labels

__all__ = ["SelectionStats", "as_log_dict", "auroc", "selection_quality"]


def _positions(
    selection: Selection,
    target: Tensor | None,
    ignore_index: int,
    num_classes: int | None = None,
    validate: bool = False,
):
    """Validity of positions, and where the target is known (and correct), as bool; with
    ``validate``, known targets out of [0, num_classes) raise (:func:`check_labels`)."""
    if not isinstance(selection, Selection):
        raise TypeError(f"selection must be a pseudosel.Selection, got {type(selection).__name__}")
    valid = selection.valid
    if target is None:
        return valid, None, None
    if not isinstance(target, Tensor) or target.is_floating_point() or target.dtype == torch.bool:
        got = target.dtype if isinstance(target, Tensor) else type(target).__name__
        raise TypeError(f"target must be an integer tensor of true labels, got {got}")
    if target.shape != selection.labels.shape:
        raise ValueError(
            f"target must have the selection's shape {tuple(selection.labels.shape)}, "
            f"got {tuple(target.shape)}"
        )
    known = valid & (target != ignore_index)
    if validate:
        check_labels(target, num_classes, known, ignore_index=ignore_index)
    correct = known & (selection.labels == target.to(selection.labels.device))
    return valid, known, correct


def auroc(score: Tensor, positive: Tensor, include: Tensor) -> Tensor:
    """Exact AUROC of ``score`` for ``positive`` among ``include``d positions (ties count ½).

    The Mann–Whitney statistic with tie-averaged ranks, computed by sorting on the device
    (no host synchronisation): excluded positions get +inf so they rank last and out of the
    way. Returns 0.5 when there are no positives or no negatives.

    Example:
        >>> import torch
        >>> from pseudosel.metrics import auroc
        >>> score = torch.tensor([0.9, 0.8, 0.3, 0.1])
        >>> auroc(score, torch.tensor([True, False, True, False]), torch.ones(4, dtype=torch.bool))
        tensor(0.7500, dtype=torch.float64)
    """
    score = score.flatten().to(torch.float64)
    positive = positive.flatten() & include.flatten()
    include = include.flatten()
    keyed = torch.where(include, score, math.inf)
    ordered = keyed.sort().values
    low = torch.searchsorted(ordered, keyed, right=False)
    high = torch.searchsorted(ordered, keyed, right=True)
    rank = (low + high + 1).to(torch.float64) / 2  # 1-based, ties averaged
    n_pos = positive.sum().to(torch.float64)
    n_neg = (include & ~positive).sum().to(torch.float64)
    u = (rank * positive).sum() - n_pos * (n_pos + 1) / 2
    defined = (n_pos > 0) & (n_neg > 0)
    return torch.where(defined, u / (n_pos * n_neg).clamp_min(1), 0.5)


@no_grad
def selection_quality(
    selection: Selection,
    target: Tensor | None = None,
    *,
    num_classes: int | None = None,
    ignore_index: int = 255,
    validate: bool = True,
) -> dict[str, Tensor]:
    """Statistics of one batch's selection, and its quality when the true labels are known.

    Args:
        selection: a :class:`~pseudosel.Selection`, fields (N, *spatial).
        target: optional true labels (N, *spatial), ``ignore_index`` where unknown.
        num_classes: K, for the per-class ``accepted`` / ``acceptance`` (K,) tensors and
            the range check of ``target``.
        ignore_index: the unknown-label value of ``target``. Default 255.
        validate: check that every known label (valid, not ``ignore_index``) lies in
            [0, K) ([0, ∞) without ``num_classes``): ``ValueError`` on a CPU, a device-side
            assertion elsewhere (:func:`~pseudosel.validation.check_labels`). Default True.

    Returns:
        dict of tensors (0-dim floats, (K,) per class); see the module docstring for the
        definitions. The target-based entries are present when ``target`` is given; the
        AUROC is exact (:func:`auroc`). Computed on the device without host
        synchronisation (nothing is read back but, on a CPU, the label check's verdict;
        which keys are present depends only on the arguments).

    Example:
        >>> import torch, pseudosel
        >>> from pseudosel.metrics import selection_quality
        >>> sel = pseudosel.select_reliable(torch.tensor([[0.97, 0.03], [0.6, 0.4]]),
        ...                                 "threshold")
        >>> quality = selection_quality(sel, torch.tensor([0, 1]))
        >>> float(quality["ratio"]), float(quality["precision"]), float(quality["accuracy"])
        (0.5, 1.0, 0.5)
    """
    sums = _batch_sums(selection, target, ignore_index, num_classes, bins=0, validate=validate)
    return _batch_result(sums, selection, target, ignore_index)


class _Sums(NamedTuple):
    """One batch's (or the accumulated) sums and counts, laid out as SelectionStats' buffers."""

    counts: Tensor  # (len(_COUNTS),) float64
    class_valid: Tensor  # (K,) float64, K = 0 without num_classes
    class_selected: Tensor  # (K,) float64
    score_hist: Tensor  # (2, bins) float64: incorrect, correct


_COUNTS = (
    "valid",
    "selected",
    "weight_sum",
    "known",
    "correct",
    "selected_known",
    "selected_correct",
    "weight_known",
    "weight_correct",
    "batches_with_target",
)


def _batch_sums(
    selection: Selection,
    target: Tensor | None,
    ignore_index: int,
    num_classes: int | None,
    bins: int,
    validate: bool = False,
) -> _Sums:
    """The update stage: the batch's sums and counts, on the selection's device, no sync
    (but for the label check with ``validate`` on a CPU)."""
    valid, known, correct = _positions(selection, target, ignore_index, num_classes, validate)
    device = valid.device
    mask = selection.mask & valid
    weight = torch.where(valid, selection.weight, 0.0).to(torch.float64)
    values = [valid.sum(), mask.sum(), weight.sum()]
    score_hist = torch.zeros(2, bins, dtype=torch.float64, device=device)
    if known is not None and correct is not None:
        known_f = known.to(torch.float64)
        correct_f = correct.to(torch.float64)
        values += [
            known.sum(),
            correct.sum(),
            (mask & known).sum(),
            (mask & correct).sum(),
            (weight * known_f).sum(),
            (weight * correct_f).sum(),
            torch.ones((), device=device),  # one more batch with a target
        ]
        if bins:
            squashed = 0.5 + torch.atan(selection.score.to(torch.float64)) / math.pi
            slot = (squashed * bins).long().clamp_(0, bins - 1).flatten()
            score_hist[0].index_add_(0, slot, (known & ~correct).flatten().to(torch.float64))
            score_hist[1].index_add_(0, slot, correct_f.flatten())
    else:
        values += [torch.zeros((), device=device)] * 7
    counts = torch.stack([v.to(torch.float64) for v in values])
    classes = num_classes or 0
    class_valid = torch.zeros(classes, dtype=torch.float64, device=device)
    class_selected = torch.zeros(classes, dtype=torch.float64, device=device)
    if classes:
        labels = selection.labels.flatten().clamp(0, classes - 1)
        class_valid.index_add_(0, labels, valid.flatten().to(torch.float64))
        class_selected.index_add_(0, labels, mask.flatten().to(torch.float64))
    return _Sums(counts, class_valid, class_selected, score_hist)


def _share(num: Tensor, den: Tensor) -> Tensor:
    """num / den as float32, 0 where den = 0 (nothing to measure)."""
    return torch.where(den > 0, num / den.clamp_min(1e-300), 0.0).float()


def _derived(sums: _Sums, *, with_classes: bool, with_target: bool) -> dict[str, Tensor]:
    """The compute stage: the numbers from the sums, on the device (no host read).

    Which keys appear is decided by the two host-side flags, never by the data.
    """
    c = dict(zip(_COUNTS, sums.counts.unbind(0), strict=True))
    result = {
        "ratio": _share(c["selected"], c["valid"]),
        "mean_weight": _share(c["weight_sum"], c["valid"]),
    }
    if with_classes:
        result["accepted"] = sums.class_selected.float()
        result["acceptance"] = _share(sums.class_selected, sums.class_valid)
    if with_target:
        result.update(
            precision=_share(c["selected_correct"], c["selected_known"]),
            weighted_precision=_share(c["weight_correct"], c["weight_known"]),
            recall=_share(c["selected_correct"], c["correct"]),
            accuracy=_share(c["correct"], c["known"]),
        )
    return result


def _batch_result(
    sums: _Sums, selection: Selection, target: Tensor | None, ignore_index: int
) -> dict[str, Tensor]:
    """One batch's numbers, with the exact AUROC when there is a target."""
    result = _derived(
        sums, with_classes=sums.class_valid.numel() > 0, with_target=target is not None
    )
    if target is not None:
        _, known, correct = _positions(selection, target, ignore_index)
        assert known is not None and correct is not None
        result["auroc"] = auroc(selection.score, correct, known).float()
    return result


class SelectionStats(nn.Module):
    """Selection statistics accumulated over batches (torchmetrics-style Module).

    State is sums and counts in registered buffers (checkpointable), all-reduced across
    ranks in :meth:`compute` when torch.distributed is initialised. The AUROC is computed
    from per-class histograms of the score mapped through ½ + atan(score)/π (monotone, so the
    ranking is kept) into ``bins`` bins, exact up to that resolution.

    Neither :meth:`update`, :meth:`forward` nor :meth:`compute` synchronises with the host
    (the label check of ``validate`` is a device-side assertion off the CPU): they only
    queue device work (``compute(sync=True)`` adds the all-reduce). Reading the
    numbers (``float(v)``, ``as_log_dict(...)`` handed to a logger) is the caller's one host
    read. Whether a target was ever given is known on the host from the calls to
    :meth:`update`, so the target-based keys need no device read either (after
    :meth:`load_state_dict` it is taken from the loaded counts).

    Args:
        num_classes: K for the per-class counts (None: no per-class numbers).
        bins: score-histogram bins for the AUROC (default 4096; 0 disables it).
        ignore_index: the unknown-label value of targets. Default 255.
        process_group: for the all-reduce in :meth:`compute`.
        validate: check that every known target label lies in [0, K) ([0, ∞) without
            ``num_classes``), as :func:`selection_quality` does. Default True (on a CPU
            the check reads one flag back; ``validate=False`` keeps :meth:`update` free of
            host reads there too).

    Buffers:
        ``counts`` (10,) float64 sums and counts; ``class_valid``, ``class_selected`` (K,);
        ``score_hist`` (2, bins). All of them are sums, reduced with "sum" across ranks.

    Example:
        >>> import torch, pseudosel
        >>> from pseudosel.metrics import SelectionStats
        >>> stats = SelectionStats(num_classes=2)
        >>> for _ in range(3):
        ...     probs = torch.tensor([[0.97, 0.03], [0.6, 0.4]])
        ...     stats.update(pseudosel.select_reliable(probs, "threshold"), torch.tensor([0, 0]))
        >>> float(stats.compute()["precision"])
        1.0
    """

    counts: Tensor
    class_valid: Tensor
    class_selected: Tensor
    score_hist: Tensor

    _COUNTS = _COUNTS

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        bins: int = 4096,
        ignore_index: int = 255,
        process_group: ProcessGroup | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.validate = bool(validate)
        self.bins = bins
        self.ignore_index = ignore_index
        self.process_group = process_group
        classes = num_classes or 0
        self.register_buffer("counts", torch.zeros(len(_COUNTS), dtype=torch.float64))
        self.register_buffer("class_valid", torch.zeros(classes, dtype=torch.float64))
        self.register_buffer("class_selected", torch.zeros(classes, dtype=torch.float64))
        self.register_buffer("score_hist", torch.zeros(2, bins, dtype=torch.float64))
        # Host-side: has update() ever been given a target since the last reset / load?
        self._with_target = False

    def reset(self) -> None:
        """Forget everything accumulated."""
        for buffer in self.buffers():
            buffer.zero_()
        self._with_target = False

    def _add(self, sums: _Sums, with_target: bool) -> None:
        self.counts += sums.counts.to(self.counts.device)
        self.class_valid += sums.class_valid.to(self.class_valid.device)
        self.class_selected += sums.class_selected.to(self.class_selected.device)
        self.score_hist += sums.score_hist.to(self.score_hist.device)
        self._with_target |= with_target

    @no_grad
    def update(self, selection: Selection, target: Tensor | None = None) -> None:
        """Add one batch (no host synchronisation)."""
        sums = _batch_sums(
            selection, target, self.ignore_index, self.num_classes, self.bins, self.validate
        )
        self._add(sums, target is not None)

    @no_grad
    def forward(self, selection: Selection, target: Tensor | None = None) -> dict[str, Tensor]:
        """Update with the batch and return that batch's own :func:`selection_quality`."""
        sums = _batch_sums(
            selection, target, self.ignore_index, self.num_classes, self.bins, self.validate
        )
        self._add(sums, target is not None)
        return _batch_result(sums, selection, target, self.ignore_index)

    @no_grad
    def compute(self, sync: bool = True) -> dict[str, Tensor]:
        """The statistics over everything since the last reset, across all ranks.

        Args:
            sync: all-reduce the sums over the ranks first (a collective: every rank must
                call it; the same collectives run on every rank whatever it was given).
                False gives this rank's own statistics.

        The target-based numbers (and ``auroc`` with ``bins`` > 0) are present once a batch
        with a target has been given to this module's :meth:`update` (under DDP: on this
        rank). No host synchronisation: the result stays on the device.
        """
        sums = self._reduced_sums() if sync else _Sums(*(b.clone() for b in self._sums()))
        result = _derived(sums, with_classes=bool(self.num_classes), with_target=self._with_target)
        if self._with_target and self.bins:
            result["auroc"] = _histogram_auroc(sums.score_hist[1], sums.score_hist[0]).float()
        return result

    def _sums(self) -> _Sums:
        return _Sums(self.counts, self.class_valid, self.class_selected, self.score_hist)

    def _reduced_sums(self) -> _Sums:
        """Every buffer summed over the ranks in one all-reduce (a copy; state unchanged)."""
        buffers = self._sums()
        flat = all_reduce_sum(torch.cat([b.flatten() for b in buffers]), self.process_group)
        parts = flat.split([b.numel() for b in buffers])
        return _Sums(*(part.view_as(b) for part, b in zip(parts, buffers, strict=True)))

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        counts = state_dict.get(prefix + "counts")
        if isinstance(counts, Tensor) and counts.shape == self.counts.shape:
            # loading is host-side work anyway: one read here keeps compute() free of it
            self._with_target = bool(counts[_COUNTS.index("batches_with_target")] > 0)


def _histogram_auroc(positive: Tensor, negative: Tensor) -> Tensor:
    """AUROC from per-bin counts of positives and negatives (ties within a bin count ½)."""
    n_pos, n_neg = positive.sum(), negative.sum()
    below = torch.cumsum(negative, 0) - negative  # negatives in lower bins
    pairs = (positive * (below + 0.5 * negative)).sum()
    defined = (n_pos > 0) & (n_neg > 0)
    return torch.where(defined, pairs / (n_pos * n_neg).clamp_min(1), 0.5)


def as_log_dict(metrics: dict[str, Tensor], prefix: str = "pseudo/") -> dict[str, Tensor]:
    """Flatten :func:`selection_quality` / :meth:`SelectionStats.compute` output for a logger.

    Scalars keep their name; per-class tensors become ``name/k`` entries.

    Example:
        >>> import torch
        >>> from pseudosel.metrics import as_log_dict
        >>> sorted(as_log_dict({"ratio": torch.tensor(0.5), "accepted": torch.tensor([2., 3.])}))
        ['pseudo/accepted/0', 'pseudo/accepted/1', 'pseudo/ratio']
    """
    flat: dict[str, Tensor] = {}
    for name, value in metrics.items():
        if value.dim() == 0:
            flat[prefix + name] = value.float()
        else:
            for k, item in enumerate(value.flatten().unbind(0)):
                flat[f"{prefix}{name}/{k}"] = item.float()
    return flat
