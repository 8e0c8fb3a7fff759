"""UniMatch-style semi-supervised segmentation on digit mosaics, with any pseudosel selector.

Data: canvases of real scikit-learn digits (``digits_data.make_mosaics``), 11 classes (ten
digits and background); a few labelled canvases, many unlabelled ones (labels hidden from
training, used only to measure the pseudo-labels), test canvases from held-out digits.
Random crops pad with an ignore region (255).

Each step (UniMatch): the weak view of the unlabelled crops is predicted without gradient,
together with a feature-dropout branch; the selector (CSL per image by default) chooses
pseudo-labels; two strong views each get a CutMix box from a mixing batch, whose
pseudo-labels, weights and ignore map are pasted in the same box (pseudosel.masking.paste).
Loss (L_sup + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2, unlabelled terms normalised by valid
pixels. With ``tmp=True`` the second strong view is instead CSL's Trusted Mask Perturbation
(trusted pixels hidden in blocks, no CutMix), trained on the weak pseudo-labels.

    python examples/train_unimatch_mosaics.py --selector csl --tmp --seed 0 --epochs 20 \\
        --out results/unimatch_mosaics
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

from digits_data import (  # noqa: E402
    IGNORE,
    NUM_SEG_CLASSES,
    digit_splits,
    make_mosaics,
)
from models import MosaicFCN  # noqa: E402
from run_reports import quality_record, scatter_of, write_run  # noqa: E402
from selectors_by_name import SELECTORS, build  # noqa: E402
from views import random_crops, strong_mosaic  # noqa: E402

import pseudosel  # noqa: E402
from pseudosel.masking import cutmix_box, paste, trusted_mask_perturbation  # noqa: E402
from pseudosel.metrics import SelectionStats  # noqa: E402


def mosaic_data(seed: int, labelled: int, unlabelled: int, test: int, size: int):
    """Labelled / unlabelled canvases from the training digits, test canvases from the
    held-out digits (no digit image appears in both)."""
    splits = digit_splits(labels_per_class=0, seed=seed)
    train_digits = splits.unlabelled  # with labels_per_class=0: every non-test digit
    return (
        make_mosaics(labelled, size=size, digits=train_digits, seed=seed * 1000 + 1),
        make_mosaics(unlabelled, size=size, digits=train_digits, seed=seed * 1000 + 2),
        make_mosaics(test, size=size, digits=splits.test, seed=seed * 1000 + 3),
    )


def mean_iou(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """mIoU over the classes present in the test labels or predictions."""
    model.eval()
    with torch.no_grad():
        predicted = model(images).argmax(1)
    model.train()
    keep = labels != IGNORE
    ious = []
    for k in range(NUM_SEG_CLASSES):
        pred_k, true_k = (predicted == k) & keep, (labels == k) & keep
        union = (pred_k | true_k).sum().item()
        if union:
            ious.append((pred_k & true_k).sum().item() / union)
    return sum(ious) / len(ious)


def train(
    selector: str = "csl",
    *,
    tmp: bool = False,
    feature_dropout: bool = True,
    seed: int = 0,
    epochs: int = 20,
    labelled: int = 16,
    unlabelled: int = 256,
    test: int = 64,
    size: int = 48,
    crop: int = 40,
    pad: int = 8,
    batch: int = 8,
    lr: float = 3e-3,
    warmup_epochs: int = 3,
    device: str = "cpu",
    out: str | Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train one run; return the per-epoch records (test mIoU, and after the warm-up the
    quality of the selected pseudo-labels against the hidden labels). With ``out``, also
    write ``epochs.json``, ``summary.md``, ``curves.png`` and, for CSL,
    ``csl_feature_space.png`` there."""
    torch.manual_seed(seed)
    # two streams, so a seed gives every selector the same batches: ``order_gen`` draws the
    # batches, ``gen`` the crops and views (TMP draws differently from CutMix)
    order_gen = torch.Generator().manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1_000_003)
    (x_l, y_l), (x_u, y_u), (x_t, y_t) = mosaic_data(seed, labelled, unlabelled, test, size)
    x_t, y_t = x_t.to(device), y_t.to(device)
    model = MosaicFCN().to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    select = build(selector, NUM_SEG_CLASSES, dense=True)
    if select is not None:
        for module in select.modules:
            module.to(device)
    history = []
    steps = max(1, len(x_u) // batch)
    bar = None
    if progress:
        from tqdm import tqdm

        name = selector + ("+tmp" if tmp else "")
        bar = tqdm(total=epochs * steps, desc=f"mosaics/{name}/seed{seed}", leave=False)
    for epoch in range(epochs):
        stats = SelectionStats(num_classes=NUM_SEG_CLASSES)
        order = torch.randperm(len(x_u), generator=order_gen)
        losses = []
        semi = select is not None and epoch >= warmup_epochs
        for step in range(steps):
            pick = torch.randint(0, len(x_l), (batch,), generator=order_gen)
            img_l, lab_l = random_crops(x_l[pick], y_l[pick], crop, pad, gen)
            loss_sup = F.cross_entropy(
                model(img_l.to(device)), lab_l.to(device), ignore_index=IGNORE
            )
            loss = loss_sup
            if semi:
                index = order[step * batch : (step + 1) * batch]
                img_u, truth_u = random_crops(x_u[index], y_u[index], crop, pad, gen)
                ignore = (truth_u == IGNORE).long() * IGNORE  # padding only: labels hidden
                img_u, ignore = img_u.to(device), ignore.to(device)
                with torch.no_grad():
                    probs_w = model(img_u).softmax(1)
                selection = select(probs_w, ignore_mask=ignore)
                stats.update(selection, truth_u.to(device))
                loss = loss + unlabelled_loss(
                    model, img_u, selection, tmp, feature_dropout, gen, crop
                )
                loss = loss / 2
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            if bar is not None:
                bar.update()
        record = {
            "epoch": epoch + 1,
            "test_miou": mean_iou(model, x_t, y_t),
            "loss": sum(losses) / len(losses),
        }
        if semi:
            record.update(quality_record(stats))
        history.append(record)
    if bar is not None:
        bar.close()
    if out is not None:
        setting = {
            "task": "unimatch_mosaics",
            "selector": selector + ("+tmp" if tmp else ""),
            "seed": seed,
            "epochs": epochs,
            "warmup_epochs": warmup_epochs,
            "labelled": labelled,
            "unlabelled": unlabelled,
            "test": test,
            "canvas": size,
            "crop": crop,
            "feature_dropout": feature_dropout,
        }
        scatter = None
        if selector.startswith("csl"):
            img_u, truth_u = random_crops(x_u[:batch], y_u[:batch], crop, pad, gen)
            with torch.no_grad():
                probs = model(img_u.to(device)).softmax(1)
            scatter = scatter_of(probs, truth_u, IGNORE, dense=True)
        write_run(out, setting, history, "test_miou", scatter)
    return history


def unlabelled_loss(model, img_u, selection, tmp, feature_dropout, gen, crop):
    """0.25 L_s1 + 0.25 L_s2 (+ 0.5 L_fp): CutMix strong views, TMP view, feature dropout."""
    device = img_u.device
    n = img_u.shape[0]
    mix_selection = pseudosel.Selection(*(field.roll(1, 0) for field in selection))
    strong1 = strong_mosaic(img_u.cpu(), gen).to(device)
    box1 = cutmix_box(n, crop, crop, p=0.5, generator=gen).to(device)
    view1 = paste(strong1, strong1.roll(1, 0), box1)
    target1 = paste(selection, mix_selection, box1)
    loss = 0.25 * pseudosel.weighted_cross_entropy(model(view1), target1, normalize="valid")
    strong2 = strong_mosaic(img_u.cpu(), gen).to(device)
    if tmp:
        # CSL's Trusted Mask Perturbation replaces CutMix on this view
        view2, _ = trusted_mask_perturbation(
            strong2, selection, ratio=0.7, block_size=8, p=0.5, generator=gen
        )
        target2 = selection
    else:
        box2 = cutmix_box(n, crop, crop, p=0.5, generator=gen).to(device)
        view2 = paste(strong2, strong2.roll(1, 0), box2)
        target2 = paste(selection, mix_selection, box2)
    loss = loss + 0.25 * pseudosel.weighted_cross_entropy(model(view2), target2, normalize="valid")
    if feature_dropout:
        _, logits_fp = model(img_u, feature_dropout=True)
        loss = loss + 0.5 * pseudosel.weighted_cross_entropy(
            logits_fp, selection, normalize="valid"
        )
    return loss


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--selector", default="csl", choices=SELECTORS)
    parser.add_argument("--tmp", action="store_true", help="Trusted Mask Perturbation view")
    parser.add_argument("--no-feature-dropout", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", type=Path, default=Path("results/unimatch_mosaics"))
    args = parser.parse_args(argv)
    name = args.selector + ("+tmp" if args.tmp else "")
    history = train(
        args.selector,
        tmp=args.tmp,
        feature_dropout=not args.no_feature_dropout,
        seed=args.seed,
        epochs=args.epochs,
        device=args.device,
        out=args.out / name / f"seed{args.seed}",
    )
    print(json.dumps(history[-1], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
