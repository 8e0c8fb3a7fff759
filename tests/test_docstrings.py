"""Every public function and class documents itself with an example (run as doctests)."""

from __future__ import annotations

import importlib
import inspect

import pytest
from helpers import usb_support

# pseudosel.integrations.usb imports semilearn, importable through the test set-up's shims;
# installed here too, so this file also runs on its own (not only after tests/integrations/).
usb_support.install_import_shims()

MODULES = [
    "pseudosel",
    "pseudosel.functional",
    "pseudosel.features",
    "pseudosel.inputs",
    "pseudosel.registry",
    "pseudosel.kernels",
    "pseudosel.masking",
    "pseudosel.losses",
    "pseudosel.metrics",
    "pseudosel.convex",
    "pseudosel.max_margin",
    "pseudosel.integrations.usb",
]


def public_objects():
    seen = set()
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or id(obj) in seen:
                continue
            seen.add(id(obj))
            yield f"{name}.{attr}", obj


@pytest.mark.parametrize("name,obj", list(public_objects()), ids=lambda x: str(x))
def test_public_api_has_a_docstring_with_an_example(name, obj):
    doc = inspect.getdoc(obj) or ""
    if doc.startswith("Deprecated"):  # an alias that names its replacement, warns once
        assert "warns once" in doc and ":" in doc, name
        return
    if inspect.isclass(obj) and tuple in obj.__mro__:  # NamedTuple state records
        assert len(doc) > 20, name
        return
    assert ">>> " in doc, f"{name} has no example"
