"""Shared pytest configuration: the layout, the ``device`` and ``dtype`` fixtures, the
hypothesis profile and the ``cuda`` marker.

Layout — tests/ mirrors pseudosel/:

- ``functional/``: one file per functional topic, ``pseudosel/functional/<topic>.py`` →
  ``test_<topic>.py``: the formulas against literal float64 references and hand cases.
- ``selectors/``: module behaviour, ``pseudosel/selectors/<topic>.py`` →
  ``test_<topic>_module.py`` (eval mode, module == functional, no graph, bad arguments),
  and ``test_modules.py``.
- ``kernels/``: the fast kernels against their formulas. ``registry/``: the registry and
  its single declaration. ``tools/``: ``pseudosel/tools`` (compare, bench, the CLI).
  ``integrations/``: USB (its conftest.py makes semilearn importable, for those tests only).
- the root: tests of the top-level modules (``test_features.py`` for
  ``pseudosel/features.py``, ...), the "every selector" tests driven by the registry
  (``helpers/selector_zoo.py``: fuzz, host sync, op count, compile, training-loop inputs,
  checkpoint, properties, binary/multi-label, cuda, distributed) and the project's own
  (release, packaging, docs, docstrings, examples, recipes, demo, layering, type hints).
- ``helpers/`` (a package): the float64 references and the shared helpers, imported as
  ``from helpers.csl_reference import reference_csl``. A test module never imports another
  test module; what two of them share lives in helpers/ (or in a folder's conftest.py).

Imports: pytest's default ("prepend") import mode, and no ``__init__.py`` in the test
folders, so every test file's basename is unique across folders — that is why module tests
are ``test_<topic>_module.py`` beside ``functional/test_<topic>.py``. (A package
``tests/selectors/`` would also shadow the standard library's ``selectors``.) This file puts
tests/ first on ``sys.path`` so that ``helpers`` imports from every folder.

Fixtures (kornia-style):

- ``device``: ``"cpu"``, and ``"cuda"`` (marked ``cuda``) where ``torch.cuda.is_available()``.
  Taken by the numerical tests: ``functional/`` (the selectors against their float64
  references: threshold, csl, the adaptive ones, precision target), the zoo-driven "every
  selector" tests (``test_fuzz.py``, ``test_training_loop_inputs.py``,
  ``test_binary_multilabel.py``, ``test_properties.py``, ``test_checkpoint.py``) and the
  tensor tests of ``test_features.py``, ``test_losses.py``, ``test_masking.py`` (paste)
  and ``test_metrics.py``. Inputs are drawn on the CPU (the same values everywhere) and
  moved; results are compared on the CPU (``helpers.tolerances.numpy_of``).
- ``dtype``: float16, bfloat16, float32, float64 (``helpers.tolerances.DTYPES``), with one
  table of per-dtype tolerances, ``helpers.tolerances.TOLERANCES`` (``tolerance(dtype)``).
  A test needing some dtypes only parametrises over ``DTYPES`` filtered or ``HALF_DTYPES``.

CPU-only by nature (no ``device``):

- ``tools/``, ``integrations/`` (USB's CPU rig) and the project tests (release, packaging,
  docs, docstrings, examples, recipes, demo, layering, type hints): files, subprocesses,
  metadata;
- ``test_host_sync.py``, ``test_host_sync_guard.py`` and the other users of
  ``helpers/host_sync_guard.py``: the guard patches CPU behaviour to catch host reads (on
  CUDA, ``test_cuda.py`` uses ``torch.cuda.set_sync_debug_mode`` instead);
- ``test_op_count.py`` and the blocked-path tests (they patch ``pseudosel.kernels.blocks``,
  whose blocks only the eager CPU kernels walk);
- ``test_meta_device.py``: the placement audit, every selector and utility on ``meta``
  tensors (the path CUDA takes, without a GPU);
- ``test_distributed.py``: two gloo processes; ``test_compile*.py``: inductor's CPU code
  (``test_cuda.py`` covers the GPU);
- ``selectors/``: module behaviour (construction, eval mode, bad arguments), the same on
  every device; the random-draw tests of ``test_masking.py`` (CPU generators).

``test_cuda.py`` and every ``cuda``-marked test are skipped without a CUDA device.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers.tolerances import DTYPES, dtype_id  # noqa: E402

settings.register_profile(
    "pseudosel",
    deadline=None,  # first calls pay for lazy imports and allocator warm-up
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("pseudosel")

DEVICES = [pytest.param("cpu", id="cpu")]
if torch.cuda.is_available():
    DEVICES.append(pytest.param("cuda", id="cuda", marks=pytest.mark.cuda))


@pytest.fixture(scope="session", params=DEVICES)
def device(request) -> torch.device:
    """Each device the numerical tests run on: the CPU, and CUDA where there is one."""
    return torch.device(request.param)


@pytest.fixture(scope="session", params=DTYPES, ids=dtype_id)
def dtype(request) -> torch.dtype:
    """Each floating dtype a selector takes (tolerances: helpers.tolerances)."""
    return request.param


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
