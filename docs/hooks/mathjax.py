"""MkDocs hook: serve MathJax from the built site and fail the build on unrendered math.

Math is written as ``$...$`` / ``$$...$$`` and turned by ``pymdownx.arithmatex`` (generic
mode) into ``<span class="arithmatex">\\(...\\)</span>`` / ``<div class="arithmatex">\\[...\\]
</div>``, which MathJax typesets in the browser. Nothing loads from a CDN:

- ``on_files`` adds MathJax 3 (the ``es5`` build shipped by the PyPI package
  ``django-static-mathjax``, Apache-2.0; installed by the ``docs`` extra, never committed) to
  the site under ``assets/mathjax/``, so ``mkdocs build`` and ``mkdocs serve`` both serve it;
- ``on_post_page`` fails the build (any mode, not only ``--strict``) when a page still holds
  math delimiters outside code and outside arithmatex elements (for example ``$$`` in a list
  item that arithmatex did not take), when an arithmatex element lost its delimiters, or when
  a page with math does not load the local MathJax script.
"""

from __future__ import annotations

import importlib.util
import re
from html.parser import HTMLParser
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

SITE_DIR = "assets/mathjax"
SCRIPT = "tex-chtml-full.js"
# tex-chtml-full.js bundles TeX input, every TeX extension and CommonHTML output; the
# folders hold what it loads on demand: its fonts (output/chtml/fonts) and what the MathJax
# menu can switch on (SVG output, accessibility, speech rules).
SUBDIRS = ("a11y", "adaptors", "input", "output", "sre", "ui")

# Delimiters that must never reach a reader as text: display and inline TeX delimiters,
# LaTeX environments, and $...$ around something that looks like TeX.
UNRENDERED = re.compile(
    r"\$\$|\\\[|\\\]|\\\(|\\\)|\\begin\{|\\end\{"
    r"|(?<![\w$])\$(?=\S)[^$\n]*?(?:\\[a-zA-Z]+|[_^{}])[^$\n]*?(?<=\S)\$(?![\w$])"
)
SKIPPED = {"code", "pre", "script", "style", "textarea", "kbd", "samp"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


def mathjax_root() -> Path:
    """The ``es5`` folder of the installed MathJax (``django-static-mathjax``)."""
    spec = importlib.util.find_spec("mathjax")  # finds the folder; runs no Django code
    root = None
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"
    if root is None or not (root / SCRIPT).is_file():
        raise PluginError(
            "MathJax not found: the docs need the package django-static-mathjax "
            "(pip install -e '.[docs]'), which ships MathJax for offline rendering"
        )
    return root


class _MathScanner(HTMLParser):
    """Collects text outside code and arithmatex elements, and each arithmatex element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str]] = []  # (tag, kind) with kind in "", "skip", "math"
        self.outside: list[str] = []
        self.math: list[str] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.scripts.append(attributes["src"] or "")
        if tag in VOID:
            return
        classes = (attributes.get("class") or "").split()
        if any(kind for _, kind in self.stack):
            kind = "inner"
        elif tag in SKIPPED:
            kind = "skip"
        elif "arithmatex" in classes:
            kind = "math"
            self.math.append("")
        else:
            kind = ""
        self.stack.append((tag, kind))

    def handle_endtag(self, tag):
        for position in range(len(self.stack) - 1, -1, -1):
            if self.stack[position][0] == tag:
                del self.stack[position:]
                return

    def handle_data(self, data):
        kinds = [kind for _, kind in self.stack if kind]
        if not kinds:
            self.outside.append(data)
        elif kinds[0] == "math":
            self.math[-1] += data


def math_problems(html: str, mathjax_url: str | None = None) -> list[str]:
    """What is wrong with the math of one built page (empty when nothing is).

    ``mathjax_url`` is the page-relative URL of the local MathJax script, required when the
    page has math; ``None`` skips that check.
    """
    scanner = _MathScanner()
    scanner.feed(html)
    scanner.close()
    problems = []
    for line in "".join(scanner.outside).splitlines():
        for match in UNRENDERED.finditer(line):
            start = max(match.start() - 40, 0)
            problems.append(
                f"unrendered math {match.group()!r} in: {line[start : match.end() + 40].strip()}"
            )
    for fragment in scanner.math:
        text = fragment.strip()
        if not (
            (text.startswith("\\(") and text.endswith("\\)"))
            or (text.startswith("\\[") and text.endswith("\\]"))
        ):
            problems.append(f"arithmatex element without \\( \\) or \\[ \\] delimiters: {text!r}")
    if scanner.math and mathjax_url is not None and mathjax_url not in scanner.scripts:
        problems.append(f"page has math but does not load the local MathJax ({mathjax_url})")
    return problems


def on_files(files: Files, *, config) -> Files:
    root = mathjax_root()
    sources = {SCRIPT: root / SCRIPT, "LICENSE": root.parent / "LICENSE"}
    for name in SUBDIRS:
        for path in sorted((root / name).rglob("*")):
            if path.is_file():
                sources[path.relative_to(root).as_posix()] = path
    for uri, path in sources.items():
        files.append(File.generated(config, f"{SITE_DIR}/{uri}", abs_src_path=str(path)))
    return files


def on_post_page(output: str, *, page, config) -> str:
    # extra_javascript is linked relative to the page: "csl/" -> "../assets/..."
    problems = math_problems(output, "../" * page.url.count("/") + f"{SITE_DIR}/{SCRIPT}")
    if problems:
        raise PluginError(
            f"{page.file.src_uri}: math that no renderer will take "
            "(write $...$ or $$...$$ on lines of their own, see pymdownx.arithmatex):\n  "
            + "\n  ".join(problems)
        )
    return output
