"""What every example run writes: per-epoch JSON, a markdown summary and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pseudosel.tools import plots as plotting
from pseudosel.tools.compare import feature_space_sample

QUALITY = ("ratio", "precision", "weighted_precision", "recall", "mean_weight", "auroc")


def quality_record(stats) -> dict:
    """An epoch's scalar numbers from a :class:`pseudosel.metrics.SelectionStats`.

    ``precision`` is None when nothing was selected, and ``weighted_precision`` when no
    weight was given: there is nothing to measure (the metric's own 0 would read as "all
    wrong"). JSON writes None as ``null``; tables show ``-``.
    """
    record = {k: float(v) for k, v in stats.compute().items() if v.dim() == 0}
    if record.get("ratio") == 0 and "precision" in record:
        record["precision"] = None
    if record.get("mean_weight") == 0 and "weighted_precision" in record:
        record["weighted_precision"] = None
    return record


def write_run(
    out: str | Path,
    setting: dict,
    history: list[dict],
    metric: str,
    scatter: dict | None = None,
) -> None:
    """``epochs.json``, ``summary.md``, ``curves.png`` and, for CSL, ``csl_feature_space.png``.

    Args:
        out: the run's folder.
        setting: what was run (task, selector, seed, epochs, ...), written to the summary.
        history: one dict per epoch.
        metric: the task's main metric key (``test_accuracy`` or ``test_miou``).
        scatter: :func:`pseudosel.tools.compare.feature_space_sample` of one batch, for CSL runs.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "epochs.json").write_text(json.dumps({"setting": setting, "epochs": history}, indent=2))
    last = history[-1]
    lines = [f"# {setting['task']}: {setting['selector']} (seed {setting['seed']})", ""]
    lines += [f"- {key}: {value}" for key, value in setting.items()]
    lines += [
        "",
        "| epoch | " + metric + " | " + " | ".join(QUALITY) + " |",
        "| ---: | ---: |" + " ---: |" * len(QUALITY),
    ]
    for row in history:
        cells = ["-" if row.get(k) is None else f"{row[k]:.4f}" for k in QUALITY]
        lines.append(f"| {row['epoch']} | {row[metric]:.4f} | " + " | ".join(cells) + " |")
    lines += ["", f"Final {metric}: {last[metric]:.4f}."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    curves = {metric: [row[metric] for row in history]}
    for key in ("ratio", "precision"):
        values = [row.get(key) for row in history]
        if any(v is not None for v in values):
            curves[f"pseudo-label {key}"] = [float("nan") if v is None else v for v in values]
    plotting.plot_curves(
        curves,
        out / "curves.png",
        ylabel="value",
        title=f"{setting['task']} / {setting['selector']}",
    )
    if scatter is not None:
        plotting.plot_feature_space_sample(
            scatter,
            out / "csl_feature_space.png",
            title=f"CSL feature space, one batch ({setting['task']})",
        )


def scatter_of(probs: torch.Tensor, truth: torch.Tensor, ignore_index: int, dense: bool) -> dict:
    """The CSL feature-space sample of one batch of predictions and hidden labels."""
    known = truth != ignore_index
    return feature_space_sample(probs.cpu(), truth.cpu(), known.cpu(), dense)
