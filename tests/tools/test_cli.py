"""The command line: `python -m pseudosel`, argument errors that name the option, exit codes."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from pseudosel.tools import bench as benchmark
from pseudosel.tools.cli import main


def run_module(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pseudosel", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.fixture
def small_file(tmp_path):
    logits = torch.randn(40, 4, generator=torch.Generator().manual_seed(0)) * 3
    path = tmp_path / "small.npz"
    np.savez(path, probs=logits.softmax(1).numpy(), labels=logits.argmax(1).numpy())
    return path


def test_python_dash_m_pseudosel_help():
    result = run_module("--help")
    assert result.returncode == 0, result.stderr
    assert "compare" in result.stdout and "bench" in result.stdout
    assert result.stdout.startswith("usage: pseudosel")


def test_python_dash_m_pseudosel_compare(small_file, tmp_path):
    out = tmp_path / "out"
    result = run_module(
        "compare", str(small_file), "--no-plots", "--selectors", "threshold", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "threshold" in result.stdout and (out / "compare.json").exists()


def test_compare_help_states_the_input_format(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for word in ("probs", "logits", "labels", "valid", "ignore_mask", "--from-logits", ".npz"):
        assert word in text, word
    assert "``" not in text  # plain text, not reST


@pytest.mark.parametrize(
    "argv,message",
    [
        (["bench", "--sizes", "8x"], r"argument --sizes: '8x' is not a shape like .*8x21x321x321"),
        (["bench", "--sizes", "448x10", "ax10"], r"argument --sizes: 'ax10' is not a shape"),
        (["bench", "--sizes", "0x10"], r"argument --sizes: '0x10' is not a shape"),
        (["bench", "--sizes", "8x1"], r"argument --sizes: '8x1' .*K \(the second\) >= 2"),
        (["bench", "--repeats", "0"], r"argument --repeats: '0' is not a positive integer"),
        (["bench", "--device", "gpu0"], r"argument --device: 'gpu0' is not a torch device"),
        (
            ["compare", "p.npz", "--selectors", "threshold:abc"],
            r"argument --selectors: 'threshold:abc': tau 'abc' is not a number; "
            r"write e\.g\. threshold:0\.95",
        ),
        (
            ["compare", "p.npz", "--selectors", "threshold:1.5"],
            r"--selectors: .*tau '1.5' is refused by threshold: tau must be in \[0, 1\], got 1.5",
        ),
        (["compare", "p.npz", "--selectors", "threshold:nan"], r"--selectors: .*tau 'nan'"),
        (
            ["compare", "p.npz", "--selectors", "csl:0.5"],
            r"--selectors: 'csl:0.5': csl takes no bare value .*e\.g\. csl:alpha=2\.0",
        ),
        (["compare", "p.npz", "--selectors", "fixmatch"], r"--selectors: unknown selector"),
        (["compare", "p.npz", "--batch-size", "0"], r"--batch-size: '0' is not a positive"),
        (["compare", "p.npz", "--ignore-index", "x"], r"--ignore-index: 'x' is not an integer"),
    ],
)
def test_parse_errors_name_the_option_and_show_an_example(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"pseudosel {argv[0]}: error: " in err
    assert re.search(message, err), err
    assert "e.g." in err


def test_parse_error_in_a_subprocess_has_no_traceback(tmp_path):
    result = run_module("bench", "--sizes", "8x", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "--sizes: '8x' is not a shape like" in result.stderr
    assert "Traceback" not in result.stderr


def test_parse_size():
    assert benchmark.parse_size("8x21x321x321") == (8, 21, 321, 321)
    assert benchmark.parse_size(" 448X10 ") == (448, 10)
    for text in ("8x", "x", "8", "8x-2", "8x2.5", "8x²"):
        with pytest.raises(ValueError, match=f"{text!r} is not a shape like"):
            benchmark.parse_size(text)
    with pytest.raises(TypeError, match="a size must be a string"):
        benchmark.parse_size(448)


def test_benchmark_run_checks_every_size_before_timing():
    with pytest.raises(ValueError, match="'8x' is not a shape"):
        benchmark.run(["448x10", "8x"], ["float32"], repeats=1, compiled=False)
    with pytest.raises(TypeError, match="sizes must be a list"):
        benchmark.run("448x10", ["float32"])


def test_parse_selector():
    from pseudosel.tools.compare import parse_selector

    assert parse_selector("threshold") == ("threshold", {})
    assert parse_selector("threshold:0.8") == ("threshold", {"tau": 0.8})
    assert parse_selector("freematch") == ("freematch", {})
    with pytest.raises(ValueError, match="tau '' is not a number"):
        parse_selector("threshold:")
    with pytest.raises(TypeError, match="selector spec must be a string"):
        parse_selector(0.9)


def test_bad_file_is_one_message_and_status_2(tmp_path, capsys):
    path = tmp_path / "logits.npz"
    logits = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    np.savez(path, probs=logits.numpy(), labels=logits.argmax(1).numpy())
    assert main(["compare", str(path), "--no-plots", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]  # after the erased progress bar
    assert last.startswith("pseudosel compare: error: logits.npz: 'probs' must hold")
    assert "--from-logits" in last and "Traceback" not in err


def test_unwritable_output_is_status_1(small_file, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    argv = ["compare", str(small_file), "--selectors", "threshold", "--out", str(blocker)]
    assert main([*argv, "--no-plots"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pseudosel compare: error: ") and "a_file" in err
    assert "Traceback" not in err
