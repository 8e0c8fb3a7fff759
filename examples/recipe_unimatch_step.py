"""Recipe: one UniMatch-style segmentation step with CSL, CutMix bookkeeping and TMP.

``unimatch_step`` is what a UniMatch/CSL training script does per iteration, written with
pseudosel: select on the weak view (ignore map in UniMatch's convention), paste the mixing
batch's pseudo-labels, weights and validity inside each CutMix box with one call, hide
trusted pixels of one view with Trusted Mask Perturbation, and normalise the unlabelled
losses by valid pixels. Runs a few steps on digit mosaics:

    python examples/recipe_unimatch_step.py --steps 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from digits_data import IGNORE, make_mosaics  # noqa: E402
from models import MosaicFCN  # noqa: E402
from views import random_crops, strong_mosaic  # noqa: E402

import pseudosel  # noqa: E402
from pseudosel.masking import cutmix_box, paste, trusted_mask_perturbation  # noqa: E402


def unimatch_step(model, img_l, mask_l, img_u, ignore_u, img_mix, ignore_mix, gen):
    """One step's loss: (L_sup + 0.25 L_cutmix + 0.25 L_tmp + 0.5 L_fp) / 2."""
    n, _, h, w = img_u.shape
    with torch.no_grad():
        probs_u = model(img_u).softmax(1)
        probs_mix = model(img_mix).softmax(1)
    sel = pseudosel.select_reliable(probs_u, "csl", ignore_mask=ignore_u)
    sel_mix = pseudosel.select_reliable(probs_mix, "csl", ignore_mask=ignore_mix)

    box = cutmix_box(n, h, w, p=0.5, generator=gen)
    view_cutmix = paste(strong_mosaic(img_u, gen), strong_mosaic(img_mix, gen), box)
    target_cutmix = paste(sel, sel_mix, box)  # labels, weights, mask, score, valid together
    view_tmp, _ = trusted_mask_perturbation(
        strong_mosaic(img_u, gen), sel, block_size=8, generator=gen
    )

    loss_sup = F.cross_entropy(model(img_l), mask_l, ignore_index=IGNORE)
    loss_cutmix = pseudosel.weighted_cross_entropy(model(view_cutmix), target_cutmix)
    loss_tmp = pseudosel.weighted_cross_entropy(model(view_tmp), sel)
    _, logits_fp = model(img_u, feature_dropout=True)
    loss_fp = pseudosel.weighted_cross_entropy(logits_fp, sel)
    return (loss_sup + 0.25 * loss_cutmix + 0.25 * loss_tmp + 0.5 * loss_fp) / 2, sel


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x_l, y_l = make_mosaics(16, seed=1)
    x_u, y_u = make_mosaics(64, seed=2)
    model = MosaicFCN()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    warmup = args.steps // 4  # supervised steps before selection starts
    sel = None
    for step in range(args.steps):
        pick_l = torch.randint(0, len(x_l), (4,), generator=gen)
        pick_u = torch.randint(0, len(x_u), (8,), generator=gen)
        img_l, mask_l = random_crops(x_l[pick_l], y_l[pick_l], 40, 8, gen)
        img_u, hidden = random_crops(x_u[pick_u], y_u[pick_u], 40, 8, gen)
        ignore = (hidden == IGNORE).long() * IGNORE  # padded area only
        if pseudosel.linear_rampup(step, warmup) == 0:  # supervised warm-up
            loss = F.cross_entropy(model(img_l), mask_l, ignore_index=IGNORE)
        else:
            loss, sel = unimatch_step(
                model, img_l, mask_l, img_u[:4], ignore[:4], img_u[4:], ignore[4:], gen
            )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    share = "-" if sel is None else f"{sel.ratio().item():.3f}"
    print(f"{args.steps} steps: loss {loss.item():.3f}, trusted share {share}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
