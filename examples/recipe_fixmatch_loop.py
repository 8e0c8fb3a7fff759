"""Recipe: a plain PyTorch FixMatch loop, where pseudosel replaces the 0.95 threshold.

The two lines that change are marked ``# pseudosel``; everything else is a textbook
FixMatch step (weak/strong views, cross-entropy on the labelled batch, the unlabelled loss
on the strong view). Selection starts after a supervised warm-up (the first quarter of the
steps) and the unlabelled loss is then ramped up with ``pseudosel.linear_rampup``: from a
random initialisation a selector would confirm the model's first, random guesses. Data:
scikit-learn digits, so the script runs offline.

    python examples/recipe_fixmatch_loop.py --steps 200
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from digits_data import digit_splits  # noqa: E402
from models import DigitCNN  # noqa: E402
from views import strong_digits, weak_digits  # noqa: E402

import pseudosel  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--selector", default="csl", help="csl, threshold, ...")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    splits = digit_splits(4)
    (x_l, y_l), (x_u, _), (x_t, y_t) = splits.labelled, splits.unlabelled, splits.test
    model = DigitCNN()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    warmup, rampup = args.steps // 4, args.steps // 4
    sel = None
    for step in range(args.steps):
        pick_l = torch.randint(0, len(x_l), (32,), generator=gen)
        pick_u = torch.randint(0, len(x_u), (64,), generator=gen)
        loss = F.cross_entropy(model(weak_digits(x_l[pick_l], gen)), y_l[pick_l])
        weight = pseudosel.linear_rampup(step, warmup, rampup)  # 0 during the warm-up
        if weight == 0:  # supervised warm-up: no selection yet
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            continue
        with torch.no_grad():
            probs_weak = model(weak_digits(x_u[pick_u], gen)).softmax(1)
        logits_strong = model(strong_digits(x_u[pick_u], gen))
        # FixMatch as usually written:
        #   confidence, pseudo = probs_weak.max(1); mask = (confidence >= 0.95).float()
        #   loss_u = (F.cross_entropy(logits_strong, pseudo, reduction="none") * mask).mean()
        sel = pseudosel.select_reliable(probs_weak, args.selector)  # pseudosel
        loss_u = pseudosel.weighted_cross_entropy(
            logits_strong, sel, normalize="batch"
        )  # pseudosel
        loss = loss + weight * loss_u
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        accuracy = (model(x_t).argmax(1) == y_t).float().mean().item()
    ratio = "-" if sel is None else f"{sel.ratio().item():.3f}"
    print(
        f"{args.steps} steps with {args.selector}: test accuracy {accuracy:.3f}, "
        f"last selection ratio {ratio}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
