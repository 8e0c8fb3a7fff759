"""The integration recipes run for a few steps (as the docs promise)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = pytest.mark.slow


def run(script: str, *args: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_plain_fixmatch_loop(tmp_path):
    out = run("recipe_fixmatch_loop.py", "--steps", "30", cwd=tmp_path)
    assert "30 steps with csl: test accuracy" in out


def test_unimatch_step(tmp_path):
    out = run("recipe_unimatch_step.py", "--steps", "4", cwd=tmp_path)
    assert "4 steps: loss" in out


def test_lightning_resume_keeps_the_selector_state(tmp_path):
    pytest.importorskip("lightning", reason="the lightning extra is not installed")
    out = run("recipe_lightning.py", "--steps", "6", "--out", str(tmp_path / "l"), cwd=tmp_path)
    assert "resumed at step 6" in out and "after step 12" in out
