"""benchmarks/gpu.sh and benchmarks/gpu_checks.py, the one-shot GPU run, checked without a GPU:
the scripts parse, the dry run lists every stage with the sizes of issue #28, the graph
check steps every registered selector (eagerly, tiny sizes: capture needs CUDA), the GPU
targets of the bench report, and the results section lands at the top of RESULTS.md."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pseudosel
from pseudosel.registry import selector_spec
from pseudosel.tools.bench.report import Report, Row, targets

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


@pytest.fixture(scope="module")
def gpu_checks():
    spec = importlib.util.spec_from_file_location(
        "gpu_checks", ROOT / "benchmarks" / "gpu_checks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scripts_parse():
    for name in ("gpu.sh", "gpu_wheels.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / name)], check=True)


def test_dry_run_lists_every_stage_within_the_budget(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--out", str(tmp_path / "gpu"), "--wheels",
         str(tmp_path / "none")],
        capture_output=True, text=True, check=True, env=env, cwd=tmp_path,
    ).stdout  # fmt: skip
    stages = [line.split("]")[0].strip("[") for line in out.splitlines() if line.startswith("[")]
    assert stages == ["environment", "tests", "graphs", "bench", "compile", "results"]
    limits = [int(line.split("timeout ")[1].split(":")[0]) for line in out.splitlines()
              if line.startswith("[")]  # fmt: skip
    assert all(0 < limit <= 480 for limit in limits)
    assert "-m pytest" in out and "gpu_checks.py graphs" in out
    assert "--sizes 16x21x512x512 8x21x321x321 448x10 256x1000" in out
    assert "--device cuda" in out and "--results benchmarks/RESULTS.md" in out
    assert not (tmp_path / "gpu" / "tests.log").exists()  # a dry run runs nothing
    bad = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument --bogus" in bad.stderr


def test_graph_check_steps_every_selector(gpu_checks):
    """On the CPU the graph stage runs each registered selector's step eagerly (no capture);
    every one must step without error on both layouts it takes."""
    rows = gpu_checks.check_graphs(torch.device("cpu"))
    names = {row["selector"] for row in rows}
    expected = {n for n in pseudosel.available_selectors() if not selector_spec(n).requires}
    assert names == expected
    failed = [row for row in rows if "error" in row]
    assert not failed, failed
    assert {row["layout"] for row in rows} == {"dense", "classification"}


def test_results_section_goes_first_in_results_md(gpu_checks, tmp_path):
    out = tmp_path / "gpu"
    (out / "bench").mkdir(parents=True)
    (out / "environment.txt").write_text("python 3.12 | torch 2.11\n")
    (out / "tests_summary.txt").write_text("2500 passed, 3 skipped in 190s\n")
    graph_row = {"selector": "csl", "options": "default", "layout": "dense", "captured": "yes",
                 "replay_vs_eager": 0.0}  # fmt: skip
    (out / "graphs.json").write_text(json.dumps([graph_row]))
    (out / "compile-0.json").write_text(json.dumps([{"selector": "csl", "layout": "dense",
                                                     "compiled": "yes"}]))  # fmt: skip
    (out / "bench" / "bench_selection.md").write_text("| shape | dtype |\n")
    timed = [("csl", 3.0), ("csl, compiled", 1.0), ("csl, triton", 0.5), ("threshold", 0.4),
             ("threshold, triton", 0.5), ("floor: probs.amax(dim=1)", 0.3)]  # fmt: skip
    rows = [{"shape": [16, 21, 512, 512], "dtype": "float32", "kernel": kernel, "median_ms": ms}
            for kernel, ms in timed]  # fmt: skip
    (out / "bench" / "bench_selection.json").write_text(json.dumps({"rows": rows}))
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nIntro.\n\n## 2026-12-06 — older\n\nold\n")
    assert gpu_checks.main(["results", "--out", str(out), "--device", "cpu",
                            "--results", str(results)]) == 0  # fmt: skip
    text = results.read_text()
    assert text.index("the one-shot GPU run") < text.index("## 2026-12-06 — older")
    assert text.startswith("# Benchmark results\n\nIntro.\n\n## ")
    assert "1 of 1 captured" in text and "1 of 1 compiled" in text and "2500 passed" in text
    assert "Stages without results" not in text
    assert "`{'csl': 'triton', 'threshold': 'eager'}`" in text


def test_gpu_targets_are_shares_of_the_copy_bandwidth():
    def row(kernel, ms):
        return Row([16, 21, 512, 512], "float32", kernel, ms, 1.0, 1.0, 1.0, None, None)

    report = Report("s", "d", "NVIDIA H100", "m", "t", "p", 21, False, "")
    report.rows = [row("copy (read + write)", 1.0), row("csl, triton", 1.5),
                   row("threshold, triton", 1.1), row("threshold", 2.0)]  # fmt: skip
    found = {t["name"]: t for t in targets(report)}
    csl = found["GPU: csl, triton at 16x21x512x512, share of copy bandwidth"]
    assert csl["met"] and abs(csl["value"] - 1 / 1.5) < 1e-12 and csl["limit"] == 0.6
    assert found["GPU: threshold, triton at 16x21x512x512, share of copy bandwidth"]["met"]
    assert not found["GPU: threshold at 16x21x512x512, share of copy bandwidth"]["met"]
    report.device = "cpu"
    assert not [t for t in targets(report) if t["name"].startswith("GPU")]
