"""The command-line tools apart from the library: pseudosel.tools reads the selector registry
(plug-ins included), the old module paths are deprecated aliases, and ``import pseudosel``
loads none of it."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.probability_maps import classifier_outputs, noisy_labels, smooth_maps

import pseudosel
from pseudosel import _deprecation
from pseudosel.registry import unregister_selector
from pseudosel.tools.cli import main
from pseudosel.tools.compare import compare, table

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_FOLDER = ROOT / "examples" / "plugin_example"


def run_pseudosel(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m pseudosel ...`` with the example plug-in's folder on PYTHONPATH."""
    path = os.pathsep.join(filter(None, [str(PLUGIN_FOLDER), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "pseudosel", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
    )


@pytest.fixture
def cls_file(tmp_path):
    probs = classifier_outputs(300, 5, seed=7)
    labels = noisy_labels(probs, seed=8)
    labels[::13] = 255  # unknown labels take no part
    path = tmp_path / "preds.npz"
    np.savez(path, probs=probs.numpy(), labels=labels.numpy())
    return path, probs, labels


@pytest.fixture
def dense_file(tmp_path):
    probs = smooth_maps(3, 4, 8, 8, sharpness=4.0, seed=0)
    path = tmp_path / "dense.npz"
    np.savez(path, probs=probs.numpy(), labels=probs.argmax(1).numpy())
    return path


# ---------------------------------------------------------------- deprecated module paths

SHIMS = {
    "pseudosel.compare": ("pseudosel.tools.compare", ["PredictionFile", "compare", "table"]),
    "pseudosel.benchmark": ("pseudosel.tools.bench", ["run", "kernels", "parse_size", "Row"]),
    "pseudosel.cli": ("pseudosel.tools.cli", ["main"]),
    "pseudosel.viz": ("pseudosel.tools.plots", ["plot_coverage_precision", "plot_curves"]),
}


@pytest.mark.parametrize("old", sorted(SHIMS))
def test_old_module_paths_warn_once_and_keep_their_names(old, monkeypatch):
    new, names = SHIMS[old]
    monkeypatch.delitem(sys.modules, old, raising=False)  # so that the import really runs
    _deprecation._warned.discard(old)
    with pytest.warns(FutureWarning, match=f"{old} is deprecated and will be removed; use {new}"):
        module = importlib.import_module(old)
    replacement = importlib.import_module(new)
    for name in names:
        assert getattr(module, name) is getattr(replacement, name), name
    assert set(module.__all__) <= set(dir(module))
    monkeypatch.delitem(sys.modules, old)
    importlib.import_module(old)  # once per process: the second import is silent


def test_old_compare_module_keeps_make_selector(monkeypatch):
    monkeypatch.delitem(sys.modules, "pseudosel.compare", raising=False)
    _deprecation._warned.discard("pseudosel.compare")
    with pytest.warns(FutureWarning):
        old = importlib.import_module("pseudosel.compare")
    run = old.make_selector("threshold:0.8", 3, 10, False)
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3]])
    assert run(probs, None, torch.arange(2)).mask.tolist() == [True, False]


def test_import_pseudosel_loads_no_tool_and_no_matplotlib():
    code = (
        "import pseudosel, sys\n"
        "print(sorted(m for m in sys.modules if m.startswith('pseudosel.tools')))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "[]"]


def test_the_console_script_points_at_the_tools():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'pseudosel = "pseudosel.tools.cli:main"' in text


# ---------------------------------------------------------------- the example plug-in


def _top2_margin_numbers(probs, labels, margin):
    """Coverage (share of the valid positions kept) and precision (right labels among the
    kept positions whose label is known) of the plug-in's rule, computed from its definition."""
    ordered = probs.sort(dim=1, descending=True).values
    kept = (ordered[:, 0] - ordered[:, 1]) >= margin
    known = labels != 255
    right = probs.argmax(1) == labels
    coverage = float(kept.sum()) / len(kept)
    precision = float((kept & known & right).sum()) / float((kept & known).sum())
    return coverage, precision


def _row(printed: str, name: str) -> list[float]:
    for line in printed.splitlines():
        cells = line.split()
        if cells and cells[0] == name:
            return [float(cell) for cell in cells[1:]]
    raise AssertionError(f"no {name!r} row in:\n{printed}")


@pytest.mark.slow
def test_the_plugin_example_runs_in_pseudosel_compare(cls_file, tmp_path):
    path, probs, labels = cls_file
    out = tmp_path / "out"
    result = run_pseudosel(
        "compare", str(path), "--plugin", "mysel", "--selectors", "mine", "mine:0.2",
        "mine_ema", "threshold", "csl", "--no-plots", "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "compare.json").read_text())
    assert list(report["selectors"]) == ["mine", "mine:0.2", "mine_ema", "threshold", "csl"]
    for spec, margin in (("mine", 0.5), ("mine:0.2", 0.2)):
        coverage, precision = _top2_margin_numbers(probs, labels, margin)
        assert 0 < coverage < 1, spec
        assert report["selectors"][spec]["ratio"] == pytest.approx(coverage, abs=1e-6)
        assert report["selectors"][spec]["precision"] == pytest.approx(precision, abs=1e-6)
        row = _row(result.stdout, spec)  # the table prints the same numbers
        assert row[:2] == pytest.approx([coverage, precision], abs=5e-5)
    # the stateful plug-in is warmed up (and marked) like a built-in stateful selector
    assert report["selectors"]["mine_ema"]["warmup_passes"] == 2
    assert "mine_ema*" in result.stdout and "mine*" not in result.stdout


@pytest.mark.slow
def test_the_plugin_example_runs_in_pseudosel_bench(tmp_path):
    out = tmp_path / "bench"
    result = run_pseudosel(
        "bench", "--quick", "--plugin", "mysel", "--selectors", "mine", "threshold",
        "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "bench_selection.json").read_text())
    rows = {(tuple(row["shape"]), row["kernel"]) for row in report["rows"]}
    for shape in ((64, 10), (4, 5, 16, 16)):
        assert {(shape, "floor: probs.amax(dim=1)"), (shape, "mine"), (shape, "threshold")} <= rows
    kernels = {kernel for _, kernel in rows}
    assert "csl" not in kernels and "freematch step" not in kernels  # only those named
    assert "distribution alignment step" not in kernels
    assert "| 64x10 | float32 | mine |" in result.stdout


def test_the_plugin_example_through_select_reliable(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_FOLDER))
    monkeypatch.delitem(sys.modules, "mysel", raising=False)
    try:
        importlib.import_module("mysel")
        probs = torch.tensor([[0.9, 0.05, 0.05], [0.5, 0.4, 0.1]])
        assert pseudosel.select_reliable(probs, "mine").mask.tolist() == [True, False]
        logits = probs.log()  # the front door's from_logits comes for free
        sel = pseudosel.select_reliable(logits, "mine", from_logits=True, margin=0.05)
        assert sel.mask.tolist() == [True, True]
        with pytest.raises(ValueError, match="valid positions hold probabilities|sum"):
            pseudosel.select_reliable(logits, "mine")  # and the value check
    finally:
        for name in ("mine", "mine_ema"):
            unregister_selector(name, missing_ok=True)
        sys.modules.pop("mysel", None)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("command", ["compare", "bench"])
def test_an_unknown_plugin_module_is_one_line_and_status_2(command, cls_file, tmp_path):
    args = [str(cls_file[0])] if command == "compare" else ["--quick"]
    result = run_pseudosel(
        command, *args, "--plugin", "no_such_plugin", "--out", str(tmp_path / "o"), cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"pseudosel {command}: error: --plugin no_such_plugin: ")
    assert "No module named 'no_such_plugin'" in lines[0]
    assert not (tmp_path / "o").exists()


def test_selector_names_are_checked_after_the_plugins_load(cls_file, tmp_path):
    argv = [str(cls_file[0]), "--plugin", "mysel", "--no-plots", "--out", str(tmp_path / "o")]
    result = run_pseudosel("compare", *argv, "--selectors", "mien", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    # the registry's list names the plug-in's selectors: they were loaded before the check
    assert "argument --selectors: unknown selector 'mien'; registered: " in result.stderr
    assert "'mine'" in result.stderr and "'mine_ema'" in result.stderr
    result = run_pseudosel("compare", *argv, "--selectors", "mine_ema:0.5", cwd=tmp_path)
    assert result.returncode == 2
    assert "argument --selectors: 'mine_ema:0.5': mine_ema takes no bare value" in result.stderr
    assert "e.g. mine_ema:momentum=0.99" in result.stderr
    result = run_pseudosel("compare", *argv, "--selectors", "mine:1.5", cwd=tmp_path)
    assert result.returncode == 2
    assert "'mine:1.5': margin '1.5' is refused by mine: margin must be in [0, 1]" in result.stderr
    bench = ["bench", "--quick", "--plugin", "mysel", "--out", str(tmp_path / "b")]
    result = run_pseudosel(*bench, "--selectors", "mien", cwd=tmp_path)
    assert (
        result.returncode == 2 and "argument --selectors: unknown selector 'mien'" in result.stderr
    )
    assert not (tmp_path / "b").exists()


def test_spec_syntax_errors(cls_file):
    path = cls_file[0]
    cases = {
        "csl:0.5": r"'csl:0\.5': csl takes no bare value .*e\.g\. csl:alpha=2\.0",
        "csl:alpha": r"csl takes no bare value",
        "csl:alpha=3,alpha=4": r"alpha= is given twice",
        "csl:=3": r"'=3' is not key=value",
        "threshold:validate=True": r"validate= is set by pseudosel compare itself",
        "csl:alphaa=2": r"'csl:alphaa=2': csl refuses its options: .*'alphaa'",
        "dash": r"'dash': dash cannot run with its default options: .*rho_init.*"
        r"e\.g\. dash:rho_init=",
        "adamatch": r"adamatch needs the labelled batch's predictions .*cannot run in pseudosel "
        r"compare",
    }
    for spec, message in cases.items():
        with pytest.raises(ValueError, match=message):
            compare(path, selectors=[spec], progress=False)


def test_key_value_options_and_the_value_option_agree(cls_file):
    path = cls_file[0]
    report = compare(
        path,
        selectors=["threshold:0.7", "threshold:tau=0.7", "freematch:momentum=0.9,clip_thresh=True"],
        progress=False,
    )
    rows = report["selectors"]
    assert rows["threshold:0.7"] == rows["threshold:tau=0.7"]
    assert rows["freematch:momentum=0.9,clip_thresh=True"]["warmup_passes"] == 2


def test_layouts_a_selector_does_not_take_are_refused(dense_file, cls_file):
    with pytest.raises(
        ValueError,
        match=r"adsh keeps one record per sample \(it needs the samples' index\): "
        r"classification \(N, K\) files only",
    ):
        compare(dense_file, selectors=["adsh"], progress=False)
    # FlexMatch needs index too, but takes dense input: its class-wise form runs
    report = compare(dense_file, selectors=["flexmatch"], progress=False)
    assert 0 <= report["selectors"]["flexmatch"]["ratio"] <= 1

    def rows_only(probs, *, valid):
        return pseudosel.select_reliable(probs, "threshold", valid=valid, tau=0.5)

    pseudosel.register_selector("test_rows_only", rows_only, dense=False)
    pseudosel.register_selector("test_maps_only", rows_only, classification=False)
    try:
        with pytest.raises(ValueError, match=r"test_rows_only takes one row per sample: "):
            compare(dense_file, selectors=["test_rows_only"], progress=False)
        with pytest.raises(ValueError, match=r"test_maps_only takes dense .* input only"):
            compare(cls_file[0], selectors=["test_maps_only"], progress=False)
        compare(cls_file[0], selectors=["test_rows_only"], progress=False)
        compare(dense_file, selectors=["test_maps_only"], progress=False)
    finally:
        unregister_selector("test_rows_only")
        unregister_selector("test_maps_only")


# ---------------------------------------------------------------- a stateful plug-in


class EmaOfConfidence(pseudosel.Selector):
    """mask = max p >= m_t; m_t an EMA (float ``momentum``) of the batches' mean max p."""

    built: list[EmaOfConfidence] = []

    def __init__(self, num_classes: int, *, momentum: float = 0.9, **shared) -> None:
        super().__init__(num_classes=num_classes, **shared)
        self.momentum = float(momentum)
        self.register_buffer("mean", torch.tensor(1.0 / num_classes, dtype=torch.float64))
        self.steps = 0
        EmaOfConfidence.built.append(self)

    def forward(self, probs, valid=None):
        probs, valid, _ = self.prepare(probs, valid)
        confidence, labels = probs.max(1)
        if self.training:
            batch = confidence.double().mean()
            self.mean.mul_(self.momentum).add_((1 - self.momentum) * batch)
            self.steps += 1
        mask = valid & (confidence.double() >= self.mean)
        return pseudosel.Selection(labels, mask.float(), mask, confidence, valid)

    def in_warmup(self):
        return torch.tensor(self.steps < 12)


@pytest.fixture
def ema_plugin():
    EmaOfConfidence.built.clear()
    pseudosel.register_selector("test_ema", EmaOfConfidence)
    yield
    unregister_selector("test_ema")


def test_a_stateful_plugin_is_warmed_up_like_a_builtin(cls_file, ema_plugin, tmp_path, capsys):
    path, probs, labels = cls_file
    report = compare(path, selectors=["test_ema", "test_ema:momentum=0.5"], batch_size=50,
                     progress=False)  # fmt: skip
    first, second = [module for module in EmaOfConfidence.built if module.steps]  # not probes
    assert (first.momentum, second.momentum) == (0.9, 0.5)  # restored after the warm-up
    assert first.steps == 18  # 6 batches x (2 warm-up passes + the measured one)
    row = report["selectors"]["test_ema"]
    assert row["warmup_passes"] == 2 and row["in_own_warmup"] is False
    # by hand: two warm-up passes with momentum min(0.9, 1 - 1/step), then 0.9
    batches = [probs[i : i + 50] for i in range(0, 300, 50)]
    mean, step = torch.tensor(0.2, dtype=torch.float64), 0
    for _ in range(2):
        for batch in batches:
            step += 1
            m = min(0.9, 1 - 1 / step)
            mean = m * mean + (1 - m) * batch.max(1).values.double().mean()
    kept = []
    for batch in batches:
        mean = 0.9 * mean + 0.1 * batch.max(1).values.double().mean()
        kept.append(batch.max(1).values.double() >= mean)
    kept = torch.cat(kept)
    assert row["ratio"] == pytest.approx(float(kept.double().mean()), abs=1e-6)
    # one pass: its own warm-up (12 steps) is not over, and the table says so
    cold = compare(path, selectors=["test_ema"], batch_size=50, progress=False, passes=1)
    assert cold["selectors"]["test_ema"]["in_own_warmup"] is True
    assert "test_ema!" in table(cold)
    argv = ["compare", str(path), "--selectors", "test_ema", "--no-plots"]
    assert main([*argv, "--out", str(tmp_path / "o"), "--batch-size", "50"]) == 0
    assert "test_ema*" in capsys.readouterr().out
