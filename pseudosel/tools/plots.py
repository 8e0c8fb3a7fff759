"""Plots of selections (matplotlib, imported on first use; install the ``viz`` extra).

Every function writes one PNG and returns its path. Inputs are plain numbers or CPU
tensors/arrays, so the plots can be drawn from saved JSON as well as live.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "plot_coverage_precision",
    "plot_curves",
    "plot_feature_space",
    "plot_feature_space_sample",
    "plot_reliability",
]

CORRECT, WRONG, TRUSTED = "#2a9d8f", "#e76f51", "#264653"


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'pseudosel[viz]'") from error
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.clf()
    _pyplot().close(fig)
    return path


def plot_coverage_precision(
    coverage: Sequence[float],
    precision: Sequence[float],
    points: Mapping[str, tuple[float, float]],
    path: str | Path,
    *,
    title: str = "Threshold sweep and selector operating points",
) -> Path:
    """Coverage–precision curve of a confidence-threshold sweep, with each selector's point.

    Args:
        coverage, precision: the sweep (share of labelled positions selected, accuracy of
            the selected), one entry per threshold.
        points: selector name → (coverage, precision).
        path: PNG file to write.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    ax.plot(coverage, precision, color="0.4", lw=1.5, label="threshold sweep")
    markers = "osD^vP*X<>"
    for i, (name, (x, y)) in enumerate(points.items()):
        ax.scatter([x], [y], s=60, marker=markers[i % len(markers)], label=name, zorder=3)
    ax.set_xlabel("coverage (share of positions selected)")
    ax.set_ylabel("precision (accuracy of selected pseudo-labels)")
    ax.set_xlim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def plot_feature_space(
    confidence: np.ndarray,
    spread: np.ndarray,
    correct: np.ndarray,
    center: tuple[float, float] | None,
    path: str | Path,
    *,
    title: str = "CSL feature space",
) -> Path:
    """Confidence vs residual variance, coloured by correct/incorrect, with CSL's trusted set.

    Args:
        confidence, spread: (n,) features c and s of one group.
        correct: (n,) bool, pseudo-label equals the true label.
        center: the reliable cluster's mean (c, s); the trusted region (c > center_c or
            s < center_s) is shaded. None draws no region.
        path: PNG file to write.
    """
    plt = _pyplot()
    confidence, spread = np.asarray(confidence), np.asarray(spread)
    correct = np.asarray(correct, dtype=bool)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    top = max(float(spread.max(initial=0.0)) * 1.05, 1e-6)
    left = float(confidence.min(initial=0.0))
    if center is not None:
        cx, cy = center
        # trusted = right of c = cx, or below s = cy: an L-shaped region
        ax.fill_between([cx, 1.0], 0, top, color=TRUSTED, alpha=0.12, lw=0)
        ax.fill_between(
            [left, cx],
            0,
            min(cy, top),
            color=TRUSTED,
            alpha=0.12,
            lw=0,
            label="trusted region (weight 1)",
        )
        ax.axvline(cx, color=TRUSTED, lw=1, ls="--")
        ax.axhline(cy, color=TRUSTED, lw=1, ls="--")
    ax.scatter(
        confidence[correct],
        spread[correct],
        s=4,
        c=CORRECT,
        alpha=0.5,
        label=f"correct ({int(correct.sum())})",
    )
    ax.scatter(
        confidence[~correct],
        spread[~correct],
        s=4,
        c=WRONG,
        alpha=0.6,
        label=f"incorrect ({int((~correct).sum())})",
    )
    ax.set_xlabel("confidence c = max p")
    ax.set_ylabel("scaled residual variance s")
    ax.set_ylim(0, top)
    ax.set_title(title)
    ax.legend(fontsize=8, markerscale=3)
    return _save(fig, path)


def plot_feature_space_sample(sample: dict, path: str | Path, *, title: str) -> Path:
    """:func:`plot_feature_space` of a
    :func:`~pseudosel.tools.compare.report.feature_space_sample` (its ``confidence``,
    ``spread``, ``correct`` and ``center``)."""
    return plot_feature_space(
        sample["confidence"],
        sample["spread"],
        sample["correct"],
        sample["center"],
        path,
        title=title,
    )


def plot_reliability(
    mean_confidence: Sequence[float],
    accuracy: Sequence[float],
    counts: Sequence[float],
    path: str | Path,
    *,
    title: str = "Reliability diagram",
) -> Path:
    """Calibration: accuracy per confidence bin against the bin's mean confidence.

    Args:
        mean_confidence, accuracy, counts: per bin (empty bins are skipped).
        path: PNG file to write.
    """
    plt = _pyplot()
    conf, acc, n = (np.asarray(v, dtype=float) for v in (mean_confidence, accuracy, counts))
    keep = n > 0
    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="perfect calibration")
    ax.plot(conf[keep], acc[keep], marker="o", color=TRUSTED, label="model")
    total = n.sum()
    if total > 0:
        ece = float(np.sum(n[keep] * np.abs(acc[keep] - conf[keep])) / total)
        ax.text(0.05, 0.9, f"ECE = {ece:.3f}", transform=ax.transAxes)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_curves(
    curves: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    xlabel: str = "epoch",
    ylabel: str = "",
    title: str = "",
    bands: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """One line per name (e.g. a metric per selector over epochs), optional ± bands."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, values in curves.items():
        x = np.arange(1, len(values) + 1)
        ax.plot(x, values, marker="o", ms=3, label=name)
        if bands and name in bands:
            band = np.asarray(bands[name])
            ax.fill_between(x, np.asarray(values) - band, np.asarray(values) + band, alpha=0.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
