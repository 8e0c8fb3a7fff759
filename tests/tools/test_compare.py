"""pseudosel compare end to end: files in, table, JSON and plots out; bad files refused."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from helpers.probability_maps import classifier_outputs, noisy_labels, smooth_maps

from pseudosel.tools.cli import main
from pseudosel.tools.compare import PredictionFile, compare

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
    labels = noisy_labels(probs, seed=3)
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
                "--selectors",  # a choice of selectors
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
    chosen = ["threshold", "csl", "flexmatch", "softmatch"]  # a choice of selectors
    report = compare(path, selectors=chosen, batch_size=64, out=tmp_path / "o", progress=False)
    assert set(report["selectors"]) == set(chosen)
    sweep = report["threshold_sweep"]
    assert sweep["coverage"][0] == pytest.approx(1.0) and len(sweep["precision"]) > 10


def test_command_line_entry_point(cls_file, tmp_path):
    path, _, _ = cls_file
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pseudosel.tools.cli",
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


def _last_line(text: str) -> str:
    """The last line written to a terminal (a progress bar is erased with carriage returns)."""
    return text.replace("\r", "\n").strip().splitlines()[-1]


@pytest.fixture
def logits_as_probs(tmp_path):
    logits = torch.randn(20, 5, generator=torch.Generator().manual_seed(4)) * 3
    labels = logits.argmax(1)
    path = tmp_path / "mislabelled.npz"
    np.savez(path, probs=logits.numpy(), labels=labels.numpy())
    return path, logits, labels


def test_logits_saved_as_probs_are_refused_with_a_from_logits_hint(logits_as_probs, tmp_path):
    path, logits, labels = logits_as_probs
    with pytest.raises(
        ValueError,
        match=r"mislabelled\.npz: 'probs' must hold probabilities along dim 1 .*sample 0 has "
        r"sum .*These look like logits: rerun with --from-logits",
    ):
        compare(path, progress=False)
    # --from-logits reads them as logits: the same report as the file saved under 'logits'
    fixed = compare(path, selectors=["threshold", "csl"], from_logits=True, progress=False)
    proper = tmp_path / "proper.npz"
    np.savez(proper, logits=logits.numpy(), labels=labels.numpy())
    expected = compare(proper, selectors=["threshold", "csl"], progress=False)
    assert fixed["selectors"] == expected["selectors"]


def test_logits_saved_as_probs_through_python_dash_m(logits_as_probs, tmp_path):
    path, _, _ = logits_as_probs
    command = [sys.executable, "-m", "pseudosel", "compare", str(path), "--no-plots"]
    command += ["--out", str(tmp_path / "o")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = _last_line(result.stderr)
    assert message.startswith("pseudosel compare: error: mislabelled.npz: 'probs'")
    assert "--from-logits" in message
    assert "mean w" not in result.stdout  # no table is printed
    fixed = subprocess.run([*command, "--from-logits"], capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stderr
    assert "mean w" in fixed.stdout


def test_nan_rows_are_refused_with_file_key_and_position(dense_file, tmp_path, capsys):
    _, probs, labels = dense_file
    probs = probs.clone()
    probs[4, :, 3, 7] = float("nan")  # sample 4: in the second batch of 4
    path = tmp_path / "nan.npz"
    np.savez(path, probs=probs.numpy(), labels=labels.numpy())
    with pytest.raises(
        ValueError, match=r"nan\.npz: 'probs' must hold .*sample 4 at position \(3, 7\) has sum nan"
    ):
        compare(path, batch_size=4, progress=False)
    argv = ["compare", str(path), "--no-plots", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "NaN or infinite" in _last_line(captured.err) and "Traceback" not in captured.err
    assert "mean w" not in captured.out
    # a NaN at a position marked invalid is never seen by a selector, and passes
    valid = np.ones(labels.shape, bool)
    valid[4, 3, 7] = False
    np.savez(path, probs=probs.numpy(), labels=labels.numpy(), valid=valid)
    report = compare(path, selectors=["threshold", "csl"], batch_size=4, progress=False)
    assert all(math.isfinite(v["mean_weight"]) for v in report["selectors"].values())


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_logits_are_refused(cls_file, tmp_path, bad):
    _, probs, labels = cls_file
    logits = probs.log()
    logits[123, 4] = bad
    path = tmp_path / "bad_logits.pt"
    torch.save({"logits": logits, "labels": labels}, path)
    with pytest.raises(
        ValueError,
        match=r"bad_logits\.pt: 'logits' read as logits must be finite at valid positions; "
        r"sample 123 holds \[",
    ):
        compare(path, batch_size=50, progress=False)


def test_rows_that_do_not_sum_to_one_are_refused(tmp_path):
    probs = torch.full((6, 4), 0.25)
    probs[5] = torch.tensor([0.3, 0.3, 0.2, 0.21])  # 1.01: not logits, just unnormalised
    path = tmp_path / "unnormalised.npz"
    np.savez(path, probs=probs.numpy(), labels=np.zeros(6, np.int64))
    with pytest.raises(ValueError, match=r"sample 5 has sum 1\.01.*Renormalise") as error:
        compare(path, progress=False)
    assert "--from-logits" not in str(error.value)
    # within the stored dtype's tolerance passes: float16 rows that sum to 1 + 2e-3
    half = torch.tensor([[0.5, 0.502], [0.25, 0.75]], dtype=torch.float16)
    np.savez(path, probs=half.numpy(), labels=np.zeros(2, np.int64))
    compare(path, selectors=["threshold"], progress=False)


def test_uint8_ignore_mask_with_a_negative_ignore_index_is_refused(dense_file, tmp_path):
    _, probs, labels = dense_file
    ignore = np.zeros(labels.shape, np.uint8)
    ignore[0, :4] = 255
    path = tmp_path / "uint8.npz"
    np.savez(path, probs=probs.numpy(), labels=labels.numpy(), ignore_mask=ignore)
    with pytest.raises(
        ValueError,
        match=r"uint8\.npz: ignore_index=-1 \(--ignore-index\) is outside the range \[0, 255\] "
        r"of 'ignore_mask' \(dtype torch\.uint8\)",
    ):
        compare(path, ignore_index=-1, progress=False)
    compare(path, selectors=["threshold"], progress=False)  # 255 fits uint8
    with pytest.raises(TypeError, match="ignore_index must be an int, .*got NoneType"):
        compare(path, ignore_index=None, progress=False)


def test_selector_specs_are_checked_before_reading(cls_file):
    path, _, _ = cls_file
    with pytest.raises(ValueError, match=r"'threshold:abc': tau 'abc' is not a number; write e"):
        compare(path, selectors=["threshold:abc"], progress=False)
    # the selector's own range check, before the file is even opened
    with pytest.raises(ValueError, match=r"tau '1\.5' is refused .*tau must be in \[0, 1\]"):
        compare(path.with_name("missing.npz"), selectors=["threshold:1.5"], progress=False)
    with pytest.raises(TypeError, match="selectors must be a list"):
        compare(path, selectors="csl", progress=False)


def test_stateful_selectors_are_measured_after_warmup_passes(cls_file, tmp_path):
    path, probs, labels = cls_file
    specs = ["threshold", "flexmatch", "freematch"]  # a choice of selectors
    cold = compare(path, selectors=specs, from_logits=True, progress=False, passes=1)
    warm = compare(path, selectors=specs, from_logits=True, progress=False)
    assert warm["passes"] == 3
    assert warm["selectors"]["flexmatch"]["warmup_passes"] == 2
    assert warm["selectors"]["threshold"]["warmup_passes"] == 0
    assert cold["selectors"]["flexmatch"]["warmup_passes"] == 0
    # stateless selectors do not depend on the passes
    assert warm["selectors"]["threshold"] == cold["selectors"]["threshold"]
    # cold, the EMA selectors keep everything (their threshold starts at 1/K); warmed up
    # they no longer do, and FlexMatch keeps less once samples are recorded
    assert cold["selectors"]["freematch"]["ratio"] == 1.0
    assert warm["selectors"]["freematch"]["ratio"] < 0.95
    assert warm["selectors"]["flexmatch"]["ratio"] < cold["selectors"]["flexmatch"]["ratio"]
    # one warm-up pass reaches the steady state: more passes measure the same
    more = compare(path, selectors=specs, from_logits=True, progress=False, passes=5)
    for spec in specs:
        steady = {k: v for k, v in more["selectors"][spec].items() if k != "warmup_passes"}
        assert steady == {k: warm["selectors"][spec][k] for k in steady}, spec
    # the measured pass equals FreeMatch driven by hand: a cumulative-average warm-up pass
    # (momentum 1 - 1/step), then its own momentum 0.999
    import pseudosel
    from pseudosel.metrics import SelectionStats

    module = pseudosel.FreeMatchSelector(10, validate=False)
    stats = SelectionStats(10)
    batches = [probs[i : i + 64].log().softmax(1) for i in range(0, 300, 64)]
    for step, batch in enumerate(batches, 1):
        module.momentum = min(0.999, 1 - 1 / step)
        module(batch, None)
    module.momentum = 0.999
    for i, batch in enumerate(batches):
        stats.update(module(batch, None), labels[64 * i : 64 * i + 64])
    two = compare(path, selectors=["freematch"], from_logits=True, progress=False, passes=2)
    expected = float(stats.compute()["ratio"])
    assert two["selectors"]["freematch"]["ratio"] == pytest.approx(expected, abs=1e-6)


def test_the_table_marks_warmed_up_selectors(cls_file, tmp_path, capsys):
    path, _, _ = cls_file
    args = ["compare", str(path), "--out", str(tmp_path / "o"), "--no-plots", "--from-logits"]
    assert main([*args, "--selectors", "threshold", "softmatch", "--passes", "2"]) == 0
    out = capsys.readouterr().out
    assert "softmatch*" in out and "threshold*" not in out
    assert "measured on the last of 2 passes" in out
    report = json.loads((tmp_path / "o" / "compare.json").read_text())
    assert report["passes"] == 2 and report["selectors"]["softmatch"]["warmup_passes"] == 1
    assert main([*args, "--selectors", "softmatch", "--passes", "1"]) == 0
    assert "*" not in capsys.readouterr().out  # one pass: the cold start, unmarked


@pytest.mark.parametrize("passes,error", [(0, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_passes_are_refused(cls_file, passes, error):
    with pytest.raises(error, match="passes"):
        compare(cls_file[0], selectors=["flexmatch"], progress=False, passes=passes)


def test_bad_passes_on_the_command_line(cls_file, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["compare", str(cls_file[0]), "--passes", "0"])
    assert stop.value.code == 2
    assert "--passes 3" in capsys.readouterr().err


def test_ignore_index_reaches_every_statistic(tmp_path):
    """The same predictions with every fifth label unknown, marked 255 or marked -1 with
    ignore_index=-1, give the same numbers: the unknown labels never count as wrong."""
    probs = classifier_outputs(200, 4, seed=5)
    truth = probs.argmax(1).clone()
    truth[1::7] = (truth[1::7] + 1) % 4  # some wrong pseudo-labels, so precision < 1
    unknown = torch.arange(200) % 5 == 0
    reports = {}
    for marker in (255, -1):
        labels = torch.where(unknown, marker, truth)
        path = tmp_path / f"unknown{marker}.npz"
        np.savez(path, probs=probs.numpy(), labels=labels.numpy())
        reports[marker] = compare(
            path, selectors=["threshold:0.5", "csl"], ignore_index=marker, progress=False
        )
    for spec in ("threshold:0.5", "csl"):
        assert reports[-1]["selectors"][spec] == reports[255]["selectors"][spec], spec
    # and the numbers are those of the known labels alone
    known = ~unknown
    selected = probs.max(1).values >= 0.5
    expected = float((selected & known & (probs.argmax(1) == truth)).sum()) / float(
        (selected & known).sum()
    )
    assert reports[-1]["selectors"]["threshold:0.5"]["precision"] == pytest.approx(expected)


def test_a_selector_still_in_its_own_warmup_is_marked(tmp_path, capsys):
    """FlexMatch with few samples reaching τ stays in its threshold warm-up (β = σ / unused,
    thresholds near 0, coverage near 1) through every pass: the table and JSON say so;
    confident predictions leave it, and the mark goes."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(400, 5, generator=gen)
    logits[:18, 0] += 12  # only 18 of 400 samples reach τ = 0.95
    labels = logits.argmax(1)
    unsure = tmp_path / "unsure.npz"
    np.savez(unsure, logits=logits.numpy(), labels=labels.numpy())
    confident = tmp_path / "confident.npz"
    np.savez(confident, logits=(logits * 20).numpy(), labels=labels.numpy())
    out = tmp_path / "o"
    assert main(["compare", str(unsure), "--out", str(out), "--no-plots",
                 "--selectors", "threshold", "flexmatch"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    report = json.loads((out / "compare.json").read_text())
    assert report["selectors"]["flexmatch"]["in_own_warmup"] is True
    assert report["selectors"]["flexmatch"]["ratio"] > 0.9  # its warm-up numbers
    assert report["selectors"]["threshold"]["in_own_warmup"] is False
    assert "flexmatch*!" in text and "still in its own warm-up when measured" in text
    assert main(["compare", str(confident), "--out", str(out), "--no-plots",
                 "--selectors", "flexmatch"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert (
        json.loads((out / "compare.json").read_text())["selectors"]["flexmatch"]["in_own_warmup"]
        is False
    )
    assert "!" not in text
