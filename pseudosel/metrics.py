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
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from pseudosel.distributed import all_reduce_sum
from pseudosel.selection import Selection

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["SelectionStats", "as_log_dict", "auroc", "selection_quality"]


def _positions(selection: Selection, target: Tensor | None, ignore_index: int):
    """Validity of positions, and where the target is known (and correct), as bool."""
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


def selection_quality(
    selection: Selection,
    target: Tensor | None = None,
    *,
    num_classes: int | None = None,
    ignore_index: int = 255,
) -> dict[str, Tensor]:
    """Statistics of one batch's selection, and its quality when the true labels are known.

    Args:
        selection: a :class:`~pseudosel.Selection`, fields (N, *spatial).
        target: optional true labels (N, *spatial), ``ignore_index`` where unknown.
        num_classes: K, for the per-class ``accepted`` / ``acceptance`` (K,) tensors.
        ignore_index: the unknown-label value of ``target``. Default 255.

    Returns:
        dict of tensors (0-dim floats, (K,) per class); see the module docstring for the
        definitions. Computed on the device without host synchronisation.

    Example:
        >>> import torch, pseudosel
        >>> from pseudosel.metrics import selection_quality
        >>> sel = pseudosel.select_reliable(torch.tensor([[0.97, 0.03], [0.6, 0.4]]),
        ...                                 "threshold")
        >>> quality = selection_quality(sel, torch.tensor([0, 1]))
        >>> float(quality["ratio"]), float(quality["precision"]), float(quality["accuracy"])
        (0.5, 1.0, 0.5)
    """
    stats = SelectionStats(num_classes, bins=0, ignore_index=ignore_index)
    stats.update(selection, target)
    result = stats.compute(sync=False)
    if target is not None:
        _, known, correct = _positions(selection, target, ignore_index)
        assert known is not None and correct is not None
        result["auroc"] = auroc(selection.score, correct, known).to(result["ratio"].dtype)
    return result


class SelectionStats(nn.Module):
    """Selection statistics accumulated over batches (torchmetrics-style Module).

    State is sums and counts in registered buffers (checkpointable), all-reduced across
    ranks in :meth:`compute` when torch.distributed is initialised. The AUROC is computed
    from per-class histograms of the score mapped through ½ + atan(score)/π (monotone, so the
    ranking is kept) into ``bins`` bins, exact up to that resolution.

    Args:
        num_classes: K for the per-class counts (None: no per-class numbers).
        bins: score-histogram bins for the AUROC (default 4096; 0 disables it).
        ignore_index: the unknown-label value of targets. Default 255.
        process_group: for the all-reduce in :meth:`compute`.

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

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        bins: int = 4096,
        ignore_index: int = 255,
        process_group: ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.bins = bins
        self.ignore_index = ignore_index
        self.process_group = process_group
        self.register_buffer("counts", torch.zeros(len(self._COUNTS), dtype=torch.float64))
        classes = num_classes or 0
        self.register_buffer("class_valid", torch.zeros(classes, dtype=torch.float64))
        self.register_buffer("class_selected", torch.zeros(classes, dtype=torch.float64))
        self.register_buffer("score_hist", torch.zeros(2, bins, dtype=torch.float64))

    def reset(self) -> None:
        """Forget everything accumulated."""
        for buffer in self.buffers():
            buffer.zero_()

    @torch.no_grad()
    def update(self, selection: Selection, target: Tensor | None = None) -> None:
        """Add one batch (no host synchronisation)."""
        valid, known, correct = _positions(selection, target, self.ignore_index)
        mask = selection.mask & valid
        weight = torch.where(valid, selection.weight, 0.0).to(torch.float64)
        values = [valid.sum(), mask.sum(), weight.sum()]
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
                torch.ones((), device=valid.device),  # one more batch with a target
            ]
            if self.bins:
                squashed = 0.5 + torch.atan(selection.score.to(torch.float64)) / math.pi
                slot = (squashed * self.bins).long().clamp_(0, self.bins - 1).flatten()
                self.score_hist[0].index_add_(0, slot, (known & ~correct).flatten().double())
                self.score_hist[1].index_add_(0, slot, correct.flatten().double())
        else:
            values += [torch.zeros((), device=valid.device)] * 7
        self.counts += torch.stack([v.to(torch.float64) for v in values]).to(self.counts.device)
        if self.num_classes:
            labels = selection.labels.flatten().clamp(0, self.num_classes - 1)
            self.class_valid.index_add_(0, labels, valid.flatten().double())
            self.class_selected.index_add_(0, labels, mask.flatten().double())

    def forward(self, selection: Selection, target: Tensor | None = None) -> dict[str, Tensor]:
        """Update with the batch and return that batch's own :func:`selection_quality`."""
        self.update(selection, target)
        return selection_quality(
            selection, target, num_classes=self.num_classes, ignore_index=self.ignore_index
        )

    def _reduced(self, buffer: Tensor, sync: bool) -> Tensor:
        return all_reduce_sum(buffer.clone(), self.process_group) if sync else buffer.clone()

    def compute(self, sync: bool = True) -> dict[str, Tensor]:
        """The statistics over everything since the last reset, across all ranks.

        Args:
            sync: all-reduce the sums over the ranks first (a collective: every rank must
                call it). False gives this rank's own statistics.

        The target-based numbers are present once a batch with a target has been added.
        """
        counts = self._reduced(self.counts, sync)
        c = dict(zip(self._COUNTS, counts.unbind(0), strict=True))

        def share(num: Tensor, den: Tensor) -> Tensor:
            return torch.where(den > 0, num / den.clamp_min(1e-300), 0.0).float()

        result = {
            "ratio": share(c["selected"], c["valid"]),
            "mean_weight": share(c["weight_sum"], c["valid"]),
        }
        if self.num_classes:
            class_valid = self._reduced(self.class_valid, sync)
            class_selected = self._reduced(self.class_selected, sync)
            result["accepted"] = class_selected.float()
            result["acceptance"] = share(class_selected, class_valid)
        if bool(c["batches_with_target"] > 0):  # a host read, once per compute
            result.update(
                precision=share(c["selected_correct"], c["selected_known"]),
                weighted_precision=share(c["weight_correct"], c["weight_known"]),
                recall=share(c["selected_correct"], c["correct"]),
                accuracy=share(c["correct"], c["known"]),
            )
            if self.bins:
                hist = self._reduced(self.score_hist, sync)
                result["auroc"] = _histogram_auroc(hist[1], hist[0]).float()
        return result


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
