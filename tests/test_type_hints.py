"""Every public annotation resolves: ``typing.get_type_hints`` on every public function and
method, as documentation tools and runtime type checkers call it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing

import pytest

import pseudosel

# modules that import optional heavy packages at import time (tested where they are used)
OPTIONAL = {"pseudosel.integrations.usb"}
# deprecated aliases that warn when imported; their names are pseudosel.tools' (covered)
DEPRECATED = {"pseudosel.benchmark", "pseudosel.cli", "pseudosel.compare", "pseudosel.viz"}


def _public_modules() -> list[str]:
    names = ["pseudosel"]
    for info in pkgutil.walk_packages(pseudosel.__path__, "pseudosel."):
        if info.name in OPTIONAL | DEPRECATED:
            continue
        if not info.name.split(".")[-1].startswith("_"):
            names.append(info.name)
    return names


def _public_callables(module) -> list[tuple[str, object]]:
    found = []
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if inspect.isfunction(obj):
            found.append((name, obj))
        elif inspect.isclass(obj):
            found.append((name, obj))
            for attribute, member in vars(obj).items():
                if inspect.isfunction(member) and not attribute.startswith("_"):
                    found.append((f"{name}.{attribute}", member))
            if "__init__" in vars(obj):
                found.append((f"{name}.__init__", obj.__init__))
    return found


@pytest.mark.parametrize("module_name", _public_modules())
def test_every_public_annotation_resolves(module_name):
    module = importlib.import_module(module_name)
    for name, obj in _public_callables(module):
        try:
            typing.get_type_hints(obj)
        except Exception as error:  # pragma: no cover - the failure names the culprit
            pytest.fail(f"{module_name}.{name}: typing.get_type_hints raised {error!r}")


def test_the_modules_are_covered():
    assert {"pseudosel.functional.adamatch", "pseudosel.selectors.flexmatch"} <= set(
        _public_modules()
    )
