"""The documentation site builds with --strict (broken links, missing pages fail)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

PAGES = [
    "index",
    "quickstart",
    "concepts",
    "csl",
    "dense",
    "distributed",
    "recipes",
    "performance",
    "choosing",
    "faq",
    "api",
]


def test_every_page_exists_with_content():
    for page in PAGES:
        text = (ROOT / "docs" / f"{page}.md").read_text()
        assert len(text) > 400, page
    assert (ROOT / "docs" / "assets" / "csl_feature_space.png").stat().st_size > 10_000


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "csl" / "index.html").exists()
    api = (tmp_path / "api" / "index.html").read_text()
    assert "select_reliable" in api and "FlexMatchSelector" in api
