"""Masking: block masks, Trusted Mask Perturbation, CutMix boxes, paste."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from helpers.probability_maps import smooth_maps
from scipy import stats

import pseudosel
from pseudosel.masking import (
    block_mask,
    cutmix_box,
    cutmix_params,
    paste,
    trusted_mask_perturbation,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- block_mask


def test_block_mask_covered_fraction_is_ratio_within_three_standard_errors():
    masks = block_mask(800, 40, 40, ratio=0.7, block_size=16, generator=gen(0))
    fractions = masks.flatten(1).float().mean(1).double()
    mean, se = fractions.mean().item(), (fractions.std() / math.sqrt(len(fractions))).item()
    assert abs(mean - 0.7) <= 3 * se


def test_block_mask_is_constant_on_cells_and_cuts_edge_cells():
    mask = block_mask(5, 40, 37, ratio=0.5, block_size=16, generator=gen(1))
    for r0 in range(0, 40, 16):
        for c0 in range(0, 37, 16):
            cell = mask[:, r0 : r0 + 16, c0 : c0 + 16]
            assert (cell == cell[:, :1, :1]).all()
    # 3 x 3 cells of which the last row and column are partial: 8 and 5 pixels
    assert mask.shape == (5, 40, 37)


def test_block_mask_extremes_and_determinism():
    assert block_mask(3, 10, 10, ratio=0.0).sum() == 0
    assert block_mask(3, 10, 10, ratio=1.0).all()
    a = block_mask(4, 64, 64, generator=gen(5))
    assert torch.equal(a, block_mask(4, 64, 64, generator=gen(5)))
    assert not torch.equal(a, block_mask(4, 64, 64, generator=gen(6)))


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"ratio": 1.5}, ValueError, r"ratio must be in \[0, 1\], got 1.5"),
        ({"ratio": -0.1}, ValueError, r"ratio must be in \[0, 1\]"),
        ({"block_size": 0}, ValueError, "block_size must be >= 1, got 0"),
        ({"block_size": 8.0}, TypeError, "block_size must be an int, got float"),
    ],
)
def test_block_mask_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        block_mask(2, 8, 8, **kwargs)
    with pytest.raises(ValueError, match="height must be >= 0, got -1"):
        block_mask(2, -1, 8)


# ---------------------------------------------------------------- TMP


def tmp_inputs(n=64, size=48, seed=0):
    probs = smooth_maps(n, 6, size, size, sharpness=6.0, seed=seed)
    valid = torch.ones(n, size, size, dtype=torch.bool)
    valid[:, :, -8:] = False  # padded border
    sel = pseudosel.select_reliable(probs, valid=valid)
    images = torch.randn(n, 3, size, size, generator=gen(seed))
    return images, sel


def test_tmp_only_covers_trusted_valid_pixels_and_about_ratio_of_them():
    images, sel = tmp_inputs()
    masked, covered = trusted_mask_perturbation(
        images, sel, ratio=0.7, block_size=8, p=1.0, generator=gen(2)
    )
    assert not (covered & ~sel.mask).any()
    assert not (covered & ~sel.valid).any()
    share = covered.sum().item() / sel.mask.sum().item()
    assert abs(share - 0.7) < 0.05
    assert (masked[covered[:, None].expand_as(images)] == 0).all()
    assert torch.equal(
        masked[~covered[:, None].expand_as(images)], images[~covered[:, None].expand_as(images)]
    )


def test_tmp_applies_to_a_share_p_of_samples():
    images, sel = tmp_inputs(n=400, size=16)
    _, covered = trusted_mask_perturbation(
        images, sel, ratio=1.0, block_size=4, p=0.5, generator=gen(3)
    )
    has_trusted = sel.mask.flatten(1).any(1)
    applied = covered.flatten(1).any(1)[has_trusted].double()
    se = math.sqrt(0.25 / len(applied))
    assert abs(applied.mean().item() - 0.5) <= 3 * se
    # ratio = 1 on an applied sample covers every trusted pixel of it
    full = covered.flatten(1).any(1)
    assert torch.equal(covered[full], sel.mask[full])
    _, none = trusted_mask_perturbation(images, sel, p=0.0, generator=gen(3))
    assert not none.any()


def test_tmp_fill_per_channel_and_determinism():
    images, sel = tmp_inputs(n=4, size=32)
    fill = torch.tensor([1.0, 2.0, 3.0])
    masked, covered = trusted_mask_perturbation(images, sel, p=1.0, fill=fill, generator=gen(4))
    for channel, value in enumerate(fill):
        assert (masked[:, channel][covered] == value).all()
    again, covered_again = trusted_mask_perturbation(
        images, sel, p=1.0, fill=fill, generator=gen(4)
    )
    assert torch.equal(masked, again) and torch.equal(covered, covered_again)
    _, other = trusted_mask_perturbation(images, sel, p=1.0, generator=gen(5))
    assert not torch.equal(covered, other)


def test_tmp_errors():
    images, sel = tmp_inputs(n=2, size=16)
    with pytest.raises(
        ValueError, match=r"selection fields must have shape \(N, H, W\) = \(2, 12, 16\)"
    ):
        trusted_mask_perturbation(images[:, :, :12], sel)
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\)"):
        trusted_mask_perturbation(images[:, 0], sel)
    with pytest.raises(TypeError, match="images must be a floating-point torch.Tensor"):
        trusted_mask_perturbation(images.long(), sel)
    with pytest.raises(TypeError, match="selection must be a pseudosel.Selection"):
        trusted_mask_perturbation(images, sel.mask)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        trusted_mask_perturbation(images, sel, p=2)
    with pytest.raises(ValueError, match=r"fill must be a number or a \(3,\) tensor"):
        trusted_mask_perturbation(images, sel, fill=torch.zeros(2))


# ---------------------------------------------------------------- CutMix


def unimatch_loop(
    rng: random.Random, height, width, p=0.5, area=(0.02, 0.4), aspect=(0.3, 1 / 0.3)
):
    """UniMatch's box law, written out with Python's random module, one box at a time."""
    if rng.random() > p:
        return None
    size = rng.uniform(*area) * height * width
    while True:
        ratio = rng.uniform(*aspect)
        w, h = int(math.sqrt(size / ratio)), int(math.sqrt(size * ratio))
        x, y = rng.randrange(width), rng.randrange(height)
        if x + w <= width and y + h <= height:
            return x, y, w, h


def test_cutmix_law_matches_unimatch():
    height = width = 4096  # large, so that flooring to pixels barely moves the law
    apply, x, y, w, h = cutmix_params(3000, height, width, p=1.0, generator=gen(7))
    assert apply.all()
    rng = random.Random(0)
    boxes = np.array([unimatch_loop(rng, height, width, p=1.0) for _ in range(3000)], float)
    ours_area = (w * h / (height * width)).numpy()
    ours_aspect = (h / w).numpy()
    ref_area = boxes[:, 2] * boxes[:, 3] / (height * width)
    ref_aspect = boxes[:, 3] / boxes[:, 2]
    assert ours_area.min() >= 0.02 * 0.99 and ours_area.max() <= 0.4
    assert stats.kstest(ours_area / 1.0, stats.uniform(0.02, 0.38).cdf).pvalue > 1e-3
    assert stats.ks_2samp(ours_area, ref_area).pvalue > 1e-3
    assert stats.ks_2samp(ours_aspect, ref_aspect).pvalue > 1e-3
    # positions are uniform over where the box fits: compare the box centres too
    ours_cx = ((x + w / 2) / width).numpy()
    ref_cx = (boxes[:, 0] + boxes[:, 2] / 2) / width
    assert stats.ks_2samp(ours_cx, ref_cx).pvalue > 1e-3


def test_cutmix_boxes_are_rectangles_inside_the_image():
    box = cutmix_box(200, 33, 47, p=0.5, generator=gen(8))
    with_box = box.flatten(1).any(1)
    assert abs(with_box.double().mean().item() - 0.5) <= 3 * math.sqrt(0.25 / 200)
    for mask in box[with_box]:
        rows = mask.any(1).nonzero().flatten()
        cols = mask.any(0).nonzero().flatten()
        assert rows.numel() == rows[-1] - rows[0] + 1  # contiguous
        assert mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()
        assert mask.sum() == rows.numel() * cols.numel()


def test_cutmix_determinism_and_errors():
    a = cutmix_box(8, 32, 32, p=1.0, generator=gen(1))
    assert torch.equal(a, cutmix_box(8, 32, 32, p=1.0, generator=gen(1)))
    assert not torch.equal(a, cutmix_box(8, 32, 32, p=1.0, generator=gen(2)))
    with pytest.raises(ValueError, match=r"area\[1\] must be in \[0, 1\], got 1.5"):
        cutmix_box(2, 8, 8, area=(0.1, 1.5))
    with pytest.raises(ValueError, match="area must satisfy min <= max"):
        cutmix_box(2, 8, 8, area=(0.5, 0.1))
    with pytest.raises(TypeError, match=r"aspect must be a \(min, max\) pair"):
        cutmix_box(2, 8, 8, aspect=2.0)
    with pytest.raises(ValueError, match="aspect must be > 0"):
        cutmix_box(2, 8, 8, aspect=(0.0, 1.0))


def test_cutmix_box_that_cannot_fit_is_shrunk_into_the_image():
    box = cutmix_box(50, 10, 10, p=1.0, area=(1.0, 1.0), aspect=(3.0, 3.0), generator=gen(0))
    assert box.flatten(1).any(1).all()  # still a (clipped) box, inside the image


# ---------------------------------------------------------------- paste


def test_paste_images_hand_built(device):
    target = torch.zeros(2, 3, 4, 4, device=device)
    source = torch.ones(2, 3, 4, 4, device=device)
    box = torch.zeros(2, 4, 4, dtype=torch.bool, device=device)
    box[0, 1:3, 0:2] = True
    mixed = paste(target, source, box)
    assert (mixed[0, :, 1:3, 0:2] == 1).all()
    assert mixed[0].sum() == 3 * 4 and mixed[1].sum() == 0


def test_paste_selection_moves_every_field_together(device):
    probs = smooth_maps(2, 4, 6, 6, seed=0).to(device)
    valid = torch.ones(2, 6, 6, dtype=torch.bool, device=device)
    target = pseudosel.select_reliable(probs, valid=valid)
    source = pseudosel.select_reliable(probs.flip(0), valid=torch.zeros_like(valid))
    box = torch.zeros(2, 6, 6, dtype=torch.bool, device=device)
    box[:, 2:5, 1:4] = True
    mixed = paste(target, source, box)
    assert isinstance(mixed, pseudosel.Selection)
    for name in mixed._fields:
        got, src, tgt = getattr(mixed, name), getattr(source, name), getattr(target, name)
        assert torch.equal(got[box], src[box]), name
        assert torch.equal(got[~box], tgt[~box]), name
    assert not mixed.valid[box].any() and mixed.valid[~box].all()


def test_paste_errors():
    box = torch.zeros(2, 4, 4, dtype=torch.bool)
    with pytest.raises(TypeError, match="box must be a bool tensor"):
        paste(torch.zeros(2, 4, 4), torch.ones(2, 4, 4), box.float())
    with pytest.raises(ValueError, match=r"source must have the shape of target \(2, 4, 4\)"):
        paste(torch.zeros(2, 4, 4), torch.ones(2, 4, 5), box)
    with pytest.raises(ValueError, match=r"target must have shape \(N, \*, H, W\)"):
        paste(torch.zeros(2, 4, 5), torch.ones(2, 4, 5), box)
    sel = pseudosel.select_reliable(torch.full((2, 3, 4, 4), 1 / 3))
    with pytest.raises(TypeError, match="source must be a Selection like target"):
        paste(sel, torch.zeros(2, 4, 4), box)
