"""Test support for the USB (semilearn 0.3.2) integration: the import environment and a CPU rig.

Environment: :mod:`pseudosel.tools.semilearn_env` (its ``install_import_shims`` is called by
``tests/integrations/conftest.py``, for the USB tests only) makes the ``<venv>/usb`` folder
the README's test command installs semilearn into importable, with its two shims.

Rig. :func:`digit_batches` runs sklearn's digits through USB's own ``BasicDataset``,
``RandAugment`` and ``get_data_loader``; :func:`build_algorithm` builds an algorithm with
USB's ``get_config``/``get_algorithm`` and a tiny network; :func:`train` drives
``train_step`` and the parameter-update and EMA hooks as ``AlgorithmBase.train`` does (that
method itself needs CUDA).
"""

from __future__ import annotations

import functools
import inspect
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from pseudosel.tools.semilearn_env import (  # noqa: F401 (install_import_shims: for conftest)
    INSTALL_HINT,
    install_import_shims,
    semilearn_available,
)

#: marks of a test module that runs inside semilearn: its CPU warnings ignored, one thread
#: (the ``one_thread`` fixture of tests/integrations/conftest.py)
IN_SEMILEARN = [
    # semilearn 0.3.2 builds torch.cuda.amp.GradScaler() and friends on CPU
    pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning:torch.*"),
    pytest.mark.usefixtures("one_thread"),
]


def require_semilearn() -> None:
    """At a test module's top: skip it on a developer's machine without semilearn, but fail
    in CI (CI=true), whose README command installs it."""
    if semilearn_available():
        return
    message = f"semilearn is not installed: {INSTALL_HINT}"
    if os.environ.get("CI"):
        raise ImportError(message)
    pytest.skip(message, allow_module_level=True)


# ------------------------------------------------------------------------------------ the rig
NUM_CLASSES = 10
STEPS = 20
LABELLED_PER_CLASS = 10
UNLABELLED = 128
BATCH_SIZE = 16
URATIO = 2
IMAGE_SIZE = 8
MEAN, STD = 0.5, 0.5
# hooks whose stages need CUDA or the evaluation loader; AlgorithmBase.train calls them too
CUDA_OR_EVAL_HOOKS = {"TimerHook", "LoggingHook", "EvaluationHook", "CheckpointHook"}


class TinyNet(nn.Module):
    """The smallest network with USB's interface (logits and features in a dict)."""

    def __init__(self, num_classes: int, pretrained: bool = False, pretrained_path=None):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(3 * IMAGE_SIZE**2, 64), nn.ReLU())
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x, only_fc: bool = False, only_feat: bool = False, **kwargs):
        if only_fc:
            return self.classifier(x)
        feat = self.features(x)
        if only_feat:
            return feat
        return {"logits": self.classifier(feat), "feat": feat}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (USB's augmentations draw from the global state)
    torch.manual_seed(seed)


def usb_config(algorithm: str, **overrides: Any):
    """USB's own argument namespace (``semilearn.get_config``) for a CPU run on digits."""
    from semilearn import get_config

    config = {
        "algorithm": algorithm,
        "net": "tiny_mlp",
        "dataset": "digits",  # not one of USB's: get_algorithm leaves the loaders to us
        "num_classes": NUM_CLASSES,
        "num_labels": NUM_CLASSES * LABELLED_PER_CLASS,
        "ulb_dest_len": UNLABELLED,  # USB sets it when it builds the dataset itself
        "batch_size": BATCH_SIZE,
        "uratio": URATIO,
        "epoch": 1,
        "num_train_iter": STEPS,
        "num_eval_iter": 10_000,
        "num_log_iter": 10_000,
        "lr": 0.03,
        "num_workers": 0,
        "img_size": IMAGE_SIZE,
        "save_dir": str(Path(os.environ.get("TMPDIR", "/tmp")) / "pseudosel-usb"),
        "save_name": algorithm,
        "seed": 0,
        "distributed": False,  # USB's train.py derives it from world_size
    }
    config.update(overrides)
    return get_config(config)


@functools.cache
def digit_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's digits as USB images (N, 8, 8, 3) uint8, labels, labelled and unlabelled rows."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0 * 255).round().astype(np.uint8)
    images = np.repeat(images[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int64)
    order = np.random.RandomState(0).permutation(len(labels))
    labelled = np.concatenate(
        [order[labels[order] == k][:LABELLED_PER_CLASS] for k in range(NUM_CLASSES)]
    )
    unlabelled = np.setdiff1d(order, labelled)[:UNLABELLED]
    return images, labels, labelled, unlabelled


def digit_loaders(args) -> dict[str, Any]:
    """The digits through USB's BasicDataset, RandAugment and get_data_loader."""
    from semilearn.core.utils import get_data_loader
    from semilearn.datasets.augmentation import RandAugment
    from semilearn.datasets.cv_datasets.datasetbase import BasicDataset
    from torchvision import transforms

    images, labels, labelled, unlabelled = digit_split()
    normalise = transforms.Normalize([MEAN] * 3, [STD] * 3)
    crop = transforms.RandomCrop(IMAGE_SIZE, padding=1, padding_mode="reflect")
    weak = transforms.Compose([crop, transforms.ToTensor(), normalise])
    strong = transforms.Compose([crop, RandAugment(3, 5), transforms.ToTensor(), normalise])
    train_lb = BasicDataset(
        args.algorithm, images[labelled], labels[labelled], NUM_CLASSES, weak, is_ulb=False
    )
    train_ulb = BasicDataset(
        args.algorithm,
        images[unlabelled],
        labels[unlabelled],
        NUM_CLASSES,
        weak,
        is_ulb=True,
        strong_transform=strong,
    )
    common = dict(
        data_sampler=args.train_sampler,
        num_iters=args.num_train_iter,
        num_epochs=args.epoch,
        num_workers=0,
    )
    return {
        "train_lb": get_data_loader(args, train_lb, args.batch_size, **common),
        "train_ulb": get_data_loader(args, train_ulb, args.batch_size * args.uratio, **common),
    }


def digit_batches(steps: int = STEPS, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``steps`` training batches (labelled and unlabelled merged, as USB's train loop does)."""
    seed_everything(seed)
    loaders = digit_loaders(usb_config("fixmatch", num_train_iter=steps))
    batches = []
    for lb, ulb in zip(loaders["train_lb"], loaders["train_ulb"], strict=False):
        batches.append({**lb, **ulb})
        if len(batches) == steps:
            break
    assert len(batches) == steps
    return batches


@functools.cache
def warm_start() -> dict[str, torch.Tensor]:
    """TinyNet fitted to the labelled digits, so that 24 steps see confident predictions."""
    images, labels, labelled, _ = digit_split()
    x = (torch.from_numpy(images[labelled]).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
    y = torch.from_numpy(labels[labelled])
    seed_everything(1)
    net = TinyNet(NUM_CLASSES)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x)["logits"], y).backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def build_algorithm(name: str, *, hook=None, seed: int = 0, **config: Any):
    """``get_algorithm`` as USB builds it (TinyNet on CPU, warm-started from
    :func:`warm_start`); ``hook`` replaces its MaskingHook."""
    from semilearn import get_algorithm

    args = usb_config(name, **config)
    seed_everything(seed)
    algorithm = get_algorithm(args, lambda **kw: TinyNet(**kw), tb_log=None, logger=None)
    algorithm.model.load_state_dict(warm_start())
    algorithm.ema_model.load_state_dict(warm_start())
    algorithm.loader_dict = {}  # the batches are handed to train() directly
    algorithm.print_fn = lambda *a, **k: None
    if hook is not None:
        algorithm.register_hook(hook, "MaskingHook")
    return algorithm


def record_masks(algorithm) -> list[torch.Tensor]:
    """Every mask the registered MaskingHook returns, in order."""
    hook = algorithm.hooks_dict["MaskingHook"]
    masks: list[torch.Tensor] = []
    masking = hook.masking

    def recording(*args: Any, **kwargs: Any) -> torch.Tensor:
        mask = masking(*args, **kwargs)
        masks.append(mask.detach().clone())
        return mask

    hook.masking = recording
    return masks


def _stage(algorithm, stage: str) -> None:
    for name, hook in list(algorithm.hooks_dict.items()):
        if name not in CUDA_OR_EVAL_HOOKS and hasattr(hook, stage):
            getattr(hook, stage)(algorithm)


def train(
    algorithm,
    batches: Sequence[dict[str, torch.Tensor]],
    *,
    save_after: int | None = None,
    on_step: Callable[[Any], None] | None = None,
) -> Path | None:
    """Run the batches from ``algorithm.it`` on, as ``AlgorithmBase.train`` does on CUDA.

    With ``save_after=k`` the checkpoint is written after step k, where USB's CheckpointHook
    writes it (before ``it`` advances); its path is returned.
    """
    inputs = set(inspect.signature(algorithm.train_step).parameters)
    algorithm.model.train()
    _stage(algorithm, "before_run")
    algorithm.epoch = 0
    _stage(algorithm, "before_train_epoch")
    saved = None
    while algorithm.it < len(batches):
        batch = {k: v for k, v in batches[algorithm.it].items() if k in inputs}
        _stage(algorithm, "before_train_step")
        algorithm.out_dict, algorithm.log_dict = algorithm.train_step(**batch)
        _stage(algorithm, "after_train_step")
        if on_step is not None:
            on_step(algorithm)
        if save_after is not None and algorithm.it == save_after:
            folder = Path(algorithm.save_dir) / algorithm.save_name
            algorithm.save_model("latest_model.pth", str(folder))
            saved = folder / "latest_model.pth"
        algorithm.it += 1
    return saved


def weights(algorithm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in algorithm.model.state_dict().items()}
