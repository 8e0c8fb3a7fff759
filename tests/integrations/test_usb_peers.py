"""``pseudosel bench --peers``: pseudosel's selectors beside semilearn 0.3.2's own hooks.

The report is only worth reading if each row times two implementations of one rule, so the
tool runs both sides on the same 20 batches first and records whether they gave the same
output; here every row must. The timings themselves are not asserted (a benchmark, not a
timed test): benchmarks/RESULTS.md records them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import usb_support

import pseudosel
from pseudosel.registry import selector_spec
from pseudosel.tools.bench import peers

usb_support.require_semilearn()


def _usb_selectors() -> list[str]:
    """The registered selectors whose USB mapping names the hook they replace."""
    return [
        name
        for name in pseudosel.available_selectors()
        if selector_spec(name).usb is not None and selector_spec(name).usb.hook
    ]


def test_every_usb_selector_is_timed_beside_its_hook_with_the_same_output(tmp_path):
    command = [sys.executable, "-m", "pseudosel", "bench", "--peers", "--quick",
               "--sizes", "64x10", "32x5", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "peers.json").read_text())
    expected = [*_usb_selectors(), "distribution alignment", "distribution alignment (queue)"]
    assert len(expected) >= 8  # threshold, AdaMatch, FlexMatch, FreeMatch, SoftMatch, Dash
    for shape in ([64, 10], [32, 5]):
        rows = [row for row in report["rows"] if row["shape"] == shape]
        assert [row["selector"] for row in rows] == expected
        for row in rows:
            assert row["same_output"], (row["selector"], row["difference"])
            assert row["ours_ms"] > 0 and row["usb_ms"] > 0 and row["ours_unchecked_ms"] > 0
            assert row["ratio"] == pytest.approx(row["ours_ms"] / row["usb_ms"])
    table = (tmp_path / "peers.md").read_text()
    assert "| flexmatch | FlexMatchThresholdingHook | 64x10 |" in table
    assert "pseudosel no slower than USB's hook in" in table


# pseudosel's side with one option changed: a different rule, which the check must see
# (one entry per USB hook the registry names; the set is compared with the registry below)
MUTATIONS = {  # usb algorithms
    "threshold": {"tau": 0.5},
    "adamatch": {"tau": 0.5},
    "flexmatch": {"tau": 0.5},
    "freematch": {"momentum": 0.5},
    "softmatch": {"n_sigma": 1.0},
    "dash": {"gamma": 3.0},
    "distribution alignment": {"momentum": 0.5},
    "distribution alignment (queue)": {"queue_length": 64},
}


@pytest.mark.parametrize("shape", [(448, 10), (64, 10)])
def test_a_different_rule_is_reported_not_hidden(shape):
    batches = peers._batches(shape, seed=0)
    pairs = peers._pairs(shape[1])
    assert {pair.selector for pair in pairs} == set(MUTATIONS)
    for pair in pairs:
        assert peers._compare(pair, batches) == "", pair.selector
        changed = peers._compare(pair, batches, **MUTATIONS[pair.selector])
        assert changed.startswith("step "), (pair.selector, changed)


@pytest.mark.parametrize("size", ["8x21x4x4", "448"])
def test_peer_sizes_are_classification_batches(size):
    with pytest.raises(ValueError, match="size|shape"):
        peers.peer_report([size], rounds=1)


def test_without_semilearn_the_command_says_how_to_install_it(tmp_path):
    """Where semilearn is only in the folder the test command installs it into (as here),
    pointing PSEUDOSEL_USB_SITE elsewhere leaves the command without it."""
    import os

    env = {**os.environ, "PSEUDOSEL_USB_SITE": str(tmp_path / "nowhere")}
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('semilearn') is None)"
    if subprocess.run([sys.executable, "-c", probe], env=env).returncode == 0:
        pytest.skip("semilearn is installed in site-packages here: the command finds it")
    command = [sys.executable, "-m", "pseudosel", "bench", "--peers", "--quick",
               "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "needs semilearn 0.3.2" in done.stderr and "pip install" in done.stderr
    assert "Traceback" not in done.stderr


def _floor_script():
    """benchmarks/peers_floor.py as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "peers_floor.py"
    spec = importlib.util.spec_from_file_location("peers_floor", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_op_floor_gives_the_modules_output(monkeypatch, capsys):
    """benchmarks/peers_floor.py times pseudosel's ops alone beside the module and USB's
    hook; it first checks on every batch that its inline ops give the module's output
    (at 448x100 the check's integer minimum runs too)."""
    script = _floor_script()
    monkeypatch.setattr(
        sys, "argv", ["peers_floor", "--rounds", "1", "--sizes", "64x10", "448x100"]
    )
    script.main()
    table = capsys.readouterr().out
    for name in script.ROWS:
        for size in ("64x10", "448x100"):
            assert f"| {name} | {size} |" in table


def test_an_op_floor_that_differs_from_the_module_is_refused(monkeypatch):
    script = _floor_script()
    script.TAU = 0.5  # another rule than the module's (USB's 0.95)
    monkeypatch.setattr(sys, "argv", ["peers_floor", "--rounds", "1", "--sizes", "64x10"])
    with pytest.raises(AssertionError, match="threshold at 64x10: the floor differs"):
        script.main()
