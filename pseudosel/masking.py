"""Masks for the strong views of a semi-supervised step: CSL's Trusted Mask Perturbation,
UniMatch's CutMix boxes, and pasting images and selections consistently inside a box.

All randomness goes through an optional ``torch.Generator``. Random numbers are drawn on the
generator's device (CPU when none is given and ``device`` is CPU), so a seed gives the same
masks run after run; results are then moved to ``device``. Everything is vectorised over the
batch: no Python loop over samples or pixels.
"""

from __future__ import annotations

from numbers import Integral

import torch
from torch import Tensor

from pseudosel.selection import Selection
from pseudosel.validation import check_real

__all__ = ["block_mask", "cutmix_box", "cutmix_params", "paste", "trusted_mask_perturbation"]

# CutMix boxes are drawn by rejection sampling, as in UniMatch, with this many candidates per
# box drawn at once; for the default law the chance that none fits is below 1e-20.
CUTMIX_CANDIDATES = 1024


def _check_size(name: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_output_size(batch: object, height: object, width: object) -> tuple[int, int, int]:
    return _check_size("batch", batch), _check_size("height", height), _check_size("width", width)


def _check_range(name: str, value: object, low: float, high: float | None) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a (min, max) pair, got {value!r}")
    lo = check_real(f"{name}[0]", value[0], low=low, high=high)
    hi = check_real(f"{name}[1]", value[1], low=low, high=high)
    if lo > hi:
        raise ValueError(f"{name} must satisfy min <= max, got {value!r}")
    return lo, hi


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device) -> Tensor:
    """Uniform [0, 1) numbers drawn where the generator lives, then moved to ``device``."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where).to(device)


def block_mask(
    batch: int,
    height: int,
    width: int,
    *,
    ratio: float = 0.7,
    block_size: int = 32,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random block mask: a grid of cells, each covered independently with probability ``ratio``.

    The grid has ⌈height / block_size⌉ x ⌈width / block_size⌉ cells, upsampled (nearest) to
    the image size; cells on the bottom and right edges are cut to the image (CSL_SPEC.md §6).

    Args:
        batch: number of masks.
        height: mask height.
        width: mask width.
        ratio: probability that a cell is covered, in [0, 1]. Default 0.7 (CSL's TMP).
        block_size: cell side in pixels, >= 1. Default 32.
        device: where the mask lives (default: the generator's device, else CPU).
        generator: optional ``torch.Generator`` for reproducible masks.

    Returns:
        bool (batch, height, width), True = covered.

    Example:
        >>> import torch
        >>> from pseudosel.masking import block_mask
        >>> mask = block_mask(2, 40, 40, block_size=16, generator=torch.Generator().manual_seed(0))
        >>> mask.shape, mask.dtype
        (torch.Size([2, 40, 40]), torch.bool)
    """
    batch, height, width = _check_output_size(batch, height, width)
    block_size = _check_size("block_size", block_size, minimum=1)
    ratio = check_real("ratio", ratio, low=0.0, high=1.0)
    device = torch.device(device) if device is not None else _default_device(generator)
    cells = _rand((batch, -(-height // block_size), -(-width // block_size)), generator, device)
    covered = cells < ratio
    rows = torch.arange(height, device=device) // block_size
    cols = torch.arange(width, device=device) // block_size
    return covered[:, rows[:, None], cols[None, :]]


def _default_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def trusted_mask_perturbation(
    images: Tensor,
    selection: Selection,
    *,
    ratio: float = 0.7,
    block_size: int = 32,
    p: float = 0.5,
    fill: float | Tensor = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """CSL's Trusted Mask Perturbation: hide random blocks of *trusted* pixels of a view.

    For each sample, with probability ``p``, the pixels covered by a :func:`block_mask` that
    are also trusted (``selection.mask``) and valid are replaced by ``fill``; the network must
    then infer them from context. The targets for the masked view stay the weak-view
    pseudo-labels and weights over all pixels (CSL_SPEC.md §6).

    Random draws, in order: one coin per sample (apply or not), then the block mask.

    Args:
        images: (N, C, H, W) float images (usually a strong view, already normalised).
        selection: the weak view's :class:`~pseudosel.Selection`, fields (N, H, W).
        ratio: block coverage probability in [0, 1]. Default 0.7.
        block_size: block side in pixels. Default 32.
        p: probability that a sample is perturbed at all. Default 0.5.
        fill: value written into covered pixels: a number, or a (C,) tensor (one per
            channel). Default 0.0 — the dataset mean colour after normalisation.
        generator: optional ``torch.Generator``.

    Returns:
        ``(masked_images, covered)``: masked_images (N, C, H, W), a new tensor; covered bool
        (N, H, W), the pixels that were replaced.

    Raises:
        ValueError: if the images' (N, H, W) differs from the selection's shape — e.g. an
            image crop that no longer matches the weak view's predictions. Resize or crop both
            the same way first.

    Example:
        >>> import torch, pseudosel
        >>> from pseudosel.masking import trusted_mask_perturbation
        >>> images = torch.randn(2, 3, 64, 64)
        >>> sel = pseudosel.select_reliable(torch.randn(2, 5, 64, 64).softmax(1))
        >>> masked, covered = trusted_mask_perturbation(images, sel, p=1.0)
        >>> bool((covered <= sel.mask).all())
        True
    """
    if not isinstance(images, Tensor) or not images.is_floating_point():
        got = images.dtype if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(f"images must be a floating-point torch.Tensor, got {got}")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if not isinstance(selection, Selection):
        raise TypeError(f"selection must be a pseudosel.Selection, got {type(selection).__name__}")
    expected = (images.shape[0], *images.shape[2:])
    if tuple(selection.mask.shape) != expected:
        raise ValueError(
            f"selection fields must have shape (N, H, W) = {expected} to match images "
            f"{tuple(images.shape)}, got {tuple(selection.mask.shape)}; crop or resize the "
            "images and the predictions the same way"
        )
    p = check_real("p", p, low=0.0, high=1.0)
    n, channels, height, width = images.shape
    applied = _rand((n,), generator, images.device) < p
    blocks = block_mask(
        n,
        height,
        width,
        ratio=ratio,
        block_size=block_size,
        device=images.device,
        generator=generator,
    )
    covered = blocks & selection.mask & selection.valid & applied[:, None, None]
    fill_value = torch.as_tensor(fill, dtype=images.dtype, device=images.device)
    if fill_value.dim() == 1 and fill_value.numel() == channels:
        fill_value = fill_value.view(1, channels, 1, 1)
    elif fill_value.dim() != 0:
        raise ValueError(
            f"fill must be a number or a ({channels},) tensor, got shape {tuple(fill_value.shape)}"
        )
    return torch.where(covered[:, None], fill_value, images), covered


def cutmix_box(
    batch: int,
    height: int,
    width: int,
    *,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """UniMatch's CutMix box, one per sample, batched.

    With probability ``p`` a sample gets a box (else an empty mask). The box area is
    a·H·W with a ~ U(area); then an aspect ratio r ~ U(aspect) and a top-left corner
    (x, y) uniform over the image are drawn, box width ⌊√(a·H·W / r)⌋ and height
    ⌊√(a·H·W·r)⌋, and (r, x, y) are redrawn until the box fits — UniMatch's rejection loop,
    run here on ``CUTMIX_CANDIDATES`` candidates at once. If none fits (possible only for
    areas near 1 with extreme aspects), the last candidate is shrunk to the image and moved
    inside it.

    Args:
        batch: number of boxes.
        height: image height.
        width: image width.
        p: probability that a sample gets a box. Default 0.5.
        area: (min, max) box area as a fraction of the image, within [0, 1].
            Default (0.02, 0.4).
        aspect: (min, max) aspect ratio r (height / width), > 0. Default (0.3, 1/0.3).
        device: where the mask lives (default: the generator's device, else CPU).
        generator: optional ``torch.Generator``.

    Returns:
        bool (batch, height, width), True inside the box (where the mixing image is pasted).

    Example:
        >>> import torch
        >>> from pseudosel.masking import cutmix_box
        >>> box = cutmix_box(4, 32, 32, p=1.0, generator=torch.Generator().manual_seed(0))
        >>> box.shape, bool(box.flatten(1).any(1).all())
        (torch.Size([4, 32, 32]), True)
    """
    batch, height, width = _check_output_size(batch, height, width)
    device = torch.device(device) if device is not None else _default_device(generator)
    apply, x, y, box_w, box_h = cutmix_params(
        batch, height, width, p=p, area=area, aspect=aspect, generator=generator
    )
    cols = torch.arange(width, dtype=x.dtype, device=x.device)
    rows = torch.arange(height, dtype=x.dtype, device=x.device)
    inside_x = (cols >= x[:, None]) & (cols < (x + box_w)[:, None])  # (batch, W)
    inside_y = (rows >= y[:, None]) & (rows < (y + box_h)[:, None])  # (batch, H)
    box = inside_y[:, :, None] & inside_x[:, None, :] & apply[:, None, None]
    return box.to(device)


def cutmix_params(
    batch: int,
    height: int,
    width: int,
    *,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The random part of :func:`cutmix_box`: whether each sample gets a box, and the box.

    Returns:
        ``(apply, x, y, w, h)``, each (batch,): apply bool; left column x, top row y, width w
        and height h in pixels as float64 integers, on the generator's device.

    Example:
        >>> import torch
        >>> from pseudosel.masking import cutmix_params
        >>> apply, x, y, w, h = cutmix_params(3, 100, 100, p=1.0,
        ...                                   generator=torch.Generator().manual_seed(0))
        >>> bool(apply.all()), bool(((x + w <= 100) & (y + h <= 100)).all())
        (True, True)
    """
    p = check_real("p", p, low=0.0, high=1.0)
    area_lo, area_hi = _check_range("area", area, 0.0, 1.0)
    aspect_lo, aspect_hi = _check_range("aspect", aspect, 0.0, None)
    if aspect_lo <= 0:
        raise ValueError(f"aspect must be > 0, got {aspect!r}")
    draws = _rand((batch, 2 + 3 * CUTMIX_CANDIDATES), generator, _default_device(generator))
    draws = draws.double()
    apply = draws[:, 0] < p
    size = (area_lo + (area_hi - area_lo) * draws[:, 1]) * (height * width)  # pixels
    ratio, x_draw, y_draw = draws[:, 2:].view(batch, 3, CUTMIX_CANDIDATES).unbind(1)
    ratio = aspect_lo + (aspect_hi - aspect_lo) * ratio
    box_w = torch.sqrt(size[:, None] / ratio).floor()
    box_h = torch.sqrt(size[:, None] * ratio).floor()
    x = (x_draw * width).floor()
    y = (y_draw * height).floor()
    fits = (x + box_w <= width) & (y + box_h <= height)
    # the first candidate that fits (argmax of a 0/1 row is its first 1), else the last one
    first = fits.to(torch.uint8).argmax(1, keepdim=True)
    chosen = torch.where(fits.any(1, keepdim=True), first, CUTMIX_CANDIDATES - 1)
    box_w, box_h, x, y = (t.gather(1, chosen).squeeze(1) for t in (box_w, box_h, x, y))
    box_w, box_h = box_w.clamp(max=width), box_h.clamp(max=height)
    x, y = torch.minimum(x, width - box_w), torch.minimum(y, height - box_h)
    return apply, x, y, box_w, box_h


def paste(
    target: Tensor | Selection, source: Tensor | Selection, box: Tensor
) -> Tensor | Selection:
    """Copy ``source`` into ``target`` inside ``box`` (CutMix bookkeeping in one call).

    Works on tensors whose first dim is the batch and last two dims are (H, W) — images
    (N, C, H, W), label maps (N, H, W) — and on a whole :class:`~pseudosel.Selection`, whose
    labels, weight, mask, score and valid are pasted together so a mixed view's pseudo-labels,
    weights and ignore map stay consistent with its pixels.

    Args:
        target: tensor (N, *, H, W) or Selection with (N, H, W) fields — what is kept outside.
        source: same type and shape as ``target`` — what appears inside the box (e.g. the
            mixing batch).
        box: bool (N, H, W), as returned by :func:`cutmix_box`.

    Returns:
        A new tensor or Selection: ``source`` where ``box``, ``target`` elsewhere.

    Example:
        >>> import torch
        >>> from pseudosel.masking import paste
        >>> box = torch.zeros(1, 2, 2, dtype=torch.bool); box[0, 0, 0] = True
        >>> paste(torch.zeros(1, 2, 2), torch.ones(1, 2, 2), box)
        tensor([[[1., 0.],
                 [0., 0.]]])
    """
    if not isinstance(box, Tensor) or box.dtype != torch.bool:
        got = box.dtype if isinstance(box, Tensor) else type(box).__name__
        raise TypeError(f"box must be a bool tensor (N, H, W), got {got}")
    if box.dim() != 3:
        raise ValueError(f"box must have shape (N, H, W), got {tuple(box.shape)}")
    if isinstance(target, Selection):
        if not isinstance(source, Selection):
            raise TypeError(f"source must be a Selection like target, got {type(source).__name__}")
        return Selection(
            *(
                _paste_tensor(f"target.{name}", t, s, box)
                for name, t, s in zip(Selection._fields, target, source, strict=True)
            )
        )
    return _paste_tensor("target", target, source, box)


def _paste_tensor(name: str, target: object, source: object, box: Tensor) -> Tensor:
    if not isinstance(target, Tensor) or not isinstance(source, Tensor):
        raise TypeError(
            f"{name} and source must both be tensors or Selections, got "
            f"{type(target).__name__} and {type(source).__name__}"
        )
    if target.shape != source.shape:
        raise ValueError(
            f"source must have the shape of {name} {tuple(target.shape)}, got {tuple(source.shape)}"
        )
    if target.dim() < 3 or (target.shape[0], *target.shape[-2:]) != tuple(box.shape):
        raise ValueError(
            f"{name} must have shape (N, *, H, W) with (N, H, W) = {tuple(box.shape)} of box, "
            f"got {tuple(target.shape)}"
        )
    shape = (box.shape[0],) + (1,) * (target.dim() - 3) + tuple(box.shape[1:])
    return torch.where(box.view(shape), source, target)
