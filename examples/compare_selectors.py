"""The selector comparison on real offline data — the README's main job.

Runs the example trainers over several seeds, each task with the supervised-only baseline
and the selectors that fit it:

- FixMatch on scikit-learn digits (balanced): the threshold, FlexMatch, FreeMatch,
  SoftMatch, Adsh, the precision-targeted selector (calibrated on 2 of the 4 labelled digits
  per class), CGMatch, ShrinkMatch and CSL.
- FixMatch on long-tailed digits (imbalance ratio 10 in the labelled and the unlabelled
  data, a balanced test set; the main metric is the balanced accuracy, the worst class's
  recall beside it): the threshold, FlexMatch, FreeMatch, SoftMatch, Adsh, the class-prior
  thresholds, CGMatch, ShrinkMatch and CSL; and the same runs where the unlabelled classes
  fall in the opposite order (the labelled distribution is then a wrong prior).
- UniMatch on digit mosaics: the threshold, FlexMatch, FreeMatch, SoftMatch, CorrMatch's
  threshold, S4MC, the class-prior thresholds, CSL, and CSL with Trusted Mask Perturbation.

Seeds are paired: a seed fixes the data split, the initialisation and the batch order for
every selector of a task. Prints, per task, the mean ± std over seeds of the final test
metric and of the pseudo-label precision and coverage, and each selector's paired
difference to the fixed threshold with a 95% bootstrap confidence interval; writes
``summary.md``, ``results.json`` and plots to ``--out``. ``--seeds`` is the most seeds a
task runs; the mosaics, the balanced digits and the reversed long-tailed digits run 3
(:data:`SEEDS_CAP`) to keep the job within 30 minutes on 2 cores.

Robust to interruption: each run's folder gets its per-epoch JSON and a ``result.json``
marker as soon as it finishes, and the summary, JSON and plots are refreshed after every run
(marked "partial: k of n runs" until the last). Re-running the command skips finished runs
that the same code produced — the marker stores pseudosel's version and a hash of the
library's sources and of the example modules the trainers import (:func:`code_version`); a
run made by other code is trained again, and the job says so. ``--fresh`` trains everything
again. ``--quick`` writes to ``results/comparison-quick``.
Runs train ``--jobs`` at a time (default: one per CPU core, at most 4), each on one torch
thread, so the numbers do not depend on ``--jobs``.

    python examples/compare_selectors.py [--quick] [--seeds 5] [--out results/comparison] \\
        [--fresh] [--jobs 2]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_fixmatch_digits  # noqa: E402
import train_unimatch_mosaics  # noqa: E402

import pseudosel  # noqa: E402
from pseudosel.tools import plots as plotting  # noqa: E402

# task → (module, main metric, [(run name, selector, extra train options)])
CLASSIFICATION = [
    (name, name, {})
    for name in (
        "supervised",
        "threshold",
        "flexmatch",
        "freematch",
        "softmatch",
        "adsh",
        "precision_target",
        "cgmatch",
        "shrinkmatch",
        "csl",
    )
]
LONG_TAILED = [
    (name, name, {})
    for name in (
        "supervised",
        "threshold",
        "flexmatch",
        "freematch",
        "softmatch",
        "adsh",
        "class_prior",
        "cgmatch",
        "shrinkmatch",
        "csl",
    )
]
SEGMENTATION = [
    (name, name, {})
    for name in (
        "supervised",
        "threshold",
        "flexmatch",
        "freematch",
        "softmatch",
        "corrmatch",
        "s4mc",
        "class_prior",
    )
] + [("csl", "csl", {}), ("csl+tmp", "csl", {"tmp": True})]
QUICK_CLASSIFICATION = [
    (n, s, o) for n, s, o in CLASSIFICATION if n in ("supervised", "threshold", "csl")
]
QUICK_LONG_TAILED = [
    (n, s, o) for n, s, o in LONG_TAILED if n in ("supervised", "threshold", "class_prior")
]
QUICK_SEGMENTATION = [
    (n, s, o) for n, s, o in SEGMENTATION if n in ("supervised", "threshold", "csl", "csl+tmp")
]
#: the most seeds a task runs (``--seeds`` caps the rest): the comparison stays within 30
#: minutes on 2 cores with the mosaics (about a minute a run), the balanced digits (20 s) and
#: the reversed long-tailed digits on 3 seeds, the long-tailed digits on 5 (10 s a run)
SEEDS_CAP = {"unimatch_mosaics": 3, "fixmatch_digits": 3, "longtail_reversed_digits": 3}
#: long-tailed digits: 20 labelled digits in the head class down to 2 in the tail, 110
#: unlabelled down to 11 (imbalance ratio 10 in both), a balanced test set
LONG_TAILED_OPTIONS = {"epochs": 60, "labels_per_class": 20, "imbalance": 10.0}
QUICK_LONG_TAILED_OPTIONS = {"epochs": 4, "warmup_epochs": 2, "labels_per_class": 20}
QUICK_LONG_TAILED_OPTIONS["imbalance"] = 10.0
#: the long-tailed tasks' metrics: the main one first, then the ones shown and paired beside
LONG_TAILED_METRICS = ("test_balanced_accuracy", "test_worst_class_recall", "test_accuracy")
#: the run every selector is compared with, seed by seed
REFERENCE = "threshold"
#: selection quality along training, plotted per epoch (mean over seeds)
QUALITY = (("precision", "pseudo-label precision"), ("ratio", "pseudo-label coverage"))
QUALITY += (("mean_weight", "mean pseudo-label weight"),)
#: fewest paired seeds for which a verdict is given
MIN_PAIRS = 3
MARKER = "result.json"


def tasks(quick: bool) -> dict[str, dict]:
    """The tasks with their trainer, metric (``metrics``: the main one first, then the ones
    shown and paired beside it), runs and training settings."""
    long_tailed = QUICK_LONG_TAILED_OPTIONS if quick else LONG_TAILED_OPTIONS
    return {
        "fixmatch_digits": {
            "train": train_fixmatch_digits.train,
            "metric": "test_accuracy",
            "runs": QUICK_CLASSIFICATION if quick else CLASSIFICATION,
            "options": (
                {"epochs": 4, "warmup_epochs": 2, "labels_per_class": 4}
                if quick
                else {"epochs": 60, "labels_per_class": 4}
            ),
        },
        **{
            task: {
                "train": train_fixmatch_digits.train,
                "metric": LONG_TAILED_METRICS[0],
                "metrics": LONG_TAILED_METRICS,
                "runs": QUICK_LONG_TAILED if quick else LONG_TAILED,
                "options": {**long_tailed, "unlabelled_profile": profile},
            }
            for task, profile in (
                ("longtail_digits", "same"),
                ("longtail_reversed_digits", "reversed"),
            )
        },
        "unimatch_mosaics": {
            "train": train_unimatch_mosaics.train,
            "metric": "test_miou",
            "runs": QUICK_SEGMENTATION if quick else SEGMENTATION,
            "options": (
                {"epochs": 2, "warmup_epochs": 1, "labelled": 16, "unlabelled": 32, "test": 16}
                if quick
                else {"labels_per_class": 4}
            ),
        },
    }


def mean_std(values: list[float | None]) -> tuple[float, float]:
    clean = [v for v in values if v is not None and math.isfinite(v)]
    if not clean:
        return float("nan"), float("nan")
    return statistics.fmean(clean), statistics.stdev(clean) if len(clean) > 1 else 0.0


def paired_difference(
    values: Sequence[float],
    reference: Sequence[float],
    *,
    resamples: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Mean of the per-seed differences ``values - reference`` with a percentile bootstrap CI.

    The seeds are resampled with replacement ``resamples`` times (numpy, seeded, so the
    interval is reproducible). The verdict is ``"better"`` or ``"worse"`` only when the
    interval excludes 0, ``"no difference"`` when it contains 0, and ``"too few seeds"``
    below ``MIN_PAIRS`` pairs (then ``low``/``high`` are NaN).

    Args:
        values: the selector's metric, one per seed.
        reference: the reference run's metric on the same seeds, same order.

    Returns:
        ``{"n", "mean", "low", "high", "verdict"}``.

    Example:
        >>> r = paired_difference([0.9, 0.8, 0.85, 0.9], [0.8, 0.7, 0.8, 0.8])
        >>> round(r["mean"], 3), r["verdict"]
        (0.087, 'better')
    """
    diff = np.asarray(values, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    if diff.ndim != 1:
        raise ValueError(f"values and reference: expected 1-D sequences, got shape {diff.shape}")
    diff = diff[np.isfinite(diff)]
    n = int(diff.size)
    if n == 0:
        return {"n": 0, "mean": math.nan, "low": math.nan, "high": math.nan, "verdict": "-"}
    mean = float(diff.mean())
    if n < MIN_PAIRS:
        return {"n": n, "mean": mean, "low": math.nan, "high": math.nan, "verdict": "too few seeds"}
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = (float(q) for q in np.quantile(means, [alpha, 1 - alpha]))
    verdict = "better" if low > 0 else "worse" if high < 0 else "no difference"
    return {"n": n, "mean": mean, "low": low, "high": high, "verdict": verdict}


def plan(quick: bool, seeds: int) -> list[tuple[int, str, str, str, dict]]:
    """Every run as (seed, task, run name, selector, extra options), seed by seed, so a
    stopped comparison leaves complete seeds to pair."""
    spec = tasks(quick)
    return [
        (seed, task, name, selector, extra)
        for seed in range(seeds)
        for task, block in spec.items()
        if seed < SEEDS_CAP.get(task, seeds)
        for name, selector, extra in block["runs"]
    ]


def metrics_of(block: dict) -> tuple[str, ...]:
    """A task's metrics: the main one first, then the ones shown beside it."""
    return tuple(block.get("metrics", (block["metric"],)))


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and a rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def code_sources() -> list[Path]:
    """Every source that decides a training result: the library (its command-line tools
    aside) and the example modules the trainers import (data, views, models, the trainers
    themselves, selector set-up)."""
    library = Path(pseudosel.__file__).resolve().parent
    tools = library / "tools"
    sources = sorted(p for p in library.rglob("*.py") if tools not in p.parents)
    here = Path(__file__).resolve().parent
    sources += sorted(
        Path(module.__file__).resolve()
        for module in list(sys.modules.values())
        if getattr(module, "__file__", None)
        and Path(module.__file__).resolve().parent == here
        and Path(module.__file__).stem
        not in ("compare_selectors", "threshold_sweep", "detection_comparison")
    )
    return sources


def sources_hash(sources: list[Path]) -> str:
    """16 hex digits of the SHA-256 of the files' names and contents, in order."""
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.cache
def code_version() -> dict:
    """What produced a run: pseudosel's version and :func:`sources_hash` of
    :func:`code_sources`, stored with every run."""
    return {"pseudosel": pseudosel.__version__, "sources": sources_hash(code_sources())}


def finished_run(folder: Path, options: dict) -> tuple[dict | None, str]:
    """``(stored, "")`` for the run in ``folder`` when it finished with the same options and
    was made by this code (:func:`code_version`), else ``(None, why it is not reused)``."""
    try:
        stored = json.loads((folder / MARKER).read_text())
    except OSError:
        return None, ""
    except ValueError:
        return None, "its result.json is unreadable"
    if stored.get("options") != options or not stored.get("history"):
        return None, "it ran with other options" if stored.get("history") else ""
    made_by = stored.get("code")
    if made_by != code_version():
        return (
            None,
            f"it was made by other code ({_describe(made_by)} -> {_describe(code_version())})",
        )
    return stored, ""


def _describe(code: dict | None) -> str:
    if not isinstance(code, dict):
        return "unrecorded"
    return f"pseudosel {code.get('pseudosel')}, sources {code.get('sources')}"


def load_finished(folder: Path, options: dict) -> dict | None:
    """The stored run in ``folder`` if it can be reused (:func:`finished_run`), else None."""
    return finished_run(folder, options)[0]


def summarise(results: dict) -> dict:
    """Per task and run: mean ± std over seeds of the final metric, precision, coverage."""
    table: dict = {}
    for task, block in results.items():
        table[task] = {}
        for name, by_seed in block["runs"].items():
            finals = [h[-1] for h in by_seed.values()]
            table[task][name] = {
                key: mean_std([f.get(key) for f in finals])
                for key in (*metrics_of(block), "precision", "ratio", "mean_weight")
            }
    return table


def compare_to_reference(results: dict) -> dict:
    """Per task and selector: the paired difference of the final metric to ``REFERENCE``
    (``paired[task][name]``); for a task with several metrics, the others' under
    ``paired[task + ":" + metric][name]``."""
    paired: dict = {}
    for task, block in results.items():
        reference = block["runs"].get(REFERENCE, {})
        for i, metric in enumerate(metrics_of(block)):
            key = task if i == 0 else f"{task}:{metric}"
            paired[key] = {}
            for name, by_seed in block["runs"].items():
                if name in (REFERENCE, "supervised"):
                    continue
                seeds = sorted(set(by_seed) & set(reference))
                paired[key][name] = paired_difference(
                    [by_seed[s][-1][metric] for s in seeds],
                    [reference[s][-1][metric] for s in seeds],
                )
    return paired


def _cell(mean: float, std: float) -> str:
    return "-" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def markdown_table(
    task: str, metric: str | Sequence[str], rows: dict, seeds: dict | None = None
) -> list[str]:
    """The task's table: one row per run; ``metric`` one name or several (main first)."""
    metrics = (metric,) if isinstance(metric, str) else tuple(metric)
    lines = [
        f"### {task}",
        "",
        f"| run | seeds | {' | '.join(metrics)} | pseudo-label precision | coverage (ratio) "
        "| mean weight |",
        "| --- |" + " ---: |" * (len(metrics) + 4),
    ]
    for name, stats in rows.items():
        keys = (*metrics, "precision", "ratio", "mean_weight")
        cells = [_cell(*stats[key]) for key in keys]
        count = "" if seeds is None else str(seeds.get(name, ""))
        lines.append(f"| {name} | {count} | " + " | ".join(cells) + " |")
    return lines


def paired_table(metric: str, rows: dict) -> list[str]:
    lines = [
        "",
        f"Paired difference of {metric} to `{REFERENCE}` (same seeds), mean and 95% "
        f"bootstrap CI; a verdict needs the interval to exclude 0 (and ≥ {MIN_PAIRS} seeds):",
        "",
        "| selector | pairs | difference | 95% CI | verdict |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for name, r in rows.items():
        mean = "-" if math.isnan(r["mean"]) else f"{r['mean']:+.3f}"
        ci = "-" if math.isnan(r["low"]) else f"[{r['low']:+.3f}, {r['high']:+.3f}]"
        lines.append(f"| {name} | {r['n']} | {mean} | {ci} | {r['verdict']} |")
    return lines


def plots(results: dict, out: Path) -> list[Path]:
    paths = []
    for task, block in results.items():
        metric = block["metric"]
        for key, label in ((metric, metric), *QUALITY):
            curves, bands = {}, {}
            for name, by_seed in block["runs"].items():
                histories = list(by_seed.values())
                length = min(len(h) for h in histories)
                per_epoch = [[h[e].get(key) for h in histories] for e in range(length)]
                stats = [mean_std(values) for values in per_epoch]
                if all(math.isnan(m) for m, _ in stats):
                    continue
                curves[name] = [m for m, _ in stats]
                bands[name] = [0.0 if math.isnan(s) else s for _, s in stats]
            if curves:
                paths.append(
                    plotting.plot_curves(
                        curves,
                        out / f"{task}_{key}.png",
                        ylabel=label,
                        title=f"{task}: {label} (mean ± std over seeds)",
                        bands=bands,
                    )
                )
    return paths


def write_outputs(
    results: dict, out: Path, *, quick: bool, seeds: int, done: int, total: int, device: str
) -> str:
    """Write summary.md, results.json and the plots from the runs finished so far."""
    setting = tasks(quick)
    table = summarise(results)
    paired = compare_to_reference(results)
    seconds = sum(results[t]["seconds"] for t in results)
    status = "complete" if done == total else f"partial: {done} of {total} runs"
    lines = [
        "# Selector comparison" + (" (quick smoke test)" if quick else "") + f" — {status}",
        "",
        f"{date.today().isoformat()} · {platform.machine()} · one torch thread per run · "
        f"torch {torch.__version__} · device {device} · {seeds} seed(s) · "
        f"training time {seconds / 60:.1f} min (sum over the finished runs)",
        "",
        "Settings: FixMatch on digits — `labels_per_class` labelled digits per class, the "
        f"rest unlabelled, {setting['fixmatch_digits']['options']}; UniMatch (EMA teacher) on "
        "24x24 digit mosaics — labelled canvases built from the labelled digits (64 labelled, "
        "512 unlabelled, 256 test unless the options say otherwise), "
        f"{setting['unimatch_mosaics']['options']}; long-tailed digits — "
        f"{setting['longtail_digits']['options']} (labelled and unlabelled counts fall "
        "geometrically from the head class to the tail class, whose digit a seed picks; "
        "`longtail_reversed_digits`: the unlabelled counts in the opposite order; balanced "
        "test set). Values are the final "
        "epoch's, mean ± std over seeds; precision and coverage are measured against the "
        "hidden true labels of the unlabelled data (precision `-`: nothing was selected). "
        "Seeds are paired: the same seed gives every run of a task the same split, "
        "initialisation and batch order (precision_target trains on half the labelled "
        "digits and calibrates on the other half, so its difference mixes both).",
        "",
    ]
    for task, rows in table.items():
        counts = {name: len(by_seed) for name, by_seed in results[task]["runs"].items()}
        metrics = metrics_of(results[task])
        lines += markdown_table(task, metrics, rows, counts)
        for i, metric in enumerate(metrics):
            key = task if i == 0 else f"{task}:{metric}"
            if paired[key]:
                lines += paired_table(metric, paired[key])
        lines.append("")
    summary = "\n".join(lines)
    write_atomic(out / "summary.md", summary)
    runs = {
        task: {name: [by_seed[s] for s in sorted(by_seed)] for name, by_seed in b["runs"].items()}
        for task, b in results.items()
    }
    record = {
        "status": status,
        "finished": done,
        "total": total,
        "setting": {k: v["options"] for k, v in setting.items()},
        "seeds": seeds,
        "training_seconds": seconds,
        "summary": table,
        "paired": paired,
        "runs": runs,
    }
    write_atomic(out / "results.json", json.dumps(record, indent=2))
    plots(results, out)
    return summary


#: trainers of the separate commands' tasks, imported when one of their runs trains
OTHER_TRAINERS = {"teacher_detection": "train_teacher_detection"}


def trainer_of(task: str):
    """The ``train`` function of ``task``: the main job's, or a separate command's."""
    if task in OTHER_TRAINERS:
        return importlib.import_module(OTHER_TRAINERS[task]).train
    return tasks(False)[task]["train"]


def train_one(task: str, selector: str, options: dict, folder: str, device: str):
    """Train one run on one torch thread; return ``(history, seconds)``.

    Every run uses one thread whether it runs in-process (``--jobs 1``) or in a worker, so
    a run's numbers do not depend on ``--jobs``; on a small CPU, separate runs side by side
    use the cores better than two threads inside one run of these small networks."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        begin = time.time()
        trainer = trainer_of(task)
        history = trainer(selector, device=device, out=Path(folder), progress=False, **options)
        return history, time.time() - begin
    finally:
        torch.set_num_threads(threads)


def execute(items: list, jobs: int, device: str, finished) -> None:
    """Train ``items`` — ``(key, task, selector, options, folder)`` — ``jobs`` at a time;
    call ``finished(key, history, seconds)`` in the parent as each one completes (in
    order with ``jobs=1``, in completion order otherwise)."""
    if jobs <= 1 or len(items) <= 1:
        for key, task, selector, options, folder in items:
            finished(key, *train_one(task, selector, options, str(folder), device))
        return
    # spawn, not fork: a forked child of a process that used OpenMP threads can hang
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(jobs, len(items)), mp_context=context) as pool:
        pending = {
            pool.submit(train_one, task, selector, options, str(folder), device): key
            for key, task, selector, options, folder in items
        }
        try:
            for future in as_completed(pending):
                finished(pending[future], *future.result())
        except BaseException:
            # a failed run (or Ctrl-C) stops the job at once: runs not started are dropped,
            # the finished ones are already written
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def train_or_load(
    runs: list,
    jobs: int,
    device: str,
    record,
    *,
    fresh: bool = False,
    reuse=None,
) -> None:
    """Load every finished run, train the others ``jobs`` at a time, and call
    ``record(key, stored, what)`` for each (the loaded ones first).

    ``runs``: ``(key, task, name, selector, options, folder)``; a run is finished when
    ``folder`` holds a marker with the same options. ``reuse(key, options)`` may return
    ``(stored, what)`` for a run found elsewhere, else ``(None, "")``; ``fresh`` ignores
    both. A trained run's marker is written as soon as it finishes."""
    to_train = []
    for key, task, name, selector, options, folder in runs:
        stored, what, why = None, "loaded (finished before)", ""
        if not fresh:
            stored, why = finished_run(folder, options)
            if stored is None and reuse is not None:
                stored, what = reuse(key, options)
        if stored is None:
            entry = (key, task, name, options, folder, why)
            to_train.append((entry, task, selector, options, folder))
        else:
            record(key, stored, what)

    def finished(entry: tuple, history: list, seconds: float) -> None:
        key, task, name, options, folder, why = entry
        stored = {"task": task, "run": name, "options": options, "seconds": seconds}
        stored["code"] = code_version()
        stored["history"] = history
        write_atomic(folder / MARKER, json.dumps(stored, indent=2))
        record(key, stored, "trained" + (f" again: {why}" if why else ""))

    execute(to_train, jobs, device, finished)


def run_all(
    seeds: int,
    out: Path,
    quick: bool,
    device: str,
    *,
    fresh: bool = False,
    jobs: int = 1,
    log=print,
) -> tuple[dict, int, int]:
    """Train (or load) every run of the plan, ``jobs`` at a time; refresh the outputs after
    each one."""
    spec = tasks(quick)
    todo = plan(quick, seeds)
    results: dict = {
        task: {
            "metric": block["metric"],
            "metrics": metrics_of(block),
            "options": block["options"],
            "runs": {},
            "seconds": 0.0,
        }
        for task, block in spec.items()
    }
    start = time.time()
    trained_seconds: dict[str, list[float]] = {task: [] for task in spec}
    remaining = list(todo)
    done = 0

    def record(item: tuple, stored: dict, what: str) -> None:
        nonlocal done
        seed, task, name, _, _ = item
        results[task]["runs"].setdefault(name, {})[seed] = stored["history"]
        results[task]["seconds"] += stored["seconds"]
        done += 1
        remaining.remove(item)
        write_outputs(
            results, out, quick=quick, seeds=seeds, done=done, total=len(todo), device=device
        )
        timing = progress(start, remaining, trained_seconds, jobs)
        log(f"[{done}/{len(todo)}] {task} {name} seed{seed} {what} ({timing})")

    runs = []
    for item in todo:
        seed, task, name, selector, extra = item
        options = {"seed": seed, **spec[task]["options"], **extra}
        runs.append((item, task, name, selector, options, out / task / name / f"seed{seed}"))

    def counted(item: tuple, stored: dict, what: str) -> None:
        if what.startswith("trained"):
            trained_seconds[item[1]].append(stored["seconds"])
        record(item, stored, what)

    train_or_load(runs, jobs, device, counted, fresh=fresh)
    return results, done, len(todo)


def progress(start: float, remaining: list, trained: dict[str, list[float]], jobs: int = 1) -> str:
    """``elapsed 1.2 min, ETA 3.4 min`` from the mean time per run of each task so far,
    divided among ``jobs`` parallel runs."""
    elapsed = time.time() - start
    every = [s for times in trained.values() for s in times]
    if not remaining:
        return f"elapsed {elapsed / 60:.1f} min, done"
    if not every:
        return f"elapsed {elapsed / 60:.1f} min, ETA -"
    mean = {task: statistics.fmean(times or every) for task, times in trained.items()}
    eta = sum(mean.get(task, statistics.fmean(every)) for _, task, *_ in remaining)
    return f"elapsed {elapsed / 60:.1f} min, ETA {eta / max(1, jobs) / 60:.1f} min"


def default_jobs() -> int:
    """Parallel runs by default: one per CPU core (as the OS reports them), at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may use
    except AttributeError:  # not on every OS
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def output_folder(out: Path | None, quick: bool) -> Path:
    """``--out`` if given, else ``results/comparison`` (``results/comparison-quick``)."""
    if out is not None:
        return out
    return Path("results/comparison-quick" if quick else "results/comparison")


def add_parallel_options(parser: argparse.ArgumentParser) -> None:
    """``--jobs`` and ``--device``, as every comparison command takes them."""
    parser.add_argument(
        "--jobs",
        type=int,
        default=default_jobs(),
        help="runs trained side by side, one torch thread each (default: the CPU count, "
        "at most 4; 1 on a GPU)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def parallel_jobs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The runs to train side by side: ``--jobs`` on the CPU (refused below 1), 1 on a GPU."""
    if args.jobs < 1:
        parser.error(f"--jobs: expected a positive number of parallel runs, got {args.jobs}")
    return 1 if args.device != "cpu" else args.jobs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="paired seeds (default 5)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 seed, a few epochs, 3-4 runs per task: a smoke test "
        "(writes to results/comparison-quick unless --out is given)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: results/comparison)"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="train every run again, ignoring finished ones"
    )
    add_parallel_options(parser)
    args = parser.parse_args(argv)
    jobs = parallel_jobs(parser, args)
    seeds = 1 if args.quick else args.seeds
    out = output_folder(args.out, args.quick)
    start = time.time()
    run_all(seeds, out, args.quick, args.device, fresh=args.fresh, jobs=jobs)
    summary = (out / "summary.md").read_text()
    print(summary)
    print(f"wrote {out / 'summary.md'}, results.json and plots ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
