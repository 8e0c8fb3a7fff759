"""The USB (semilearn) tests only: make semilearn importable before they are collected.

``helpers/usb_support.py`` puts the folder where the README's test command installs
semilearn on ``sys.path`` and adds its two import shims (torchvision's operator schemas,
stubs for the packages semilearn imports for code these tests never run). Nothing else in
the suite needs them, so they are installed here, when pytest enters this folder.

The doctests of ``pseudosel/integrations/usb.py`` import semilearn too: a whole run
(``testpaths = ["tests", "pseudosel"]``) collects this folder first, so they find the shims
installed; ``pytest pseudosel`` alone cannot import that module without semilearn installed.

The fixtures of the tests inside semilearn (``usb_support.IN_SEMILEARN`` marks them):
``one_thread``, ``batches`` (the digits through USB's loader), ``config``.
"""

from __future__ import annotations

import pytest
import torch
from helpers import usb_support

usb_support.install_import_shims()


@pytest.fixture(scope="module")
def one_thread():
    """The tiny network gains nothing from threads, which only contend on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def batches():
    """sklearn's digits through USB's own dataset, augmentation and loader."""
    return usb_support.digit_batches()


@pytest.fixture
def config(tmp_path):
    """The USB settings every algorithm of a test gets: its own save folder."""
    return {"save_dir": str(tmp_path)}
