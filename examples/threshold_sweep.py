"""Threshold sensitivity: does CSL remove the threshold to tune?

Trains the fixed-threshold selector at τ ∈ {0.5, 0.7, 0.8, 0.9, 0.95, 0.99} and CSL (default
options) on both example tasks — FixMatch on digits and UniMatch on digit mosaics — at two
labelled budgets each, over paired seeds, with every other setting as in the main job
(``compare_selectors.py``). For every task and budget it reports each τ's final metric, the
best τ in hindsight, and CSL's regret: (metric of the best τ) − (metric of CSL) and
(metric of τ = 0.95) − (metric of CSL), each with a paired 95% bootstrap interval. The best τ
is picked on the same seeds and test metric it is scored on, which favours the threshold: a
user tuning τ would not get to see the test set.

Resumable like the main job: each finished run is written at once (``result.json``) and the
summary is refreshed after every run; re-running skips finished runs (``--fresh`` starts over).
Runs that the main job already finished with identical options are reused from its folder
(``--reuse``, default ``results/comparison``).

    python examples/threshold_sweep.py [--seeds 3] [--out results/sweep] [--fresh] [--quick] \\
        [--jobs 2]
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

#: the thresholds swept (FixMatch's default is 0.95)
TAUS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
DEFAULT_TAU = 0.95
#: two labelled budgets per task, as labelled digits per class (the main job's is first)
BUDGETS = {"fixmatch_digits": (4, 10), "unimatch_mosaics": (4, 10)}


def runs() -> list[tuple[str, str, dict]]:
    """(run name, selector, extra options) of one task and budget: every τ, then CSL."""
    return [(f"threshold@{tau}", "threshold", {"tau": tau}) for tau in TAUS] + [("csl", "csl", {})]


def plan(quick: bool, seeds: int) -> list[tuple[int, str, int, str, str, dict]]:
    """Every run as (seed, task, budget, run name, selector, options), seed by seed."""
    spec = compare.tasks(quick)
    todo = []
    for seed in range(seeds):
        for task, budgets in BUDGETS.items():
            for budget in budgets[:1] if quick else budgets:
                for name, selector, extra in runs():
                    if quick and name not in (f"threshold@{DEFAULT_TAU}", "csl"):
                        continue
                    options = {
                        "seed": seed,
                        **spec[task]["options"],
                        "labels_per_class": budget,
                        **extra,
                    }
                    if extra.get("tau") == DEFAULT_TAU:
                        del options["tau"]  # the trainer's default: same run as the main job's
                    todo.append((seed, task, budget, name, selector, options))
    return todo


def main_job_name(name: str) -> str:
    """The main job's name for a sweep run (``threshold@0.95`` is its ``threshold``)."""
    return "threshold" if name == f"threshold@{DEFAULT_TAU}" else name


def regret(results: dict, metric: str, name: str) -> dict:
    """CSL's paired regret to the threshold run ``name``: threshold − CSL per seed."""
    csl, other = results.get("csl", {}), results.get(name, {})
    seeds = sorted(set(csl) & set(other))
    return compare.paired_difference(
        [other[s][-1][metric] for s in seeds], [csl[s][-1][metric] for s in seeds]
    )


def summarise(results: dict, seeds: int, done: int, total: int, quick: bool) -> tuple[str, dict]:
    """The summary markdown and its data, from the runs finished so far."""
    spec = compare.tasks(quick)
    status = "complete" if done == total else f"partial: {done} of {total} runs"
    lines = [
        "# Threshold sensitivity" + (" (quick smoke test)" if quick else "") + f" — {status}",
        "",
        f"{date.today().isoformat()} · {platform.machine()} · one torch thread per run "
        f"· torch {torch.__version__} · {seeds} paired seed(s). Final-epoch metric, "
        "mean ± std over seeds. Regret = metric of the threshold run − metric of CSL, per "
        "seed, mean and 95% bootstrap interval; the best τ is chosen in hindsight on the "
        "same seeds (an advantage no real user has).",
        "",
    ]
    data: dict = {}
    for (task, budget), by_run in results.items():
        metric = spec[task]["metric"]
        lines += [
            f"### {task}, {budget} labelled digits per class",
            "",
            f"| run | seeds | {metric} | pseudo-label precision | coverage (ratio) |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        means = {}
        order = [name for name, _, _ in runs() if name in by_run]  # every τ, then CSL
        for name, by_seed in ((name, by_run[name]) for name in order):
            finals = [h[-1] for h in by_seed.values()]
            cells = [
                compare.mean_std([f.get(k) for f in finals]) for k in (metric, "precision", "ratio")
            ]
            means[name] = cells[0][0]
            text = " | ".join(compare._cell(*c) for c in cells)
            lines.append(f"| {name} | {len(by_seed)} | {text} |")
        taus = {n: m for n, m in means.items() if n.startswith("threshold@") and not math.isnan(m)}
        entry: dict = {"metric": metric, "means": means}
        if taus and "csl" in by_run:
            best = max(taus, key=taus.__getitem__)
            entry["best_tau"] = best
            entry["regret_to_best"] = regret(by_run, metric, best)
            entry["regret_to_default"] = regret(by_run, metric, f"threshold@{DEFAULT_TAU}")
            lines += ["", "| CSL's regret to | pairs | regret | 95% CI | verdict (CSL vs it) |"]
            lines.append("| --- | ---: | ---: | --- | --- |")
            for label, r in (
                (f"best τ in hindsight ({best})", entry["regret_to_best"]),
                (f"τ = {DEFAULT_TAU}", entry["regret_to_default"]),
            ):
                if r["n"] == 0:
                    continue
                ci = "-" if math.isnan(r["low"]) else f"[{r['low']:+.3f}, {r['high']:+.3f}]"
                flip = {"better": "worse", "worse": "better"}.get(r["verdict"], r["verdict"])
                lines.append(f"| {label} | {r['n']} | {r['mean']:+.3f} | {ci} | {flip} |")
        data[f"{task}/{budget}"] = entry
        lines.append("")
    return "\n".join(lines), data


def run_sweep(
    seeds: int,
    out: Path,
    quick: bool,
    device: str,
    *,
    fresh: bool,
    reuse: Path | None,
    jobs: int = 1,
    log=print,
) -> dict:
    """Train (or load) every run of the sweep, ``jobs`` at a time; refresh the summary after
    each one."""
    spec = compare.tasks(quick)
    todo = plan(quick, seeds)
    results: dict = {}
    trained: dict[str, list[float]] = {task: [] for task in spec}
    remaining = list(todo)
    start = time.time()

    def folder_of(item: tuple) -> Path:
        seed, task, budget, name, _, _ = item
        return out / task / f"{budget}-per-class" / name / f"seed{seed}"

    def record(item: tuple, stored: dict, what: str) -> None:
        seed, task, budget, name, _, _ = item
        results.setdefault((task, budget), {}).setdefault(name, {})[seed] = stored["history"]
        remaining.remove(item)
        done = len(todo) - len(remaining)
        summary, data = summarise(results, seeds, done, len(todo), quick)
        compare.write_atomic(out / "summary.md", summary)
        compare.write_atomic(out / "results.json", json.dumps(data, indent=2))
        timing = compare.progress(start, [(s, t) for s, t, *_ in remaining], trained, jobs)
        log(f"[{done}/{len(todo)}] {task} {budget}/class {name} seed{seed} {what} ({timing})")

    def from_main_job(item: tuple, options: dict) -> tuple[dict | None, str]:
        seed, task, _, name, _, _ = item
        source = reuse / task / main_job_name(name) / f"seed{seed}"
        stored = compare.load_finished(source, options)
        if stored is not None:  # kept in the sweep's folder too: it stands on its own
            compare.write_atomic(folder_of(item) / compare.MARKER, json.dumps(stored, indent=2))
        return stored, f"reused from {source}"

    def counted(item: tuple, stored: dict, what: str) -> None:
        if what.startswith("trained"):
            trained[item[1]].append(stored["seconds"])
        record(item, stored, what)

    runs = [(item, item[1], item[3], item[4], item[5], folder_of(item)) for item in todo]
    compare.train_or_load(
        runs,
        jobs,
        device,
        counted,
        fresh=fresh,
        reuse=None if reuse is None else from_main_job,
    )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="paired seeds (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, a few epochs, one budget: a smoke test"
    )
    parser.add_argument("--out", type=Path, default=None, help="default: results/sweep")
    parser.add_argument("--fresh", action="store_true", help="train every run again")
    parser.add_argument(
        "--reuse",
        type=Path,
        default=Path("results/comparison"),
        help="the main job's folder, whose finished identical runs are reused",
    )
    compare.add_parallel_options(parser)
    args = parser.parse_args(argv)
    jobs = compare.parallel_jobs(parser, args)
    seeds = 1 if args.quick else args.seeds
    out = args.out or Path("results/sweep-quick" if args.quick else "results/sweep")
    start = time.time()
    run_sweep(seeds, out, args.quick, args.device, fresh=args.fresh, reuse=args.reuse, jobs=jobs)
    print((out / "summary.md").read_text())
    print(f"wrote {out / 'summary.md'} and results.json ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
