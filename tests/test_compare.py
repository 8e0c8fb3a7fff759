"""pseudosel compare end to end: files in, table, JSON and plots out; bad files refused."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from probability_maps import classifier_outputs, smooth_maps

from pseudosel.cli import main
from pseudosel.compare import PredictionFile, compare

pytestmark = pytest.mark.slow


@pytest.fixture
def dense_file(tmp_path):
    probs = smooth_maps(6, 5, 16, 16, sharpness=4.0, seed=0)
    labels = probs + 0.4 * torch.rand(probs.shape, generator=torch.Generator().manual_seed(1))
    labels = labels.argmax(1)
    labels[:, :, -2:] = 255
    path = tmp_path / "dense.npz"
    np.savez(path, probs=probs.numpy(), labels=labels.numpy())
    return path, probs, labels


@pytest.fixture
def cls_file(tmp_path):
    probs = classifier_outputs(300, 10, seed=2)
    gen = torch.Generator().manual_seed(3)
    labels = torch.where(
        torch.rand(300, generator=gen) < 0.8,
        probs.argmax(1),
        torch.randint(0, 10, (300,), generator=gen),
    )
    path = tmp_path / "cls.pt"
    torch.save({"logits": probs.log(), "labels": labels}, path)
    return path, probs, labels


def test_dense_file_through_the_cli(dense_file, tmp_path, capsys):
    path, probs, labels = dense_file
    out = tmp_path / "out"
    assert (
        main(
            [
                "compare",
                str(path),
                "--out",
                str(out),
                "--batch-size",
                "4",
                "--selectors",
                "threshold",
                "threshold:0.8",
                "csl",
                "freematch",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "threshold:0.8" in printed and "AUROC" in printed
    report = json.loads((out / "compare.json").read_text())
    assert report["samples"] == 6 and report["num_classes"] == 5
    for name in ("coverage_precision.png", "reliability.png", "csl_feature_space.png"):
        assert (out / name).stat().st_size > 1000
    for metrics in report["selectors"].values():
        for key in ("ratio", "precision", "weighted_precision", "recall", "auroc", "mean_weight"):
            assert 0 <= metrics[key] <= 1
    # the threshold's numbers equal a direct computation on the whole file
    confidence, predicted = probs.max(1)
    known = labels != 255
    selected = known & (confidence >= 0.8)
    expected = ((predicted == labels) & selected).sum() / selected.sum()
    assert report["selectors"]["threshold:0.8"]["precision"] == pytest.approx(expected.item())


def test_streaming_in_small_batches_gives_the_same_per_image_results(dense_file, tmp_path):
    path, _, _ = dense_file
    one = compare(path, selectors=["csl", "threshold"], batch_size=6, progress=False)
    small = compare(path, selectors=["csl", "threshold"], batch_size=1, progress=False)
    for name in ("csl", "threshold"):
        for key, value in one["selectors"][name].items():
            assert small["selectors"][name][key] == pytest.approx(value), (name, key)


def test_classification_logits_file(cls_file, tmp_path):
    path, _, _ = cls_file
    report = compare(
        path,
        selectors=["threshold", "csl", "flexmatch", "softmatch"],
        batch_size=64,
        out=tmp_path / "o",
        progress=False,
    )
    assert set(report["selectors"]) == {"threshold", "csl", "flexmatch", "softmatch"}
    sweep = report["threshold_sweep"]
    assert sweep["coverage"][0] == pytest.approx(1.0) and len(sweep["precision"]) > 10


def test_command_line_entry_point(cls_file, tmp_path):
    path, _, _ = cls_file
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pseudosel.cli",
            "compare",
            str(path),
            "--no-plots",
            "--out",
            str(tmp_path / "c"),
            "--selectors",
            "threshold",
            "csl",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "csl" in result.stdout


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"labels": np.zeros(4, np.int64)}, "exactly one of 'probs' or 'logits'"),
        ({"probs": np.full((4, 3), 1 / 3, np.float32)}, "has no 'labels'"),
        (
            {"probs": np.full((4, 3), 1 / 3, np.float32), "labels": np.zeros(5, np.int64)},
            r"'labels' must have shape \(4,\)",
        ),
        ({"probs": np.zeros((0, 3), np.float32), "labels": np.zeros(0, np.int64)}, "is empty"),
        (
            {"probs": np.full((4, 3), 1 / 3, np.float32), "labels": np.array([0, 1, 7, 2])},
            r"labels must lie in \[0, 3\).*sample 2 has label 7",
        ),
        ({"probs": np.full((4, 1), 1.0, np.float32), "labels": np.zeros(4, np.int64)}, "K >= 2"),
    ],
)
def test_malformed_files_give_named_errors(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        compare(path, progress=False)
    assert main(["compare", str(path), "--no-plots", "--out", str(tmp_path / "o")]) == 2


def test_unknown_selector_and_bad_suffix(cls_file, tmp_path):
    path, _, _ = cls_file
    with pytest.raises(ValueError, match="unknown selector 'fixmatch'"):
        compare(path, selectors=["fixmatch"], progress=False)
    other = tmp_path / "x.csv"
    other.write_text("1,2")
    with pytest.raises(ValueError, match=r"must be \.npz or \.pt"):
        PredictionFile(other)


def test_pickled_objects_are_refused(tmp_path):
    npz = tmp_path / "objects.npz"
    np.savez(npz, probs=np.array([object(), object()], dtype=object), labels=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="holds Python objects"):
        PredictionFile(npz)

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    pt = tmp_path / "payload.pt"
    with open(pt, "wb") as handle:
        pickle.dump({"probs": Payload()}, handle)
    with pytest.raises(ValueError, match="weights_only=True"):
        PredictionFile(pt)
    torch.save({"probs": torch.rand(3, 2), "labels": [1, 2]}, tmp_path / "list.pt")
    with pytest.raises(ValueError):
        PredictionFile(tmp_path / "list.pt")
    with zipfile.ZipFile(tmp_path / "notnpy.npz", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="exactly one of 'probs' or 'logits'"):
        PredictionFile(tmp_path / "notnpy.npz")
