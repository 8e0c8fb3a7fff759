"""FixMatch on scikit-learn's real handwritten digits, with any pseudosel selector.

A few labelled digits per class (default 4), the rest unlabelled (their labels hidden from
training and used only to measure the pseudo-labels), a held-out test split. Each step: a
labelled batch (weak view, cross-entropy) and an unlabelled batch, whose weak view is
predicted without gradient, passed through the selector, and whose strong view is trained
on the selected pseudo-labels (pseudosel.weighted_cross_entropy, FixMatch's
normalisation by the batch). The first ``warmup_epochs`` are supervised only, for every
selector alike: from a random initialisation, a selector without a threshold (CSL) would
otherwise confirm the random first guesses.

    python examples/train_fixmatch_digits.py --selector csl --seed 0 --epochs 60 \\
        --out results/fixmatch_digits
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from digits_data import UNLABELLED_PROFILES, digit_splits, long_tailed_splits  # noqa: E402
from models import DigitCNN  # noqa: E402
from run_reports import quality_record, scatter_of, write_run  # noqa: E402
from selectors_by_name import SELECTORS, build  # noqa: E402
from views import strong_digits, weak_digits  # noqa: E402

import pseudosel  # noqa: E402
from pseudosel.metrics import SelectionStats  # noqa: E402


def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Test accuracy, balanced accuracy (the mean of the per-class recalls) and the worst
    class's recall: on long-tailed training data the tail classes show in the last two."""
    model.eval()
    with torch.no_grad():
        correct = (model(images).argmax(1) == labels).float()
    model.train()
    classes = labels.unique()
    recalls = torch.stack([correct[labels == k].mean() for k in classes])
    return {
        "test_accuracy": correct.mean().item(),
        "test_balanced_accuracy": recalls.mean().item(),
        "test_worst_class_recall": recalls.min().item(),
    }


def heldout_split(images: torch.Tensor, labels: torch.Tensor, per_class: int):
    """((images, labels) trained on, (images, labels) held out): the first ``per_class``
    labelled digits of each class are held out."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"heldout_per_class must be an int >= 1, got {per_class!r}")
    held = torch.zeros(len(labels), dtype=torch.bool)
    for k in labels.unique():
        held[(labels == k).nonzero().flatten()[:per_class]] = True
    if held.all():
        raise ValueError(f"heldout_per_class={per_class} leaves no labelled digit to train on")
    return (images[~held], labels[~held]), (images[held], labels[held])


def predict(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Eval-mode class probabilities of ``images`` (no gradient); the mode is restored."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        probs = model(images).softmax(1)
    model.train(was_training)
    return probs


def train(
    selector: str = "csl",
    *,
    seed: int = 0,
    epochs: int = 60,
    labels_per_class: int = 4,
    unlabelled_batch: int = 64,
    labelled_batch: int = 32,
    lr: float = 3e-3,
    lambda_u: float = 1.0,
    warmup_epochs: int = 5,
    tau: float = 0.95,
    heldout_per_class: int = 2,
    imbalance: float = 1.0,
    unlabelled_profile: str = "same",
    device: str = "cpu",
    out: str | Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train one run; return the per-epoch records (test accuracy, and from the end of the
    warm-up the quality of the selected pseudo-labels against the hidden labels). With
    ``out``, also write ``epochs.json``, ``summary.md``, ``curves.png`` and, for CSL,
    ``csl_feature_space.png`` there. ``tau`` is the fixed threshold's τ (selector
    "threshold" only). The precision-targeted selector holds ``heldout_per_class`` of the
    labelled digits per class out of training and calibrates on their (un-augmented)
    predictions at the start of every semi-supervised epoch.

    ``imbalance`` > 1 trains on long-tailed digits (:func:`digits_data.long_tailed_splits`):
    ``labels_per_class`` labelled digits in the head class falling to 1/``imbalance`` of
    that in the tail, 110 unlabelled digits in the head likewise (``unlabelled_profile``
    "same"), in the opposite order ("reversed") or 110 of every class ("balanced"); the test
    set stays balanced."""
    torch.manual_seed(seed)
    # two streams, so a seed gives every selector the same batches: ``order_gen`` draws the
    # batches, ``gen`` the augmentations (whose use depends on the selector's phase)
    order_gen = torch.Generator().manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1_000_003)
    if imbalance > 1:
        splits = long_tailed_splits(
            labels_per_class, imbalance=imbalance, unlabelled=unlabelled_profile, seed=seed
        )
    else:
        splits = digit_splits(labels_per_class, seed=seed)
    x_l, y_l = splits.labelled
    x_h = y_h = None
    if selector == "precision_target":  # calibrates on labelled digits it never trains on
        (x_l, y_l), (x_h, y_h) = heldout_split(x_l, y_l, heldout_per_class)
    x_u, y_u = splits.unlabelled  # y_u: hidden, for measurement only
    x_t, y_t = splits.test
    model = DigitCNN().to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    select = build(selector, 10, num_unlabeled=len(x_u), tau=tau)
    if select is not None:
        for module in select.modules:
            module.to(device)
        select.observe_labelled(y_l.to(device))
    history = []
    steps = max(1, len(x_u) // unlabelled_batch)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=epochs * steps, desc=f"digits/{selector}/seed{seed}", leave=False)
    for epoch in range(epochs):
        stats = SelectionStats(num_classes=10)
        order = torch.randperm(len(x_u), generator=order_gen)
        losses = []
        if select is not None and epoch >= warmup_epochs:
            select.start_epoch(
                lambda: predict(model, x_u.to(device)),
                None if x_h is None else lambda: (predict(model, x_h.to(device)), y_h.to(device)),
            )
        for step in range(steps):
            index = order[step * unlabelled_batch : (step + 1) * unlabelled_batch]
            pick = torch.randint(0, len(x_l), (labelled_batch,), generator=order_gen)
            weak_l = weak_digits(x_l[pick], gen).to(device)
            logits_l = model(weak_l)
            loss = F.cross_entropy(logits_l, y_l[pick].to(device))
            if select is not None and epoch >= warmup_epochs:
                weak_u = weak_digits(x_u[index], gen).to(device)
                strong_u = strong_digits(x_u[index], gen).to(device)
                with torch.set_grad_enabled(select.trains_weak_view):
                    logits_w = model(weak_u)
                probs_w = logits_w.detach().softmax(1)
                selection = select(
                    probs_w, index=index.to(device), probs_labeled=logits_l.detach().softmax(1)
                )
                logits_s = model(strong_u)
                loss_u = pseudosel.weighted_cross_entropy(logits_s, selection, normalize="batch")
                done = (epoch - warmup_epochs) * steps + step
                progress = done / max(1, (epochs - warmup_epochs) * steps)
                # ShrinkMatch's and CGMatch's own terms are added beside λ_u · L_u, as the
                # authors add them
                loss = loss + lambda_u * loss_u + select.extra_loss(logits_s, logits_w, progress)
                stats.update(selection, y_u[index].to(device))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if select is not None and epoch < warmup_epochs:
                select.warmup_step(lambda: predict(model, x_u.to(device)))
            losses.append(loss.item())
            if bar is not None:
                bar.update()
        record = {
            "epoch": epoch + 1,
            **evaluate(model, x_t.to(device), y_t.to(device)),
            "loss": sum(losses) / len(losses),
        }
        if select is not None and epoch >= warmup_epochs:
            record.update(quality_record(stats))
        history.append(record)
    if bar is not None:
        bar.close()
    if out is not None:
        setting = {
            "task": "fixmatch_digits",
            "selector": selector,
            "seed": seed,
            "epochs": epochs,
            "warmup_epochs": warmup_epochs,
            "tau": tau,
            "heldout_per_class": heldout_per_class if selector == "precision_target" else 0,
            "labels_per_class": labels_per_class,
            "imbalance": imbalance,
            "unlabelled_profile": unlabelled_profile if imbalance > 1 else "same",
            "labelled": len(x_l),
            "unlabelled": len(x_u),
            "test": len(x_t),
        }
        scatter = None
        if selector.startswith("csl"):
            with torch.no_grad():
                probs = model(weak_digits(x_u[:unlabelled_batch], gen).to(device)).softmax(1)
            scatter = scatter_of(probs, y_u[:unlabelled_batch], -1, dense=False)
        write_run(out, setting, history, "test_accuracy", scatter)
    return history


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # S4MC refines each pixel with its neighbours: segmentation only
    parser.add_argument(
        "--selector", default="csl", choices=[name for name in SELECTORS if name != "s4mc"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--labels-per-class", type=int, default=4)
    parser.add_argument(
        "--warmup-epochs",
        type=int,
        default=5,
        help="supervised-only epochs before the unlabelled loss starts",
    )
    parser.add_argument(
        "--imbalance",
        type=float,
        default=1.0,
        help="> 1: long-tailed labelled and unlabelled digits with this head/tail ratio",
    )
    parser.add_argument(
        "--unlabelled-profile",
        choices=UNLABELLED_PROFILES,
        default="same",
        help="with --imbalance: the unlabelled class counts follow the labelled ones, the "
        "opposite order, or are balanced",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", type=Path, default=Path("results/fixmatch_digits"))
    args = parser.parse_args(argv)
    history = train(
        args.selector,
        seed=args.seed,
        epochs=args.epochs,
        labels_per_class=args.labels_per_class,
        warmup_epochs=args.warmup_epochs,
        imbalance=args.imbalance,
        unlabelled_profile=args.unlabelled_profile,
        device=args.device,
        out=args.out / args.selector / f"seed{args.seed}",
    )
    last = history[-1]
    print(json.dumps(last, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
