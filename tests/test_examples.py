"""The example trainers and the selector comparison (the README's main job)."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

import compare_selectors  # noqa: E402
import train_fixmatch_digits  # noqa: E402
import train_unimatch_mosaics  # noqa: E402
from digits_data import BACKGROUND, INK, digit_splits, make_mosaics  # noqa: E402

import pseudosel  # noqa: E402

pytestmark = pytest.mark.slow


def test_mosaic_labels_match_ink_and_are_reproducible():
    images, labels = make_mosaics(20, seed=3)
    assert images.shape == (20, 1, 48, 48) and labels.shape == (20, 48, 48)
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(labels != BACKGROUND, images[:, 0] > INK)  # labels follow the ink
    assert set(labels.unique().tolist()) <= set(range(11))
    digits_per_canvas = [len(set(m.unique().tolist()) - {BACKGROUND}) for m in labels]
    assert max(digits_per_canvas) <= 5 and min(digits_per_canvas) >= 1
    again = make_mosaics(20, seed=3)
    assert torch.equal(again[0], images) and torch.equal(again[1], labels)
    assert not torch.equal(make_mosaics(20, seed=4)[0], images)


def test_mosaic_digits_are_real_digits_in_their_class():
    images, targets = digit_splits(seed=0).test
    canvas, labels = make_mosaics(1, digits=(images[:1], targets[:1]), fill=(1, 1), seed=0)
    ink = labels[0] != BACKGROUND
    assert set(labels[0][ink].unique().tolist()) == {int(targets[0])}
    # the ink is the digit upscaled 2x (nearest), placed in one 16-pixel cell
    assert torch.isclose(canvas[0, 0].sum(), 4 * images[0, 0].sum())


def test_digit_splits_are_disjoint_and_sized():
    splits = digit_splits(labels_per_class=4, seed=1)
    assert len(splits.labelled[0]) == 40
    assert torch.bincount(splits.labelled[1], minlength=10).tolist() == [4] * 10
    total = sum(len(part[0]) for part in (splits.labelled, splits.unlabelled, splits.test))
    assert total == 1797


def check_run_folder(folder: Path, metric: str, csl: bool):
    record = json.loads((folder / "epochs.json").read_text())
    for row in record["epochs"]:
        for key, value in row.items():
            if key not in ("epoch", "loss") and value is not None:
                assert 0 <= value <= 1, (key, value)
        if row.get("precision") is None and "ratio" in row:
            assert row["ratio"] == 0  # no precision only when nothing was selected
        assert math.isfinite(row["loss"]) and 0 <= row[metric] <= 1
    assert (folder / "summary.md").read_text().startswith("# ")
    assert (folder / "curves.png").stat().st_size > 1000
    assert (folder / "csl_feature_space.png").exists() is csl
    return record["epochs"]


@pytest.mark.parametrize("selector", ["threshold", "csl"])
def test_fixmatch_trainer_one_epoch(tmp_path, selector):
    history = train_fixmatch_digits.train(
        selector, epochs=1, warmup_epochs=0, out=tmp_path / "a", progress=False
    )
    rows = check_run_folder(tmp_path / "a", "test_accuracy", selector == "csl")
    assert "precision" in rows[0] and "ratio" in rows[0]
    again = train_fixmatch_digits.train(selector, epochs=1, warmup_epochs=0, progress=False)
    assert again == history  # same seed, same metrics on CPU


@pytest.mark.parametrize("selector,tmp", [("threshold", False), ("csl", True)])
def test_unimatch_trainer_one_epoch(tmp_path, selector, tmp):
    options = dict(epochs=1, warmup_epochs=0, unlabelled=16, test=8, progress=False)
    history = train_unimatch_mosaics.train(selector, tmp=tmp, out=tmp_path / "b", **options)
    rows = check_run_folder(tmp_path / "b", "test_miou", selector == "csl")
    assert "precision" in rows[0]
    assert train_unimatch_mosaics.train(selector, tmp=tmp, **options) == history


def test_seeds_are_paired_across_selectors():
    # the warm-up epoch is supervised for every run: with the same seed, the same split,
    # initialisation and batch order give the same model whatever the selector
    options = dict(epochs=1, warmup_epochs=1, progress=False, seed=2)
    runs = [train_fixmatch_digits.train(s, **options) for s in ("supervised", "threshold", "csl")]
    assert runs[0] == runs[1] == runs[2]
    options = dict(epochs=1, warmup_epochs=1, unlabelled=16, test=8, progress=False, seed=2)
    runs = [train_unimatch_mosaics.train(s, **options) for s in ("supervised", "threshold")]
    runs.append(train_unimatch_mosaics.train("csl", tmp=True, **options))
    assert runs[0] == runs[1] == runs[2]


def test_precision_is_none_when_nothing_is_selected():
    from run_reports import quality_record

    import pseudosel
    from pseudosel.metrics import SelectionStats

    stats = SelectionStats(num_classes=3)
    probs = torch.full((4, 3), 1 / 3)
    stats.update(pseudosel.select_reliable(probs, method="threshold"), torch.zeros(4).long())
    record = quality_record(stats)
    assert record["ratio"] == 0 and record["precision"] is None


def test_paired_difference_bootstrap_on_synthetic_numbers():
    paired = compare_selectors.paired_difference
    base = np.array([0.70, 0.72, 0.68, 0.71, 0.69])
    noise = np.array([0.05, -0.04, 0.02, -0.03, 0.01])
    better = paired(base + [0.05, 0.04, 0.06, 0.05, 0.05], base)
    assert better["verdict"] == "better" and better["n"] == 5
    assert better["mean"] == pytest.approx(0.05)
    assert 0 < better["low"] <= 0.05 <= better["high"] <= 0.06 + 1e-12
    worse = paired(base - 0.03, base)
    assert worse["verdict"] == "worse" and worse["high"] < 0
    noisy = paired(base + noise, base)
    assert noisy["verdict"] == "no difference" and noisy["low"] < 0 < noisy["high"]
    assert paired(base, base)["verdict"] == "no difference"  # CI [0, 0] does not exclude 0
    assert paired([0.9, 0.8], [0.7, 0.6])["verdict"] == "too few seeds"
    assert math.isnan(paired([0.9, 0.8], [0.7, 0.6])["low"])
    assert paired([], [])["n"] == 0
    assert noisy == paired(base + noise, base)  # seeded: reproducible
    with pytest.raises(ValueError, match="values and reference"):
        paired([[1.0]], [[0.0]])


def fake_history(value: float, quality: dict, epochs: int) -> list[dict]:
    """What a trainer returns: one row per epoch, the same test score in each."""
    metrics = {"test_accuracy": value, "test_miou": value, "test_balanced_accuracy": value}
    metrics["test_worst_class_recall"] = value - 0.2
    return [{"epoch": e + 1, **metrics, **quality} for e in range(epochs)]


def fake_trainer(calls, stop_after=None):
    """Stands in for a trainer: records the call, returns a short history."""

    def train(selector, *, seed, out, device, progress, epochs=3, **options):
        if stop_after is not None and len(calls) >= stop_after:
            raise KeyboardInterrupt  # the user stops the comparison
        calls.append((selector, seed, options.get("tmp", False)))
        quality = {} if selector == "supervised" else {"ratio": 0.5, "mean_weight": 0.5}
        if selector == "threshold":
            quality = {"ratio": 0.0, "mean_weight": 0.0, "precision": None}
        elif quality:
            quality["precision"] = 0.9
        value = 0.5 + 0.01 * seed + (0.1 if selector == "csl" else 0.0)
        return fake_history(value, quality, epochs)

    return train


def test_comparison_resumes_and_starts_fresh(tmp_path, monkeypatch):
    calls: list = []
    plotted: list = []  # the plots are drawn after every run; drawn for real in the quick test
    monkeypatch.setattr(compare_selectors, "plots", lambda results, out: plotted.append(out))
    monkeypatch.setattr(train_fixmatch_digits, "train", fake_trainer(calls, stop_after=9))
    monkeypatch.setattr(train_unimatch_mosaics, "train", fake_trainer(calls, stop_after=9))
    total = len(compare_selectors.plan(False, 3))
    assert total == 3 * (
        len(compare_selectors.CLASSIFICATION)
        + 2 * len(compare_selectors.LONG_TAILED)
        + len(compare_selectors.SEGMENTATION)
    )
    with pytest.raises(KeyboardInterrupt):
        compare_selectors.main(["--seeds", "3", "--out", str(tmp_path), "--jobs", "1"])
    summary = (tmp_path / "summary.md").read_text()
    assert f"partial: 9 of {total} runs" in summary
    assert json.loads((tmp_path / "results.json").read_text())["finished"] == 9
    assert not list(tmp_path.rglob("*.tmp"))  # written atomically
    # a re-run trains only what was left
    calls.clear()
    monkeypatch.setattr(train_fixmatch_digits, "train", fake_trainer(calls))
    monkeypatch.setattr(train_unimatch_mosaics, "train", fake_trainer(calls))
    lines: list[str] = []
    compare_selectors.run_all(3, tmp_path, False, "cpu", log=lines.append)
    assert len(calls) == total - 9
    assert sum("loaded" in line for line in lines) == 9
    assert len(plotted) == 9 + total  # refreshed after every run, loaded or trained
    assert lines[-1].startswith(f"[{total}/{total}] unimatch_mosaics csl+tmp seed2 trained")
    assert "ETA" in lines[10] and "done" in lines[-1]
    summary = (tmp_path / "summary.md").read_text()
    assert "— complete" in summary
    # the threshold selected nothing: its precision is "-", not 0.000
    assert "| threshold | 3 | 0.510 ± 0.010 | - | 0.000 ± 0.000 |" in summary
    # csl is 0.1 above the threshold on every seed: a verdict with 3 paired seeds
    assert "| csl | 3 | +0.100 | [+0.100, +0.100] | better |" in summary
    # the long-tailed tables show and pair the balanced accuracy, the worst class's recall
    # and the accuracy
    assert (
        "| run | seeds | test_balanced_accuracy | test_worst_class_recall | test_accuracy |"
        in summary
    )
    assert "| csl | 3 | 0.610 ± 0.010 | 0.410 ± 0.010 | 0.610 ± 0.010 |" in summary
    assert "Paired difference of test_worst_class_recall to `threshold`" in summary
    paired = json.loads((tmp_path / "results.json").read_text())["paired"]
    assert paired["longtail_digits:test_worst_class_recall"]["csl"]["verdict"] == "better"
    # a corrupt marker counts as unfinished
    (tmp_path / "fixmatch_digits" / "csl" / "seed1" / "result.json").write_text("{")
    calls.clear()
    compare_selectors.run_all(3, tmp_path, False, "cpu", log=lines.append)
    assert calls == [("csl", 1, False)]
    calls.clear()
    compare_selectors.run_all(3, tmp_path, False, "cpu", fresh=True, log=lines.append)
    assert len(calls) == total


def test_seeds_are_capped_per_task():
    """--seeds 5: the mosaics, the balanced and the reversed long-tailed digits run 3 seeds,
    the long-tailed digits 5."""
    plan = compare_selectors.plan(False, 5)
    seeds = {}
    for seed, task, *_ in plan:
        seeds.setdefault(task, set()).add(seed)
    assert {task: len(s) for task, s in seeds.items()} == {
        "fixmatch_digits": 3,
        "longtail_digits": 5,
        "longtail_reversed_digits": 3,
        "unimatch_mosaics": 3,
    }


def test_long_tailed_digits_follow_the_profile():
    """Labelled and unlabelled counts fall by the imbalance ratio from head to tail (or the
    reverse for the unlabelled set), the test set is the balanced one of digit_splits."""
    from digits_data import digit_splits, long_tailed_counts, long_tailed_splits

    assert long_tailed_counts(20, 10.0) == [20, 15, 12, 9, 7, 6, 4, 3, 3, 2]
    same = long_tailed_splits(seed=1)
    reversed_ = long_tailed_splits(unlabelled="reversed", seed=1)
    labelled = torch.bincount(same.labelled[1], minlength=10)
    unlabelled = torch.bincount(same.unlabelled[1], minlength=10)
    assert sorted(labelled.tolist(), reverse=True) == long_tailed_counts(20, 10.0)
    assert sorted(unlabelled.tolist(), reverse=True) == long_tailed_counts(110, 10.0)
    # the head of the labelled data is the head of the unlabelled data, or its tail
    assert labelled.argmax() == unlabelled.argmax()
    flipped = torch.bincount(reversed_.unlabelled[1], minlength=10)
    assert flipped[labelled.argmax()] == 11 and labelled[flipped.argmax()] == 2
    assert torch.equal(same.test[1], digit_splits(seed=1).test[1])
    with pytest.raises(ValueError, match="unlabelled must be one of"):
        long_tailed_splits(unlabelled="uniform")
    # a head smaller than the ratio would make the tail under one digit: refused
    with pytest.raises(ValueError, match="needs at least 10 examples in the head class, got 4"):
        long_tailed_counts(4, 10.0)
    # every seed finds enough digits, whichever digit it makes the head
    for seed in range(20):
        long_tailed_splits(seed=seed)


def test_runs_made_by_other_code_are_trained_again(tmp_path, monkeypatch):
    """A finished run is reused only when this code made it: after a change to pseudosel or
    to a trainer (another sources hash), the job trains it again and says why."""
    calls: list = []
    monkeypatch.setattr(compare_selectors, "plots", lambda results, out: None)
    monkeypatch.setattr(train_fixmatch_digits, "train", fake_trainer(calls))
    monkeypatch.setattr(train_unimatch_mosaics, "train", fake_trainer(calls))
    total = len(compare_selectors.plan(False, 1))
    compare_selectors.run_all(1, tmp_path, False, "cpu", log=lambda line: None)
    marker = json.loads(
        (tmp_path / "fixmatch_digits" / "csl" / "seed0" / "result.json").read_text()
    )
    assert marker["code"] == compare_selectors.code_version()
    assert set(marker["code"]) == {"pseudosel", "sources"}
    # the same code: everything is loaded
    calls.clear()
    lines: list[str] = []
    compare_selectors.run_all(1, tmp_path, False, "cpu", log=lines.append)
    assert calls == [] and all("loaded" in line for line in lines)
    # other code: everything is trained again, with the reason
    changed = {**compare_selectors.code_version(), "sources": "0123456789abcdef"}
    monkeypatch.setattr(compare_selectors, "code_version", lambda: changed)
    lines.clear()
    compare_selectors.run_all(1, tmp_path, False, "cpu", log=lines.append)
    assert len(calls) == total
    assert all("trained again: it was made by other code" in line for line in lines)
    assert "-> pseudosel" in lines[0] and "sources 0123456789abcdef" in lines[0]
    # a marker from before the code was recorded counts as other code
    del marker["code"]
    folder = tmp_path / "fixmatch_digits" / "csl" / "seed0"
    (folder / "result.json").write_text(json.dumps(marker))
    stored, why = compare_selectors.finished_run(folder, marker["options"])
    assert stored is None and "unrecorded" in why


def test_the_code_version_covers_the_library_and_the_trainers(tmp_path):
    names = {path.name for path in compare_selectors.code_sources()}
    assert {"csl.py", "flexmatch.py", "selection.py"} <= names  # the library
    assert {"train_fixmatch_digits.py", "train_unimatch_mosaics.py", "digits_data.py"} <= names
    assert {"models.py", "views.py", "selectors_by_name.py"} <= names
    assert "compare_selectors.py" not in names
    version = compare_selectors.code_version()
    assert version["pseudosel"] == pseudosel.__version__ and len(version["sources"]) == 16
    # one changed byte in one source changes the hash
    copies = []
    for i, path in enumerate(compare_selectors.code_sources()):
        copy = tmp_path / f"{i}_{path.name}"
        copy.write_bytes(path.read_bytes())
        copies.append(copy)
    assert compare_selectors.sources_hash(copies) != version["sources"]  # names differ
    before = compare_selectors.sources_hash(copies)
    copies[0].write_bytes(copies[0].read_bytes() + b"#")
    assert compare_selectors.sources_hash(copies) != before


def test_quick_mode_has_its_own_folder():
    assert compare_selectors.output_folder(None, True) == Path("results/comparison-quick")
    assert compare_selectors.output_folder(None, False) == Path("results/comparison")
    assert compare_selectors.output_folder(Path("x"), True) == Path("x")


def test_comparison_quick_mode_writes_everything(tmp_path, capsys):
    assert compare_selectors.main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # runs finish in any order when they train side by side (--jobs): no fixed [i/13]
    assert "| csl+tmp |" in out
    assert re.search(r"\[\d+/13\] unimatch_mosaics csl\+tmp seed0 trained", out)
    marker = tmp_path / "unimatch_mosaics" / "csl+tmp" / "seed0" / "epochs.json"
    before = marker.stat().st_mtime_ns
    assert compare_selectors.main(["--quick", "--out", str(tmp_path)]) == 0
    assert re.search(r"\[\d+/13\] unimatch_mosaics csl\+tmp seed0 loaded", capsys.readouterr().out)
    assert marker.stat().st_mtime_ns == before  # finished runs are not retrained
    results = json.loads((tmp_path / "results.json").read_text())
    for task, rows in results["summary"].items():
        for name, stats in rows.items():
            for key, (mean, std) in stats.items():
                if name == "supervised" and not key.startswith("test_"):
                    assert math.isnan(mean)  # the baseline selects nothing
                    continue
                if key == "precision" and math.isnan(mean):
                    continue  # nothing selected: no precision
                assert 0 <= mean <= 1 and std >= 0, (task, name, key)
    for name in (
        "summary.md",
        "fixmatch_digits_test_accuracy.png",
        "unimatch_mosaics_test_miou.png",
        "unimatch_mosaics_precision.png",
        "unimatch_mosaics_ratio.png",
        "unimatch_mosaics_mean_weight.png",
    ):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "unimatch_mosaics" / "csl+tmp" / "seed0" / "epochs.json").exists()


def sweep_trainer(calls):
    """Stands in for a trainer in the sweep: τ = 0.8 is best, CSL between it and τ = 0.95."""

    def train(selector, *, seed, out, device, progress, epochs=3, tau=0.95, **options):
        calls.append((selector, seed, tau, options.get("labels_per_class")))
        value = 0.5 + 0.01 * seed + (0.1 if tau == 0.8 else 0.0)
        if selector == "csl":
            value = 0.55 + 0.01 * seed
        return fake_history(value, {"ratio": 0.5, "mean_weight": 0.5, "precision": 0.9}, epochs)

    return train


def test_threshold_sweep_reuses_main_job_runs_and_reports_regret(tmp_path, monkeypatch):
    import threshold_sweep

    calls: list = []
    monkeypatch.setattr(train_fixmatch_digits, "train", sweep_trainer(calls))
    monkeypatch.setattr(train_unimatch_mosaics, "train", sweep_trainer(calls))
    monkeypatch.setattr(compare_selectors, "plots", lambda results, out: [])
    main_job = tmp_path / "main"
    compare_selectors.run_all(3, main_job, False, "cpu", log=lambda line: None)
    calls.clear()
    lines: list[str] = []
    sweep = tmp_path / "sweep"
    threshold_sweep.run_sweep(3, sweep, False, "cpu", fresh=False, reuse=main_job, log=lines.append)
    taus = len(threshold_sweep.TAUS)
    total = 3 * 2 * 2 * (taus + 1)  # seeds x tasks x budgets x (every τ and CSL)
    assert len(lines) == total
    # τ = 0.95 and CSL at the main job's budget are the main job's runs: reused, not trained
    assert sum("reused" in line for line in lines) == 3 * 2 * 2
    assert len(calls) == total - 12
    assert {tau for _, _, tau, _ in calls} == set(threshold_sweep.TAUS)
    assert {budget for *_, budget in calls} == {4, 10}
    summary = (sweep / "summary.md").read_text()
    assert "— complete" in summary
    assert (
        "| best τ in hindsight (threshold@0.8) | 3 | +0.050 | [+0.050, +0.050] | worse |" in summary
    )
    assert "| τ = 0.95 | 3 | -0.050 | [-0.050, -0.050] | better |" in summary
    data = json.loads((sweep / "results.json").read_text())
    assert data["unimatch_mosaics/10"]["best_tau"] == "threshold@0.8"
    # a re-run loads everything
    calls.clear()
    threshold_sweep.run_sweep(3, sweep, False, "cpu", fresh=False, reuse=None, log=lines.append)
    assert calls == []
