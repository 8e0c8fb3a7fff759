"""The documentation site builds with --strict (broken links, missing pages fail), renders
its math offline (MathJax served from the site itself, nothing from a CDN), and the build
fails on math that no renderer takes (docs/hooks/mathjax.py)."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import textwrap
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
    "binary",
    "detection",
    "beyond",
    "distributed",
    "recipes",
    "performance",
    "choosing",
    "precision",
    "plugins",
    "faq",
    "api",
]
MATHJAX = "assets/mathjax/tex-chtml-full.js"


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config)]
        + ["--site-dir", str(site)],
        cwd=config.parent,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    path = tmp_path_factory.mktemp("site")
    result = _mkdocs_build(ROOT / "mkdocs.yml", path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return path


def test_every_page_exists_with_content():
    for page in PAGES:
        text = (ROOT / "docs" / f"{page}.md").read_text()
        assert len(text) > 400, page
    assert (ROOT / "docs" / "assets" / "csl_feature_space.png").stat().st_size > 10_000


def test_mkdocs_build_strict(site):
    assert (site / "csl" / "index.html").exists()
    api = (site / "api" / "index.html").read_text()
    assert "select_reliable" in api and "FlexMatchSelector" in api
    assert not (site / "hooks").exists(), "the build hook is not part of the site"


# Independent of the hook's own check: cut code, scripts and arithmatex elements out of the
# page, strip the tags, and look for TeX delimiters in what a reader would see as text.
CUT = re.compile(
    r"<(pre|code|script|style|textarea)\b.*?</\1>"
    r"|<(span|div) class=\"arithmatex\">.*?</\2>",
    re.S,
)
DELIMITERS = re.compile(r"\$\$|\\\[|\\\]|\\\(|\\\)|\\begin\{|(?<![\w$])\$[^$\s][^$\n]*?\\[a-z]")
ARITHMATEX = re.compile(r"<(span|div) class=\"arithmatex\">(.*?)</\1>", re.S)


def _visible_text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", CUT.sub(" ", page)))


def test_no_page_shows_unrendered_math(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= len(PAGES)
    offenders = {}
    for page in pages:
        text = page.read_text()
        found = DELIMITERS.findall(_visible_text(text))
        for kind, body in ARITHMATEX.findall(text):
            wrapped = ("\\(", "\\)") if kind == "span" else ("\\[", "\\]")
            if not (body.strip().startswith(wrapped[0]) and body.strip().endswith(wrapped[1])):
                found.append(body)
        if found:
            offenders[str(page.relative_to(site))] = found
    assert not offenders, offenders


def test_math_is_typeset_by_mathjax_served_from_the_site(site):
    page = (site / "csl" / "index.html").read_text()
    assert len(ARITHMATEX.findall(page)) >= 3, "the CSL page has three display formulas"
    scripts = re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", page)
    assert f"../{MATHJAX}" in scripts and "../javascripts/mathjax.js" in scripts
    assert scripts.index("../javascripts/mathjax.js") < scripts.index(f"../{MATHJAX}")
    assert (site / MATHJAX).stat().st_size > 500_000
    fonts = list((site / "assets/mathjax/output/chtml/fonts/woff-v2").glob("*.woff"))
    assert len(fonts) > 10, "MathJax's CommonHTML fonts are served with it"
    assert (site / "assets/mathjax/LICENSE").exists()


def test_nothing_loads_from_outside_the_site(site):
    external = re.compile(
        r"<(?:script|link|img|iframe|source|embed)\b[^>]*\b(?:src|href)=\"(?:https?:)?//[^\"]*\"",
        re.I,
    )
    offenders = {}
    for page in sorted(site.rglob("*.html")):
        found = external.findall(page.read_text())
        if found:
            offenders[str(page.relative_to(site))] = found
    assert not offenders, offenders
    for css in site.rglob("*.css"):
        assert not re.search(r"@import\s+url\(\s*['\"]?(?:https?:)?//", css.read_text()), css


def test_the_build_fails_on_math_no_renderer_takes(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    (tmp_path / "docs").mkdir()
    config = tmp_path / "mkdocs.yml"
    config.write_text(
        textwrap.dedent(
            f"""
            site_name: math check
            theme: mkdocs
            markdown_extensions:
              - pymdownx.arithmatex:
                  generic: true
            extra_javascript:
              - javascripts/mathjax.js
              - {MATHJAX}
            hooks:
              - {ROOT / "docs" / "hooks" / "mathjax.py"}
            """
        )
    )
    page = tmp_path / "docs" / "index.md"
    page.write_text("# Good\n\nInline $x_i^2$ and display:\n\n$$ \\frac{a}{b} $$\n")
    result = _mkdocs_build(config, tmp_path / "good")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "good" / MATHJAX).exists()

    # a display formula indented by two spaces in a list item: arithmatex leaves it as text
    page.write_text("# Bad\n\n- a point:\n\n  $$ s = \\tfrac12 r $$\n\nafter\n")
    result = _mkdocs_build(config, tmp_path / "bad")
    assert result.returncode != 0
    assert "unrendered math '$$'" in result.stdout + result.stderr


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def test_csl_page_renders_its_formulas_in_a_headless_browser(site, tmp_path):
    """Chromium, offline (every host name unresolvable), opens the built CSL page from disk;
    MathJax must have typeset each formula, and a screenshot is written for a person."""
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # a CDN load would fail, not hang
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=15000",  # run the page's scripts to completion
        "--hide-scrollbars",
    ]
    url = (site / "csl" / "index.html").as_uri()
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-3000:]
    body = dom.stdout[dom.stdout.find("<body") :]
    formulas = len(ARITHMATEX.findall((site / "csl" / "index.html").read_text()))
    assert body.count("<mjx-container") == formulas, "every formula typeset by MathJax"
    assert "<mjx-merror" not in body, "a formula failed to parse"
    assert not DELIMITERS.search(_visible_text(body)), "raw TeX left on the page"

    screenshot = tmp_path / "csl.png"
    shot = subprocess.run(
        [chromium, *flags, "--window-size=1200,2000", f"--screenshot={screenshot}", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.returncode == 0, shot.stderr[-3000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 50_000, "a blank page would compress to a few KB"
    print(f"screenshot of the CSL page: {screenshot}")


def test_the_beyond_page_runs():
    """docs/beyond.md's code blocks (ShrinkMatch, CGMatch, S4MC, class-prior thresholds),
    run in order in one namespace."""
    page = (ROOT / "docs" / "beyond.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(blocks) >= 5
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/beyond.md", "exec"), namespace)
