"""Make semilearn 0.3.2 importable where the README's test command installed it.

The README's test command installs semilearn's pure-Python import needs with the ``usb``
extra, then ``semilearn==0.3.2`` and ``torchvision==0.28.0`` with ``--no-deps`` into
``<venv>/usb`` (not site-packages: PyPI's torchvision is CUDA-linked and, beside the CPU torch,
fails to import with "operator torchvision::nms does not exist", which would also break
``import lightning`` in every process of the venv). :func:`install_import_shims` makes that
folder importable and adds two shims:

- when torchvision's C++ operators did not load, the two op schemas its Python code registers
  fakes for (``torchvision::nms``, ``torchvision::qnms``) are defined with ``torch.library``
  first, so the pure-Python parts (``transforms``, which USB's augmentation uses) load;
- modules semilearn imports at top level for code the tests and ``pseudosel bench --peers``
  never run — torchaudio (audio datasets), transformers (BERT/wav2vec collators and nets),
  timm (ViT), wandb and aim (logger hooks) — resolve to stubs, only when the real package is
  not installed.

Used by the USB tests (tests/helpers/usb_support.py) and by ``pseudosel bench --peers``. A USB
user does not need either shim: installed from the index that matches their torch (e.g.
PyTorch's CPU index for a CPU torch), torchvision imports, and semilearn's own requirements
bring the rest (docs/usb.md).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Any

import torch

__all__ = ["INSTALL_HINT", "STUBBED", "USB_SITE", "install_import_shims", "semilearn_available"]

# Where the README's test command installs semilearn and torchvision (pip --target).
USB_SITE = Path(os.environ.get("PSEUDOSEL_USB_SITE", Path(sys.prefix) / "usb"))
STUBBED = ("torchaudio", "transformers", "timm", "wandb", "aim")
INSTALL_HINT = (
    'run the README test command, or: pip install -e ".[usb]" && pip install --no-deps '
    f"--upgrade --target {USB_SITE} semilearn==0.3.2 torchvision==0.28.0"
)


class _TorchvisionOps(importlib.abc.MetaPathFinder):
    """Before torchvision registers fakes for its operators, define any that did not load."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision._meta_registrations":
            for op in ("nms", "qnms"):
                if not _operator_exists(f"torchvision::{op}"):
                    torch.library.define(
                        f"torchvision::{op}",
                        "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                    )
        return None  # the regular finders import the module


def _operator_exists(qualified_name: str) -> bool:
    return bool(torch._C._dispatch_has_kernel(qualified_name)) or any(
        schema.name == qualified_name for schema in torch._C._jit_get_all_schemas()
    )


class _StubModule(types.ModuleType):
    """A package whose every public attribute is a placeholder class."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        message = f"{self.__name__}.{attr} is a stub (see pseudosel/tools/semilearn_env.py)"

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(message)

        stub = type(attr, (), {"__init__": refuse, "__module__": self.__name__})
        setattr(self, attr, stub)
        return stub


class _Stubs(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Last on sys.meta_path: answers only for the STUBBED packages no other finder found."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in STUBBED:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        return None


def install_import_shims() -> None:
    """Make semilearn importable in this process (idempotent; imports nothing itself)."""
    if USB_SITE.is_dir() and str(USB_SITE) not in sys.path:
        sys.path.append(str(USB_SITE))
    if not any(isinstance(finder, _TorchvisionOps) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionOps())
    if not any(isinstance(finder, _Stubs) for finder in sys.meta_path):
        sys.meta_path.append(_Stubs())


def semilearn_available() -> bool:
    install_import_shims()
    return importlib.util.find_spec("semilearn") is not None
