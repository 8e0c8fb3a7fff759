"""The release path: sdist and wheel build, pass twine check and work outside the checkout.

``python -m build`` makes the sdist, then the wheel from that sdist (so the sdist holds what
the build needs). The wheel, and then a copy of the checkout with ``pip install .``, are
installed into one clean virtual environment (``torch==2.13.0`` first, as the README says),
where a smoke test runs from a folder outside the repository; then the example plug-in
(examples/plugin_example) is installed there and found through its entry point: 40-70 s on
2 cores, most of it installing torch and the dependencies.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import pytest

import pseudosel

ROOT = Path(__file__).resolve().parents[1]
VERSION = pseudosel.__version__

pytestmark = pytest.mark.slow

SMOKE = textwrap.dedent(
    """
    import subprocess, sys, time
    from pathlib import Path

    import torch

    start = time.perf_counter()
    import pseudosel
    elapsed = time.perf_counter() - start

    expected_version, checkout = sys.argv[1], Path(sys.argv[2]).resolve()
    where = Path(pseudosel.__file__).resolve()
    assert Path(sys.prefix).resolve() in where.parents, f"imported {where}, not the install"
    assert checkout not in where.parents, f"imported the checkout: {where}"
    assert pseudosel.__version__ == expected_version, pseudosel.__version__
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("cvxpy", "scipy", "matplotlib"))
    assert not heavy, heavy
    assert elapsed < 2.0, f"import pseudosel took {elapsed:.2f} s"

    generator = torch.Generator().manual_seed(0)
    probs = torch.randn(64, 10, generator=generator).softmax(dim=1)
    for method in ("csl", "threshold"):
        sel = pseudosel.select_reliable(probs, method)
        assert sel.labels.shape == sel.weight.shape == (64,), sel.labels.shape
        assert bool(((sel.weight >= 0) & (sel.weight <= 1)).all())
    dense = torch.randn(2, 5, 16, 16, generator=generator).softmax(dim=1)
    ignore = torch.zeros(2, 16, 16, dtype=torch.uint8)
    ignore[:, :4] = 255
    sel = pseudosel.select_reliable(dense, ignore_mask=ignore)
    assert sel.labels.shape == (2, 16, 16) and not bool(sel.valid[:, :4].any())
    assert not bool(sel.mask[:, :4].any()) and float(sel.weight[:, :4].abs().sum()) == 0.0
    logits = torch.randn(2, 5, 16, 16, generator=generator, requires_grad=True)
    loss = pseudosel.weighted_cross_entropy(logits, sel)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None

    # both entry points at once (each imports torch: ~2.5 s)
    script = Path(sys.executable).with_name("pseudosel")
    runs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in ([script, "--help"], [sys.executable, "-m", "pseudosel", "--help"])
    ]
    (via_script, script_err), (via_module, module_err) = [run.communicate() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], script_err + module_err
    assert via_script == via_module, "pseudosel --help and python -m pseudosel --help differ"
    assert "pseudosel compare" in via_script and "``" not in via_script
    print(f"smoke ok: pseudosel {pseudosel.__version__} from {where}, import {elapsed:.2f} s")
    """
)

PLUGIN_SMOKE = textwrap.dedent(
    """
    import json, subprocess, sys
    from pathlib import Path

    import numpy as np
    import torch

    import pseudosel

    # the entry point of the installed package, found without importing it by hand
    assert "mysel" not in sys.modules
    names = pseudosel.available_selectors()
    assert {"mine", "mine_ema"} <= set(names), names
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25]])
    sel = pseudosel.select_reliable(probs, "mine", margin=0.5)
    assert sel.mask.tolist() == [True, False], sel.mask

    # and by name on the command line, in a process of its own
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 4, generator=generator) * 3
    labels = logits.argmax(1).numpy()
    np.savez("preds.npz", probs=logits.softmax(1).numpy(), labels=labels)
    script = Path(sys.executable).with_name("pseudosel")
    run = subprocess.run(
        [script, "compare", "preds.npz", "--selectors", "mine:0.3", "threshold",
         "--no-plots", "--out", "out"],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    measured = json.loads(Path("out/compare.json").read_text())["selectors"]
    assert sorted(measured) == ["mine:0.3", "threshold"], sorted(measured)
    assert 0.0 < measured["mine:0.3"]["ratio"] <= 1.0, measured["mine:0.3"]
    print("plugin ok:", sorted(measured))
    """
)


def _run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} failed ({result.returncode}):\n"
        + result.stdout[-3000:]
        + result.stderr[-3000:]
    )
    return result


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A copy of the files a fresh clone of this working tree has (tracked and new, not
    ignored), so building and installing leave the working tree alone; the tree itself when
    git is not available."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
    )
    if listed.returncode != 0:
        return ROOT
    destination = tmp_path_factory.mktemp("checkout")
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.fixture(scope="module")
def dist(checkout, tmp_path_factory):
    """The sdist and the wheel built from it, as a user or a release job builds them."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(checkout)])
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert [p.name for p in sdists] == [f"pseudosel-{VERSION}.tar.gz"]
    assert [p.name for p in wheels] == [f"pseudosel-{VERSION}-py3-none-any.whl"]
    return sdists[0], wheels[0]


def test_wheel_holds_the_package_only(dist):
    with zipfile.ZipFile(dist[1]) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(f"pseudosel-{VERSION}.dist-info/METADATA").decode()
        entry_points = wheel.read(f"pseudosel-{VERSION}.dist-info/entry_points.txt").decode()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"pseudosel", f"pseudosel-{VERSION}.dist-info"}, tops
    for needed in ("__init__.py", "__main__.py", "cli.py", "py.typed", "integrations/usb.py"):
        assert f"pseudosel/{needed}" in names, needed
    # every module of the checkout's package is in the wheel
    package = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "pseudosel").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert package <= set(names), sorted(package - set(names))
    assert f"\nVersion: {VERSION}\n" in metadata
    assert "Requires-Dist: torch>=" in metadata and "[torch]" not in metadata
    assert "pseudosel = pseudosel.tools.cli:main" in entry_points


def test_sdist_holds_what_the_build_needs_and_no_more(dist):
    prefix = f"pseudosel-{VERSION}/"
    with tarfile.open(dist[0]) as sdist:
        names = {name.removeprefix(prefix) for name in sdist.getnames()}
    for needed in ("pyproject.toml", "README.md", "CHANGELOG.md", "PKG-INFO", "pseudosel/py.typed"):
        assert needed in names, needed
    for left_out in ("tests", "examples", "benchmarks", "docs", ".ci", ".venv"):
        assert not any(n == left_out or n.startswith(left_out + "/") for n in names), left_out


def test_twine_check(dist):
    _run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dist)])


def test_wheel_and_checkout_install_in_a_clean_venv(dist, checkout, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    # --no-compile: byte-compiling torch at install time costs ~10 s and changes nothing here
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "install", "-q", "--no-compile"]
    smoke = tmp_path / "smoke.py"
    smoke.write_text(SMOKE)
    outside = tmp_path / "elsewhere"  # not the checkout: `import pseudosel` must find the install
    outside.mkdir()

    # README: install torch first (a bare torch requirement pulls a CUDA build), then the wheel
    _run([*pip, "torch==2.13.0"])
    _run([*pip, str(dist[1])])
    result = _run([str(python), str(smoke), VERSION, str(ROOT)], cwd=outside)
    assert "smoke ok" in result.stdout

    # README: `pip install .` from a checkout, into the same environment
    _run([str(python), "-m", "pip", "uninstall", "-y", "-q", "pseudosel"])
    _run([*pip, "."], cwd=checkout)
    result = _run([str(python), str(smoke), VERSION, str(checkout)], cwd=outside)
    assert "smoke ok" in result.stdout

    # docs/plugins.md: a plug-in installed as a package registers through its entry point
    plugin_smoke = tmp_path / "plugin_smoke.py"
    plugin_smoke.write_text(PLUGIN_SMOKE)
    _run([*pip, "--no-deps", str(checkout / "examples" / "plugin_example")])
    result = _run([str(python), str(plugin_smoke)], cwd=outside)
    assert "plugin ok" in result.stdout


def test_install_instructions_name_what_is_tested(dist):
    """README and Quickstart: the index once published, the checkout and the built wheel."""
    wheel_pattern = "dist/pseudosel-*-py3-none-any.whl"
    assert fnmatch(f"dist/{dist[1].name}", wheel_pattern)
    for document in (ROOT / "README.md", ROOT / "docs" / "quickstart.md"):
        text = document.read_text()
        for instruction in (
            "pip install torch==2.13.0",
            "pip install pseudosel",
            "pip install .",
            "python -m build",
            f"pip install {wheel_pattern}",
        ):
            assert instruction in text, f"{document.name} lacks {instruction!r}"


def test_changelog_has_a_section_for_the_next_or_current_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    sections = [line for line in changelog.splitlines() if line.startswith("## [")]
    assert sections, "CHANGELOG.md has no version section"
    assert sections[0].startswith(("## [Unreleased]", f"## [{VERSION}]")), sections[0]
