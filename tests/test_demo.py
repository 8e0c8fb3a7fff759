"""The README's main job runs on real digits and measures something real."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "examples" / "digits_demo.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("digits_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_compares_selectors_on_hidden_labels(demo):
    results = demo.run(labels_per_class=4, seed=0, steps=150)
    overall = results["all predictions"]["precision"]
    assert 0.5 < overall < 1.0  # a real, imperfect classifier
    fixmatch = results["threshold 0.95 (FixMatch)"]
    csl = results["CSL (batch boundary)"]
    for row in (fixmatch, csl):
        assert 0.0 < row["coverage"] < 1.0
        assert row["precision"] > overall  # selection keeps more right than wrong labels
    assert csl["mean_weight"] >= csl["coverage"]  # soft weights beyond the trusted set


def test_demo_prints_a_table(demo, capsys):
    assert demo.main(["--steps", "50", "--labels-per-class", "2"]) == 0
    out = capsys.readouterr().out
    assert "threshold 0.95 (FixMatch)" in out and "CSL (batch boundary)" in out
    assert "coverage" in out and "precision" in out
