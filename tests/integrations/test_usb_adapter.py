"""The USB adapter's import contract — what an installed semilearn cannot show.

Everything else is tested inside the real semilearn in tests/integrations/test_usb_integration.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_import_pseudosel_does_not_import_semilearn():
    result = run_python(
        """
        import sys
        import pseudosel, pseudosel.integrations
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("semilearn", "torchvision")))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_without_semilearn_the_import_error_says_how_to_install():
    result = run_python(
        """
        import sys
        sys.modules["semilearn"] = None  # as if it were not installed
        try:
            import pseudosel.integrations.usb
        except ImportError as error:
            print(error)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "needs USB's semilearn package" in result.stdout
    assert "pip install semilearn" in result.stdout


def test_a_torchvision_for_another_torch_is_an_import_error_that_names_it():
    result = run_python(
        """
        import importlib.abc, importlib.machinery, sys

        class Broken(importlib.abc.MetaPathFinder, importlib.abc.Loader):
            def find_spec(self, name, path=None, target=None):
                if name == "semilearn":
                    return importlib.machinery.ModuleSpec(name, self, is_package=True)
            def create_module(self, spec):
                return None
            def exec_module(self, module):  # what PyPI's CUDA torchvision does on CPU torch
                raise RuntimeError("operator torchvision::nms does not exist")

        sys.meta_path.insert(0, Broken())
        try:
            import pseudosel.integrations.usb
        except ImportError as error:
            print(error)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "torchvision, which does not match the installed torch" in result.stdout
