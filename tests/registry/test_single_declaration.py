"""Each selector is declared once: no file but the registry's declarations holds a
hand-written list of selector names.

Every Python file of the library, the tests and the benchmarks is parsed; a literal
collection (list, tuple, set, dict keys) holding three or more registered selector names
fails, naming the file and line — that is what a copy of the registry looks like, and
copies disagree (a test covering "every stateful selector" must ask the registry). The
declarations (pseudosel/registry/builtin.py) are the one place where names are written down.
Out of scope, and why:

- a pair of names (a test comparing threshold with CSL picks two, it lists nothing);
- ``__all__``: Python names, which happen to equal some selector names;
- examples/: an experiment configuration chooses which selectors a study runs;
- literals marked ``# a choice of selectors`` (a tool's default rows) or
  ``# usb algorithms`` (USB's own algorithm names, equal to some selector names): each
  mark is a reviewed decision, visible in the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pseudosel

ROOT = Path(__file__).resolve().parents[2]
DECLARATIONS = ROOT / "pseudosel" / "registry" / "builtin.py"
SCANNED = ("pseudosel", "tests", "benchmarks")
MARKS = ("# usb algorithms", "# a choice of selectors")


def _names_in(node: ast.AST, registered: set[str]) -> set[str]:
    if isinstance(node, ast.Dict):
        elements = [key for key in node.keys if key is not None]
    elif isinstance(node, ast.List | ast.Tuple | ast.Set):
        elements = node.elts
    else:
        return set()
    return {
        element.value
        for element in elements
        if isinstance(element, ast.Constant) and element.value in registered
    }


def hand_written_lists(path: Path, registered: set[str]) -> list[tuple[int, set[str]]]:
    """(line, names) of every literal collection in ``path`` with >= 3 registered names."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    skipped = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
    }
    found = []
    for node in ast.walk(tree):
        names = _names_in(node, registered)
        if len(names) < 3 or id(node) in skipped:
            continue
        span = lines[max(node.lineno - 2, 0) : node.end_lineno]
        if any(mark in line for line in span for mark in MARKS):
            continue
        found.append((node.lineno, names))
    return found


def test_no_file_but_the_declarations_lists_selector_names():
    registered = set(pseudosel.available_selectors())
    offenders = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == DECLARATIONS:
                continue
            for line, names in hand_written_lists(path, registered):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {sorted(names)}")
    assert not offenders, "selector names listed outside the registry:\n" + "\n".join(offenders)


def test_the_scan_finds_a_list(tmp_path):
    """The scan is not vacuous: a list of two names is found, one name alone is not."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "SELECTORS = ['threshold', 'csl', 'softmatch']\n"
        "PAIR = ('threshold', 'csl')\n"
        "TABLE = {'flexmatch': 1, 'freematch': 2, 'dash': 3}\n"
        "ALGORITHMS = ('flexmatch', 'freematch', 'dash')  # usb algorithms\n"
        "__all__ = ['csl', 'threshold', 'adamatch']\n"
    )
    found = hand_written_lists(sample, set(pseudosel.available_selectors()))
    assert [line for line, _ in found] == [1, 3]
    assert hand_written_lists(DECLARATIONS, set(pseudosel.available_selectors())) == []
