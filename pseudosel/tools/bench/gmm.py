"""``pseudosel bench --gmm``: Consistent-Teacher's GMM step, pseudosel against the code's.

The published code fits scikit-learn's ``GaussianMixture`` once per class present in the
batch, on the CPU, at every training step. This times one step of that loop for every class
(the worst case: all classes present) against :func:`pseudosel.functional.gmm_thresholds`
on the same queues — eager, and compiled when asked — on the chosen device, and checks that
the thresholds are equal. The queues hold ``scores`` positive scores per class drawn from a
two-mode mixture, as a teacher's box scores are.
"""

from __future__ import annotations

import platform
import sys
from datetime import date

import torch

from pseudosel.functional import gmm_thresholds
from pseudosel.tools.bench.timing import median_seconds, synchronize

__all__ = ["gmm_markdown", "gmm_queues", "gmm_report", "published_gmm_policy", "sklearn_step"]


def gmm_queues(classes: int, scores: int, *, seed: int = 0) -> torch.Tensor:
    """(classes, scores) float32 queues: a low mode and a high mode per class, in (0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    share = torch.rand(classes, 1, generator=gen) * 0.6 + 0.2
    high = torch.rand(classes, scores, generator=gen) < share
    low_scores = torch.rand(classes, scores, generator=gen) * 0.35
    high_scores = 0.55 + torch.rand(classes, scores, generator=gen) * 0.45
    return torch.where(high, high_scores, low_scores).clamp_min(1e-4)


def published_gmm_policy(scores: torch.Tensor, given_gt_thr: float = 0.0, policy="high") -> float:
    """Consistent-Teacher's ``gmm_policy`` on one class's scores, as the code runs it: fewer
    than 4 scores → ``given_gt_thr``; else scikit-learn's two-component GaussianMixture
    (weights ½, means min/max, precisions 1) fitted on the scores as float32 numpy;
    ``"high"``: the score of the most likely (largest ``score_samples``) high-component
    point, taken as the smallest high-component score at or above it; ``"middle"``: the
    smallest high-component score; no high-component point → ``given_gt_thr``."""
    import numpy as np
    from sklearn.mixture import GaussianMixture

    if len(scores) < 4:
        return given_gt_thr
    x = scores.cpu().numpy()[:, np.newaxis]
    gmm = GaussianMixture(
        2,
        weights_init=[0.5, 0.5],
        means_init=[[np.min(x)], [np.max(x)]],
        precisions_init=[[[1.0]], [[1.0]]],
    )
    gmm.fit(x)
    assignment = gmm.predict(x)
    density = gmm.score_samples(x)
    if not (assignment == 1).any():
        return given_gt_thr
    if policy == "high":
        density[assignment == 0] = -np.inf
        best = np.argmax(density, axis=0)
        return float(x[(assignment == 1) & (x >= x[best]).squeeze()].min())
    return float(x[assignment == 1].min())


def sklearn_step(queues: torch.Tensor, policy: str = "high") -> list[float]:
    """The code's per-class loop over every class: :func:`published_gmm_policy` on each
    queue's positive scores."""
    return [published_gmm_policy(row[row > 0], 0.0, policy) for row in queues.cpu()]


def gmm_report(
    classes: int = 80,
    scores: int = 100,
    *,
    device: str | None = None,
    repeats: int = 11,
    compiled: bool = True,
) -> dict:
    """Time one GMM step on the same queues: the published loop, then pseudosel eager (and
    compiled) on the CPU and, when ``device`` is a GPU, on it too; returns the rows and the
    machine."""
    where = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    queues = gmm_queues(classes, scores)
    want = torch.tensor(sklearn_step(queues))
    rows = []

    def row(name: str, fn, got, on: torch.device) -> None:
        seconds = median_seconds(fn, on, repeats, warmup=2)
        equal = None if got is None else int((got.cpu() == want).sum())
        rows.append({"kernel": name, "median_ms": seconds * 1e3, "equal_thresholds": equal})

    cpu = torch.device("cpu")
    row("Consistent-Teacher loop (scikit-learn, CPU)", lambda: sklearn_step(queues), want, cpu)
    for on in (cpu,) if where.type == "cpu" else (cpu, where):
        rows_on, valid_on = queues.to(on), queues.to(on) > 0
        eager = gmm_thresholds(rows_on, valid_on)
        row(
            f"pseudosel gmm_thresholds (eager, {on.type})",
            lambda r=rows_on, v=valid_on: gmm_thresholds(r, v),
            eager,
            on,
        )
        if compiled:
            fitted = torch.compile(gmm_thresholds, fullgraph=True)
            got = fitted(rows_on, valid_on)  # compiles
            synchronize(on)
            row(
                f"pseudosel gmm_thresholds (compiled, {on.type})",
                lambda r=rows_on, v=valid_on, f=fitted: f(r, v),
                got,
                on,
            )
    base = rows[0]["median_ms"]
    for entry in rows:
        entry["speedup_vs_loop"] = base / entry["median_ms"]
    return {
        "date": date.today().isoformat(),
        "device": torch.cuda.get_device_name(where) if where.type == "cuda" else "cpu",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.platform()}",
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "classes": classes,
        "scores": scores,
        "repeats": repeats,
        "rows": rows,
    }


def gmm_markdown(report: dict) -> str:
    """The report as a markdown table."""
    lines = [
        f"GMM step, {report['classes']} classes x {report['scores']} scores — "
        f"{report['date']}, {report['device']}, {report['machine']}, torch {report['torch']}",
        "",
        "| kernel | median ms | speed-up vs the loop | thresholds equal to the loop's |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in report["rows"]:
        equal = (
            "-"
            if row["equal_thresholds"] is None
            else (f"{row['equal_thresholds']} of {report['classes']}")
        )
        lines.append(
            f"| {row['kernel']} | {row['median_ms']:.2f} | {row['speedup_vs_loop']:.1f}x | "
            f"{equal} |"
        )
    return "\n".join(lines)
