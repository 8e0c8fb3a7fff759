"""UniMatch-style semi-supervised segmentation on digit mosaics, with any pseudosel selector.

Data: 24x24 canvases of real scikit-learn digits (``digits_data.make_mosaics``, 8x8 digits
in a 3 x 3 grid), 11 classes (ten digits and background). The labelled budget is
``labels_per_class`` digits per class (default 4, as the classification task): the 64
labelled canvases are built only from those 40 digits, the 512 unlabelled canvases from the
other training digits (labels hidden from training, used only to measure the pseudo-labels),
and the 256 test canvases from held-out digits. Random crops pad with an ignore region (255).

Each step (UniMatch, with UniMatch V2's EMA teacher): the teacher — an exponential moving
average of the student's weights, decay ``ema`` (0.99) — predicts the weak view of the
unlabelled crops without gradient; the selector chooses pseudo-labels from it; two strong
views each get a CutMix box from a mixing batch, whose pseudo-labels, weights and ignore map
are pasted in the same box (pseudosel.masking.paste), and a feature-dropout branch of the
student is trained on the weak view. Loss (L_sup + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2,
unlabelled terms normalised by valid pixels; Adam with UniMatch's poly learning-rate decay;
the first ``warmup_epochs`` are supervised only. With ``tmp=True`` the second strong view is
instead CSL's Trusted Mask Perturbation (trusted pixels hidden in blocks, no CutMix), trained
on the weak pseudo-labels. Test mIoU is measured on the teacher (``ema=None``: no teacher,
the student predicts and is measured, as in UniMatch V1).

    python examples/train_unimatch_mosaics.py --selector csl --tmp --seed 0 \\
        --out results/unimatch_mosaics
"""

from __future__ import annotations

import argparse
import copy
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

CANVAS = 24  # canvas side: a 3 x 3 grid of 8x8 digits
EPOCHS, WARMUP_EPOCHS = 30, 10  # 64 steps per epoch at the default sizes


def mosaic_data(
    seed: int, labels_per_class: int, labelled: int, unlabelled: int, test: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """(images, labels) of the labelled, unlabelled and test canvases of a seed.

    The labelled canvases hold only the ``labels_per_class`` labelled digits per class of
    ``digit_splits``, the unlabelled ones the other training digits, the test ones the
    held-out digits: no digit image appears in two sets."""
    splits = digit_splits(labels_per_class=labels_per_class, seed=seed)
    parts = ((labelled, splits.labelled), (unlabelled, splits.unlabelled), (test, splits.test))
    return tuple(
        make_mosaics(count, size=CANVAS, scale=1, digits=digits, seed=seed * 1000 + i)
        for i, (count, digits) in enumerate(parts, 1)
    )


def mean_iou(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """mIoU over the classes present in the test labels or predictions."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        predicted = model(images).argmax(1)
    model.train(was_training)
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
    epochs: int = EPOCHS,
    labels_per_class: int = 4,
    labelled: int = 64,
    unlabelled: int = 512,
    test: int = 256,
    crop: int = 20,
    pad: int = 4,
    batch: int = 8,
    lr: float = 3e-3,
    warmup_epochs: int = WARMUP_EPOCHS,
    tau: float = 0.95,
    ema: float | None = 0.99,
    device: str = "cpu",
    out: str | Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train one run; return the per-epoch records (test mIoU, and after the warm-up the
    quality of the selected pseudo-labels against the hidden labels). ``tau`` is the fixed
    threshold's τ (selector "threshold" only); ``ema`` the teacher's decay (None: no
    teacher). With ``out``, also
    write ``epochs.json``, ``summary.md``, ``curves.png`` and, for CSL,
    ``csl_feature_space.png`` there."""
    torch.manual_seed(seed)
    # two streams, so a seed gives every selector the same batches: ``order_gen`` draws the
    # batches, ``gen`` the crops and views (TMP draws differently from CutMix)
    order_gen = torch.Generator().manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1_000_003)
    (x_l, y_l), (x_u, y_u), (x_t, y_t) = mosaic_data(
        seed, labels_per_class, labelled, unlabelled, test
    )
    x_t, y_t = x_t.to(device), y_t.to(device)
    model = MosaicFCN().to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    # UniMatch V2's teacher: pseudo-labels (and the test mIoU) from an EMA of the student
    teacher = None if ema is None else copy.deepcopy(model).eval().requires_grad_(False)
    predictor = model if teacher is None else teacher
    steps = max(1, len(x_u) // batch)
    semi_steps = max(1, (epochs - warmup_epochs) * steps)
    select = build(
        selector,
        NUM_SEG_CLASSES,
        dense=True,
        tau=tau,
        total_steps=semi_steps,
        steps_per_epoch=steps,
    )
    if select is not None:
        for module in select.modules:
            module.to(device)
        # the labelled pixels' classes (the class-prior thresholds' prior)
        select.observe_labelled(y_l.to(device), valid=(y_l != IGNORE).to(device))
    history = []
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
                    probs_w = predictor(img_u).softmax(1)
                selection = select(probs_w, ignore_mask=ignore)
                stats.update(selection, truth_u.to(device))
                loss = loss + unlabelled_loss(
                    model, img_u, selection, tmp, feature_dropout, gen, crop
                )
                loss = loss / 2
            iteration = epoch * steps + step
            for group in optimiser.param_groups:  # UniMatch's poly decay
                group["lr"] = lr * (1 - iteration / (epochs * steps)) ** 0.9
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if teacher is not None:
                update_teacher(teacher, model, min(ema, (iteration + 1) / (iteration + 10)))
            losses.append(loss.item())
            if bar is not None:
                bar.update()
        record = {
            "epoch": epoch + 1,
            "test_miou": mean_iou(predictor, x_t, y_t),
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
            "tau": tau,
            "labelled": labelled,
            "unlabelled": unlabelled,
            "test": test,
            "canvas": CANVAS,
            "labels_per_class": labels_per_class,
            "ema": ema,
            "crop": crop,
            "feature_dropout": feature_dropout,
        }
        scatter = None
        if selector.startswith("csl"):
            img_u, truth_u = random_crops(x_u[:batch], y_u[:batch], crop, pad, gen)
            with torch.no_grad():
                probs = predictor(img_u.to(device)).softmax(1)
            scatter = scatter_of(probs, truth_u, IGNORE, dense=True)
        write_run(out, setting, history, "test_miou", scatter)
    return history


@torch.no_grad()
def update_teacher(teacher: torch.nn.Module, student: torch.nn.Module, decay: float) -> None:
    """teacher ← decay · teacher + (1 − decay) · student; batch-norm statistics copied (the
    decay ramps up from 0.1 so the teacher follows the young student closely)."""
    for kept, new in zip(teacher.parameters(), student.parameters(), strict=True):
        kept.lerp_(new, 1 - decay)
    for kept, new in zip(teacher.buffers(), student.buffers(), strict=True):
        kept.copy_(new)


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
            strong2, selection, ratio=0.7, block_size=4, p=0.5, generator=gen
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
    # Adsh, CGMatch and the precision-targeted selector need per-sample records or held-out
    # labels, which this trainer does not provide, and ShrinkMatch's loss on the shrunk class
    # space is wired into the digits trainer only
    per_sample = ("adsh", "precision_target", "cgmatch", "shrinkmatch")
    dense_selectors = [name for name in SELECTORS if name not in per_sample]
    parser.add_argument("--selector", default="csl", choices=dense_selectors)
    parser.add_argument("--tmp", action="store_true", help="Trusted Mask Perturbation view")
    parser.add_argument("--no-feature-dropout", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument(
        "--labels-per-class", type=int, default=4, help="labelled budget (default 4)"
    )
    parser.add_argument("--tau", type=float, default=0.95, help="the threshold selector's τ")
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
        labels_per_class=args.labels_per_class,
        tau=args.tau,
        device=args.device,
        out=args.out / name / f"seed{args.seed}",
    )
    print(json.dumps(history[-1], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
