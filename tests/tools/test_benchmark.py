"""The benchmark pipeline (quick mode) writes the documented schema; speed is not tested."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import pseudosel
from pseudosel.registry import selector_spec
from pseudosel.tools.bench.sizes import QUICK_SIZES, parse_size

ROOT = Path(__file__).resolve().parents[2]
ROW_KEYS = {
    "shape",
    "dtype",
    "kernel",
    "median_ms",
    "ratio_to_floor",
    "gb_per_s",
    "peak_extra_bytes",
    "peak_extra_ratio",
    "read_share",
    "checked",
    "busy_ms",
    "busy_one_thread_ms",
    "slowdown",
    "note",
}

pytestmark = pytest.mark.slow

# the rows every full run has: the floor, the line users replace, the read bandwidth, a copy,
# the reference-style baseline (benchmarks/reference_loop.py), the alignment step
FIXED_ROWS = {
    "floor: probs.amax(dim=1)",
    "probs.max(dim=1) (the line users replace)",
    "read: probs.sum()",
    "copy (read + write)",
    "reference-style loop",
    "distribution alignment step",
}


def declared_rows(sizes) -> set[str]:
    """The rows the registry's declarations ask for (``spec.bench``) on inputs of ``sizes``:
    a case's label where the selector and the case take a layout of the sizes, and for a
    stateless selector its ``validate=True`` and compiled variants."""
    layouts = {len(parse_size(size)) > 2 for size in sizes}  # True: dense
    rows = set()
    for name in pseudosel.available_selectors():
        spec = selector_spec(name)
        for case in spec.bench:
            if not any(
                (spec.dense if dense else spec.classification) and case.dense in (None, dense)
                for dense in layouts
            ):
                continue
            rows.add(case.label)
            if spec.stateful:
                continue
            if case.validate:
                rows.add(f"{case.label}, validate=True")
            if case.compiled:
                rows.add(f"{case.label}, compiled")
                if case.validate:
                    rows.add(f"{case.label}, compiled, validate=True")
    return rows


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_selection.py"),
            "--quick",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads((out / "bench_selection.json").read_text()), out


def test_quick_benchmark_schema(quick_report):
    report, out = quick_report
    assert report["schema"] == "pseudosel-bench/2" and report["quick"] is True
    for key in ("date", "device", "machine", "torch", "python", "repeats", "command", "allocator"):
        assert report[key] not in (None, "")
    kernels = {row["kernel"] for row in report["rows"]}
    assert kernels == FIXED_ROWS | declared_rows(QUICK_SIZES), kernels ^ (
        FIXED_ROWS | declared_rows(QUICK_SIZES)
    )
    for row in report["rows"]:
        assert set(row) == ROW_KEYS
        assert row["median_ms"] > 0 and row["ratio_to_floor"] > 0 and row["gb_per_s"] > 0
        assert row["peak_extra_bytes"] >= 0
    floors = [r for r in report["rows"] if r["kernel"].startswith("floor")]
    assert all(r["ratio_to_floor"] == 1.0 for r in floors)
    # the baseline was verified against pseudosel.functional.csl on the dense input
    assert [r["checked"] for r in report["rows"] if r["kernel"] == "reference-style loop"] == [True]
    for target in report["targets"]:
        assert set(target) == {"name", "value", "limit", "at_most", "met"}
    assert "| shape | dtype | kernel |" in (out / "bench_selection.md").read_text()


def test_pseudosel_bench_command_without_the_benchmarks_folder(tmp_path):
    out = tmp_path / "bench"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pseudosel.tools.cli",
            "bench",
            "--quick",
            "--no-compile",
            "--no-adaptive",
            "--sizes",
            "32x5",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert "floor: probs.amax(dim=1)" in result.stdout
    assert "USDT" not in result.stdout + result.stderr  # no profiler chatter
    report = json.loads((out / "bench_selection.json").read_text())
    assert {row["kernel"] for row in report["rows"]} >= {"csl", "threshold"}


def test_busy_mode_times_every_row_beside_a_load(tmp_path):
    out = tmp_path / "bench"
    subprocess.run(
        [sys.executable, "-m", "pseudosel", "bench", "--quick", "--busy", "--no-compile",
         "--no-adaptive", "--sizes", "32x5", "--out", str(out)],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    report = json.loads((out / "bench_selection.json").read_text())
    assert report["busy"] is True
    for row in report["rows"]:
        assert row["busy_ms"] > 0 and row["busy_one_thread_ms"] > 0 and row["slowdown"] > 0
    names = [target["name"] for target in report["targets"]]
    assert any(name.startswith("busy: csl at 32x5, slowdown") for name in names)
    assert any(name.startswith("busy: threshold at 32x5, all threads / one") for name in names)
    assert "floor's slowdown" in (out / "bench_selection.md").read_text()


def test_gmm_mode_times_the_published_loop_beside_pseudosel(tmp_path):
    from pseudosel.tools.cli import main

    assert main(["bench", "--gmm", "--quick", "--no-compile", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gmm.json").read_text())
    assert (report["classes"], report["scores"]) == (8, 50)
    names = [row["kernel"] for row in report["rows"]]
    assert names == [
        "Consistent-Teacher loop (scikit-learn, CPU)",
        "pseudosel gmm_thresholds (eager, cpu)",
    ]
    assert all(row["median_ms"] > 0 for row in report["rows"])
    assert report["rows"][1]["equal_thresholds"] == 8  # the same thresholds as the loop
    assert "| pseudosel gmm_thresholds (eager, cpu) |" in (tmp_path / "gmm.md").read_text()


def test_the_busy_load_is_running_before_any_row_is_timed(monkeypatch):
    """contention() yields once the training load says it runs, not after a fixed wait
    (rows timed before it started looked unaffected), and refuses a load that never runs."""
    from pseudosel.tools.bench import timing

    marker = "import time\nprint('running', flush=True)\ntime.sleep(120)\n"
    monkeypatch.setattr(timing, "_TRAINING_LOAD", marker)
    started = []
    real_popen = timing.subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(timing.subprocess, "Popen", popen)
    with timing.contention():
        assert all(proc.poll() is None for proc in started)  # the load and the spinner run
    assert all(proc.poll() is not None for proc in started)  # and are gone after
    monkeypatch.setattr(timing, "_TRAINING_LOAD", "raise SystemExit(1)\n")
    with pytest.raises(RuntimeError, match="did not start"), timing.contention():
        pass


def test_the_value_check_benchmark_times_both_minima():
    """benchmarks/bench_value_check.py runs the check both ways on softmax outputs (which
    must pass) and prints one row per size and dtype."""
    script = str(ROOT / "benchmarks" / "bench_value_check.py")
    command = [sys.executable, script, "--sizes", "64x10", "96x100",
               "--dtypes", "float32", "float16", "--rounds", "1"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    for size in ("64x10", "96x100"):
        for dtype in ("float32", "float16"):
            assert f"| {size} | {dtype} |" in done.stdout
