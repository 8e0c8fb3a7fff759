"""The detection comparison: pseudo-box selectors in a teacher–student detector, on CPU.

Trains ``train_teacher_detection`` (a small CenterNet on digit-mosaic detection, EMA
teacher, weak/strong views) with each selector of its ``RUNS`` — supervised only, the fixed
score threshold at 0.5 / 0.7 / 0.9, Consistent-Teacher's GMM (``"gmm"``), Dense Teacher's
top share (``"top_ratio"``), Efficient Teacher's dual thresholds, FreeMatch's class-wise
thresholds and CSL, all on the teacher's box scores — over paired seeds (a seed fixes the
data, the initialisation and the batch order for every run). Reports, per run, the mean ±
std over seeds of the final test mAP@0.5 and mAP@[0.5:0.95] (pycocotools' COCOeval) and of
the pseudo-boxes' precision, recall and share kept against the hidden true boxes, and each
run's paired difference to the fixed threshold at 0.7 (Unbiased Teacher's) and, for
mAP@0.5, to the supervised-only baseline and to the threshold at 0.5, with 95% bootstrap
intervals.

A separate command, like the threshold sweep (the main job stays under 30 minutes), and
resumable like it: each finished run is written at once and reused when the same code made
it (``--fresh`` trains everything again).

    python examples/detection_comparison.py [--seeds 3] [--out results/detection] \\
        [--fresh] [--quick] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare_selectors as compare  # noqa: E402
import train_teacher_detection as detection  # noqa: E402

TASK = "teacher_detection"
REFERENCE = "threshold@0.7"
METRICS = ("test_map50", "test_map")
QUICK_RUNS = ("supervised", "threshold@0.7", "gmm")
QUICK_OPTIONS = {"epochs": 3, "warmup_epochs": 1, "labelled": 16, "unlabelled": 64, "test": 32}


def plan(quick: bool, seeds: int) -> list[tuple[int, str]]:
    """Every run as (seed, run name), seed by seed, so a stopped job leaves whole seeds."""
    names = QUICK_RUNS if quick else tuple(detection.RUNS)
    return [(seed, name) for seed in range(seeds) for name in names]


def summarise(results: dict, seeds: int, done: int, total: int, quick: bool) -> tuple[str, dict]:
    """The summary markdown and its data, from the runs finished so far."""
    status = "complete" if done == total else f"partial: {done} of {total} runs"
    options = QUICK_OPTIONS if quick else {}
    lines = [
        "# Detection comparison" + (" (quick smoke test)" if quick else "") + f" — {status}",
        "",
        f"{date.today().isoformat()} · {platform.machine()} · one torch thread per run · "
        f"torch {torch.__version__} · {seeds} paired seed(s). Teacher–student CenterNet on "
        "40x40 digit-mosaic detection (train_teacher_detection.py defaults"
        + (f", {options}" if options else "")
        + "). Final epoch, mean ± std over seeds; the pseudo-boxes' precision, recall and "
        "share kept (ratio) are measured against the hidden true boxes of the unlabelled "
        "canvases, over the last epoch (precision `-`: nothing kept).",
        "",
        "| run | seeds | mAP@0.5 | mAP@[0.5:0.95] | pseudo-box precision | recall | kept (ratio) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    data: dict = {"runs": {}, "paired": {}}
    for name in (n for n in detection.RUNS if n in results):
        finals = [h[-1] for h in results[name].values()]
        cells = {
            key: compare.mean_std([f.get(key) for f in finals])
            for key in (*METRICS, "precision", "recall", "ratio")
        }
        data["runs"][name] = cells
        text = " | ".join(compare._cell(*cells[key]) for key in cells)
        lines.append(f"| {name} | {len(results[name])} | {text} |")
    # the reference (Unbiased Teacher's threshold) on both metrics; on mAP@0.5 also the
    # supervised-only baseline (does the unlabelled data pay?) and the lowest fixed threshold
    comparisons = [(metric, REFERENCE) for metric in METRICS]
    comparisons += [(METRICS[0], "supervised"), (METRICS[0], "threshold@0.5")]
    for metric, against in comparisons:
        if against not in results:  # e.g. --quick has no threshold@0.5 run
            continue
        reference = results[against]
        lines += [
            "",
            f"Paired difference of {metric} to `{against}` (same seeds), mean and 95% "
            f"bootstrap CI; a verdict needs the interval to exclude 0 (and ≥ "
            f"{compare.MIN_PAIRS} seeds):",
            "",
            "| run | pairs | difference | 95% CI | verdict |",
            "| --- | ---: | ---: | --- | --- |",
        ]
        for name in (n for n in detection.RUNS if n in results and n != against):
            shared = sorted(set(results[name]) & set(reference))
            r = compare.paired_difference(
                [results[name][s][-1][metric] for s in shared],
                [reference[s][-1][metric] for s in shared],
            )
            key = metric if against == REFERENCE else f"{metric} vs {against}"
            data["paired"].setdefault(key, {})[name] = r
            mean = "-" if math.isnan(r["mean"]) else f"{r['mean']:+.3f}"
            ci = "-" if math.isnan(r["low"]) else f"[{r['low']:+.3f}, {r['high']:+.3f}]"
            lines.append(f"| {name} | {r['n']} | {mean} | {ci} | {r['verdict']} |")
    return "\n".join(lines) + "\n", data


def run_comparison(
    seeds: int, out: Path, quick: bool, device: str, *, fresh: bool, jobs: int = 1, log=print
) -> dict:
    """Train (or load) every run, ``jobs`` at a time; refresh the summary after each one."""
    todo = plan(quick, seeds)
    results: dict = {}
    trained: dict[str, list[float]] = {TASK: []}
    remaining = list(todo)
    start = time.time()

    def record(item: tuple, stored: dict, what: str) -> None:
        seed, name = item
        if what.startswith("trained"):
            trained[TASK].append(stored["seconds"])
        results.setdefault(name, {})[seed] = stored["history"]
        remaining.remove(item)
        done = len(todo) - len(remaining)
        summary, data = summarise(results, seeds, done, len(todo), quick)
        compare.write_atomic(out / "summary.md", summary)
        compare.write_atomic(out / "results.json", json.dumps(data, indent=2))
        timing = compare.progress(start, [(s, TASK) for s, _ in remaining], trained, jobs)
        log(f"[{done}/{len(todo)}] {name} seed{seed} {what} ({timing})")

    runs = [
        (
            (seed, name),
            TASK,
            name,
            name,
            {"seed": seed, **(QUICK_OPTIONS if quick else {})},
            out / name / f"seed{seed}",
        )
        for seed, name in todo
    ]
    compare.train_or_load(runs, jobs, device, record, fresh=fresh)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="paired seeds (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, 3 runs, a few epochs: a smoke test"
    )
    parser.add_argument("--out", type=Path, default=None, help="default: results/detection")
    parser.add_argument("--fresh", action="store_true", help="train every run again")
    compare.add_parallel_options(parser)
    args = parser.parse_args(argv)
    jobs = compare.parallel_jobs(parser, args)
    seeds = 1 if args.quick else args.seeds
    out = args.out or Path("results/detection-quick" if args.quick else "results/detection")
    start = time.time()
    run_comparison(seeds, out, args.quick, args.device, fresh=args.fresh, jobs=jobs)
    print((out / "summary.md").read_text())
    print(f"wrote {out / 'summary.md'} and results.json ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
