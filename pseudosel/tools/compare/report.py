"""What ``pseudosel compare`` reports beside the selectors' rows: the threshold sweep and
reliability histograms, CSL's feature space of one group, the plots and the text table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["Sweep", "feature_space_sample", "plots", "table"]

#: confidence bins of the threshold sweep (the sweep's thresholds are the bins' lower edges)
SWEEP_BINS = 1000
#: bins of the reliability diagram (groups of sweep bins)
RELIABILITY_BINS = 15
#: most points drawn in the feature-space scatter (a seeded subsample beyond it)
SCATTER_POINTS = 4000


@dataclass
class Sweep:
    """Histograms over the max confidence of the labelled positions, for the threshold
    sweep (:meth:`curve`) and the reliability diagram (:meth:`reliability`).

    Attributes:
        correct, wrong: (SWEEP_BINS,) float64 counts of right and wrong arg-max labels per
            confidence bin; conf_sum: (SWEEP_BINS,) the bins' summed confidence.
    """

    correct: Tensor
    wrong: Tensor
    conf_sum: Tensor

    @classmethod
    def empty(cls) -> Sweep:
        return cls(*(torch.zeros(SWEEP_BINS, dtype=torch.float64) for _ in range(3)))

    def add(self, confidence: Tensor, correct: Tensor, known: Tensor) -> None:
        """Count a batch: ``confidence`` (N, *spatial) max probability, ``correct`` and
        ``known`` bool (N, *spatial) (arg-max equals the label; the label is known)."""
        slot = (confidence.double() * SWEEP_BINS).long().clamp_(0, SWEEP_BINS - 1).flatten()
        self.correct.index_add_(0, slot, (known & correct).flatten().double())
        self.wrong.index_add_(0, slot, (known & ~correct).flatten().double())
        self.conf_sum.index_add_(0, slot, (confidence.double() * known).flatten())

    def curve(self) -> dict[str, list[float]]:
        """Coverage and precision of ``max p >= tau`` for every bin edge ``tau`` that keeps
        at least one position: lists ``tau``, ``coverage``, ``precision``."""
        total = float((self.correct + self.wrong).sum())
        kept_correct = self.correct.flip(0).cumsum(0).flip(0)  # confidence >= bin edge
        kept = (self.correct + self.wrong).flip(0).cumsum(0).flip(0)
        coverage = (kept / max(total, 1.0)).tolist()
        precision = (kept_correct / kept.clamp_min(1)).tolist()
        taus = (torch.arange(SWEEP_BINS, dtype=torch.float64) / SWEEP_BINS).tolist()
        keep = [i for i, k in enumerate(kept.tolist()) if k > 0]
        return {
            "tau": [taus[i] for i in keep],
            "coverage": [coverage[i] for i in keep],
            "precision": [precision[i] for i in keep],
        }

    def reliability(self) -> dict[str, list[float]]:
        """Per reliability bin: ``mean_confidence``, ``accuracy`` and ``count`` (0 for an
        empty bin)."""
        edges = [round(i * SWEEP_BINS / RELIABILITY_BINS) for i in range(RELIABILITY_BINS + 1)]
        conf, acc, count = [], [], []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            n = float((self.correct[lo:hi] + self.wrong[lo:hi]).sum())
            count.append(n)
            conf.append(float(self.conf_sum[lo:hi].sum()) / n if n else 0.0)
            acc.append(float(self.correct[lo:hi].sum()) / n if n else 0.0)
        return {"mean_confidence": conf, "accuracy": acc, "count": count}


def feature_space_sample(probs: Tensor, labels: Tensor, known: Tensor, dense: bool) -> dict:
    """CSL features of one group (the first image, or the whole batch) and its split.

    Returns numpy ``confidence``, ``spread``, ``correct`` (at most 4,000 known positions,
    seeded subsample) and the reliable cluster's ``center`` — the inputs of
    :func:`pseudosel.tools.plots.plot_feature_space`.
    """
    from pseudosel.features import csl_features
    from pseudosel.functional.csl import split_groups
    from pseudosel.functional.separation import group_points

    group = probs[:1] if dense else probs
    c, s, predicted = csl_features(group)
    ok = known[:1] if dense else known
    gc, gs, gv = group_points(c, s, ok, "auto", group.dim())
    split = split_groups(gc[:1], gs[:1], gv[:1])
    keep = ok.flatten().nonzero().flatten()
    if len(keep) > SCATTER_POINTS:
        keep = keep[torch.randperm(len(keep), generator=torch.Generator().manual_seed(0))][
            :SCATTER_POINTS
        ]
    truth = (labels[:1] if dense else labels).flatten()
    return {
        "confidence": c.flatten()[keep].numpy(),
        "spread": s.flatten()[keep].numpy(),
        "correct": (predicted.flatten() == truth)[keep].numpy(),
        "center": tuple(float(v) for v in split.center[0]),
    }


def plots(report: dict, scatter: dict | None, out: Path) -> list[str]:
    """Write the coverage-precision, reliability and (with ``scatter``) CSL feature-space
    PNGs of ``report`` into ``out``; return their paths."""
    from pseudosel.tools import plots as plotting

    sweep = report["threshold_sweep"]
    points = {}
    for spec, metrics in report["selectors"].items():
        if "precision" in metrics:
            points[spec] = (metrics["ratio"], metrics["precision"])
    paths = [
        plotting.plot_coverage_precision(
            sweep["coverage"], sweep["precision"], points, out / "coverage_precision.png"
        ),
        plotting.plot_reliability(
            report["reliability"]["mean_confidence"],
            report["reliability"]["accuracy"],
            report["reliability"]["count"],
            out / "reliability.png",
        ),
    ]
    if scatter is not None:
        paths.append(
            plotting.plot_feature_space_sample(
                scatter,
                out / "csl_feature_space.png",
                title="CSL feature space (first "
                + ("image)" if len(report["shape"]) > 2 else "batch)"),
            )
        )
    return [str(p) for p in paths]


def table(report: dict) -> str:
    """The report's selectors as a fixed-width text table."""
    columns = [
        ("coverage", "ratio"),
        ("precision", "precision"),
        ("w.precision", "weighted_precision"),
        ("recall", "recall"),
        ("AUROC", "auroc"),
        ("mean w", "mean_weight"),
    ]
    warmed = [s for s, m in report["selectors"].items() if m.get("warmup_passes", 0) > 0]
    unfinished = [s for s, m in report["selectors"].items() if m.get("in_own_warmup")]
    names = {
        s: s + ("*" if s in warmed else "") + ("!" if s in unfinished else "")
        for s in report["selectors"]
    }
    width = max(len(n) for n in names.values()) + 2
    lines = [f"{'selector':<{width}}" + "".join(f"{h:>12}" for h, _ in columns)]
    lines.append("-" * len(lines[0]))
    for spec, metrics in report["selectors"].items():
        cells = "".join(
            f"{metrics[key]:>12.4f}" if key in metrics else f"{'-':>12}" for _, key in columns
        )
        lines.append(f"{names[spec]:<{width}}{cells}")
    if warmed:
        passes = report["selectors"][warmed[0]]["warmup_passes"]
        lines.append(
            f"* stateful: measured on the last of {passes + 1} passes over the file (the first "
            f"{passes} only advance its state; --passes sets the number)"
        )
    if unfinished:
        lines.append(
            "! still in its own warm-up when measured (e.g. FlexMatch: more samples unused "
            "than any class has learnt, so its thresholds stay near 0): these numbers are "
            "its warm-up, not its steady state"
        )
    return "\n".join(lines)
