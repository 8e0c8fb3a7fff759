"""Packaging promises: lazy heavy imports, import time, version, README <-> CI command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pseudosel

ROOT = Path(__file__).resolve().parents[1]


def test_import_is_light_and_fast():
    code = (
        "import time, sys\n"
        "import torch\n"
        "start = time.perf_counter()\n"
        "import pseudosel\n"
        "elapsed = time.perf_counter() - start\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('cvxpy', 'cvxpylayers', 'matplotlib', 'sklearn', 'scipy', 'triton'))\n"
        "print(elapsed, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    elapsed, heavy = out.stdout.split(" ", 1)
    assert heavy.strip() == "[]"
    assert float(elapsed) < 1.0


def test_version_and_typed_marker():
    assert re.fullmatch(r"\d+\.\d+\.\d+", pseudosel.__version__)
    assert (Path(pseudosel.__file__).parent / "py.typed").exists()


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines() if line.startswith("python3 -m venv .venv")]
    assert len(commands) == 1
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    setup = [line for block in blocks for line in block.splitlines() if line.strip()]
    assert len(setup) == 2, "the README has exactly two set-up commands"
    assert commands[0] in setup
    assert all("pip install torch==2.13.0" in line and ".venv" in line for line in setup)
    assert all(line.index("torch==2.13.0") < line.index("pip install -e") for line in setup)
