"""Layering: functional code never imports the optional convex layer (the solver and
boundary variants plug into CSL's split through the registries of
pseudosel.functional.separation), and the convex layer does not import functional.csl."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import pseudosel.functional as F

PACKAGE = Path(__file__).resolve().parents[1] / "pseudosel"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted((PACKAGE / "functional").glob("*.py")), ids=str)
def test_functional_code_does_not_import_the_convex_layer(path):
    forbidden = {"pseudosel.convex", "pseudosel.max_margin", "cvxpy", "cvxpylayers"}
    imported = _imports(path)
    assert not {name for name in imported if name.split(".")[0] in ("cvxpy", "cvxpylayers")}
    assert not imported & forbidden
    assert not {n for n in imported if n.startswith(("pseudosel.convex", "pseudosel.max_margin"))}


@pytest.mark.parametrize("name", ["convex.py", "max_margin.py"])
def test_the_convex_layer_does_not_import_functional_csl(name):
    assert not any(n.startswith("pseudosel.functional.csl") for n in _imports(PACKAGE / name))


def test_an_unloaded_variant_names_the_module_to_import(monkeypatch):
    from pseudosel.functional import separation

    monkeypatch.delitem(separation.AXES_SOLVERS, "cvxpy", raising=False)
    with pytest.raises(ValueError, match="provided by pseudosel.convex.*import pseudosel.convex"):
        F.csl(torch.full((2, 3), 1 / 3), solver="cvxpy")
