"""The example trainers and the selector comparison (the README's main job)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

import compare_selectors  # noqa: E402
import train_fixmatch_digits  # noqa: E402
import train_unimatch_mosaics  # noqa: E402
from digits_data import BACKGROUND, INK, digit_splits, make_mosaics  # noqa: E402

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
            if key not in ("epoch", "loss"):
                assert 0 <= value <= 1, (key, value)
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


def test_comparison_quick_mode_writes_everything(tmp_path, capsys):
    assert compare_selectors.main(["--quick", "--out", str(tmp_path)]) == 0
    assert "| csl+tmp |" in capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    for task, rows in results["summary"].items():
        for name, stats in rows.items():
            for key, (mean, std) in stats.items():
                if name == "supervised" and not key.startswith("test_"):
                    assert math.isnan(mean)  # the baseline selects nothing
                    continue
                assert 0 <= mean <= 1 and std >= 0, (task, name, key)
    for name in (
        "summary.md",
        "fixmatch_digits_test_accuracy.png",
        "unimatch_mosaics_test_miou.png",
        "unimatch_mosaics_precision.png",
    ):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "unimatch_mosaics" / "csl+tmp" / "seed0" / "epochs.json").exists()
