"""The front door: every selector's inputs are checked and converted here, and only here.

:func:`prepare` is called by :func:`~pseudosel.select_reliable`, by every functional
selector and stateful core, by every selector module and by the wrapper of a registered
plug-in selector, so that all of them accept and refuse the same inputs with the same
messages. In order:

1. ``probs`` is a float tensor (N, K, *spatial) with the class axis at dim 1 — a known class
   count (``num_classes``) found in the last dim instead is channels-last input, refused
   with the fix; a 3-D sigmoid output must say whether it is a squeezed binary map or
   multi-label (``multilabel=``);
2. it is detached (selection never builds a graph), and with ``from_logits`` turned into
   probabilities (softmax over dim 1, or the element-wise sigmoid);
3. the validity mask is built from ``valid`` or ``ignore_mask`` (:func:`resolve_valid`);
4. with ``validate``, the values are checked at the valid positions (probability vectors
   along dim 1, or sigmoid probabilities in [0, 1]): a ``ValueError`` on a CPU, a
   device-side assertion elsewhere and under ``torch.compile``;
5. a sigmoid output becomes the two-class form (1 − p, p) that every selector takes
   (:func:`~pseudosel.activation.two_class`).

Shape and dtype checks read metadata only; the value check is the one read of the data.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from pseudosel.activation import apply_activation, two_class
from pseudosel.validation import (
    check_activation,
    check_probability_values,
    check_probs,
    check_sigmoid_values,
    is_multilabel,
    resolve_valid,
)

__all__ = ["Inputs", "check_layout", "check_multilabel", "per_class_inputs", "prepare"]


class Inputs(NamedTuple):
    """What :func:`prepare` hands to a selector's formula.

    Attributes:
        probs: (N, K, *spatial) class probabilities, detached — for a sigmoid output the
            two-class form, (N, 2, *spatial) binary or (N, 2, L, *spatial) multi-label.
        valid: bool (N, *spatial) (multi-label: (N, L, *spatial)); False = ignored.
        all_valid: True when neither ``valid`` nor ``ignore_mask`` was given (every
            position valid: formulas may skip their masking work).
    """

    probs: Tensor
    valid: Tensor
    all_valid: bool


def prepare(
    probs: Tensor,
    valid: Tensor | None = None,
    *,
    ignore_mask: Tensor | None = None,
    ignore_index: int = 255,
    from_logits: bool = False,
    activation: str = "softmax",
    multilabel: bool | None = None,
    num_classes: int | None = None,
    validate: bool = True,
    per_class_state: str | None = None,
    name: str = "probs",
    to_classes: bool = True,
    prepared: Inputs | None = None,
) -> Inputs:
    """Check and convert a selector's input (see the module docstring for the order).

    Args:
        probs: (N, K, *spatial) probabilities (logits with ``from_logits``); for
            ``activation="sigmoid"`` (N, 1, *spatial) binary or (N, L, *spatial) multi-label
            positive-class probabilities.
        valid: optional bool (N, *spatial) mask, True = use. Exclusive with ``ignore_mask``.
        ignore_mask: optional integer (N, *spatial) map, ``ignore_index`` = ignored.
        ignore_index: the ignored value of ``ignore_mask``. Default 255.
        from_logits: apply the activation first (in float32 for half inputs).
        activation: ``"softmax"`` (default) or ``"sigmoid"``.
        multilabel: for ``"sigmoid"``: whether dim 1 holds L independent labels. None
            (default) infers it from the shape — one channel is binary, L > 1 channels
            multi-label — except for 3-D input (N, X, Y), which is ambiguous (a binary map
            without its channel dim, or X labels over Y positions) and must be told.
        num_classes: the class count the caller expects at dim 1 (a module's K; the
            two-class form's 2 for a binary sigmoid output), or None (not checked).
            Checked on the class probabilities; a softmax input whose last dim has it
            instead is refused as channels-last.
        validate: check the values at the valid positions (default True).
        per_class_state: the name of a selector whose per-class state would mix the labels
            of a multi-label output: multi-label input is then refused, naming it.
        name: the argument's name in messages.
        to_classes: run steps 4 and 5 (True, default). False stops after the validity mask
            and returns the probabilities as given (after ``from_logits``): for a caller
            that hands them to a selector which runs its own front door.
        prepared: what an earlier call returned (a module passes its front door's
            :class:`Inputs` to its stages): returned as it is when its ``probs`` is
            ``probs`` and its ``valid`` is ``valid`` (or ``valid`` is None and nothing
            was ignored) — the checks ran there — and ignored otherwise.

    Returns:
        :class:`Inputs`.

    Raises:
        TypeError: not a float tensor; masks of the wrong type.
        ValueError: shapes (with the fix for channels-last input and for an ambiguous 3-D
            sigmoid output), masks, values (CPU eager; a device-side assertion elsewhere).

    Example:
        >>> import torch
        >>> from pseudosel.inputs import prepare
        >>> logits = torch.randn(2, 8, 8, 5)  # channels-last
        >>> prepare(logits, from_logits=True, num_classes=5)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: logits has its 5 classes in the last dim, ...; use logits.movedim(-1, 1)
        >>> prepare(logits.movedim(-1, 1), from_logits=True, num_classes=5).probs.shape
        torch.Size([2, 5, 8, 8])
    """
    if (
        prepared is not None
        and prepared.probs is probs
        and (valid is prepared.valid or (valid is None and prepared.all_valid))
        and ignore_mask is None
        and not from_logits
    ):
        return prepared
    activation = check_activation(activation)
    sigmoid = activation == "sigmoid"
    shown = "logits" if from_logits else name
    check_probs(probs, name=shown, min_classes=1 if sigmoid else 2)
    if sigmoid:
        check_multilabel(probs, multilabel, per_class_state, shown)
    elif num_classes is not None:
        check_layout(probs, num_classes, shown)
    if probs.requires_grad:  # a tensor that needs no detaching passes as itself, so that
        probs = probs.detach()  # a step's shared arg-max (features.shared_features) finds it
    if from_logits:
        probs = apply_activation(probs, activation)
    all_valid = valid is None and ignore_mask is None
    valid = resolve_valid(
        probs, valid, ignore_mask=ignore_mask, ignore_index=ignore_index, activation=activation
    )
    if not to_classes:
        return Inputs(probs, valid, all_valid)
    if validate:
        if sigmoid:
            check_sigmoid_values(probs, valid)
        else:
            check_probability_values(probs, valid, all_valid=all_valid)
    if sigmoid:
        probs = two_class(probs, multilabel=is_multilabel(probs, activation))
        if num_classes is not None:
            check_layout(probs, num_classes, shown)
    return Inputs(probs, valid, all_valid)


def per_class_inputs(
    probs: Tensor,
    valid: Tensor | None,
    num_classes: int | None,
    function: str,
    *,
    validate: bool = True,
    activation: str = "softmax",
    name: str = "probs",
    prepared: Inputs | None = None,
    **unexpected: object,
) -> Inputs:
    """:func:`prepare` for a functional core with per-class state (``function``): its
    ``validate`` and ``activation`` (binary sigmoid outputs only: multi-label input is
    refused, naming ``function``), ``num_classes`` from its state (None when the state does
    not tell), ``prepared`` (a module's front door already ran: :func:`prepare`).

    Example:
        >>> import torch
        >>> probs = torch.rand(4, 3)  # three labels
        >>> per_class_inputs(probs, None, 2, "core", activation="sigmoid")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: core does not support multi-label input: ...
    """
    if unexpected:
        raise TypeError(
            f"{function}() got unexpected keyword arguments {sorted(unexpected)}; besides its "
            "own options it takes valid=, validate= and activation="
        )
    return prepare(
        probs,
        valid,
        activation=activation,
        num_classes=num_classes,
        validate=validate,
        per_class_state=function,
        name=name,
        prepared=prepared,
    )


def check_layout(probs: Tensor, num_classes: int, name: str = "probs") -> None:
    """Check that dim 1 of ``probs`` has ``num_classes`` classes; name channels-last input.

    When both dim 1 and the last dim equal K the layout cannot be told from the shape:
    such input is read as channels-first, (N, K, ..., K).

    Raises:
        ValueError: another class count at dim 1 — with ``probs.movedim(-1, 1)`` as the fix
            when the last dim has the class count instead.

    Example:
        >>> import torch
        >>> check_layout(torch.rand(2, 16, 16, 3), 3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: probs has its 3 classes in the last dim, ...; use probs.movedim(-1, 1)
    """
    shape = tuple(probs.shape)
    if shape[1] == num_classes:
        return
    if probs.dim() >= 3 and shape[-1] == num_classes:
        raise ValueError(
            f"{name} has its {num_classes} classes in the last dim, shape {shape}: the class "
            f"axis must be dim 1; use {name}.movedim(-1, 1)"
        )
    raise ValueError(
        f"{name} has {shape[1]} classes at dim 1 (shape {shape}), but the selector "
        f"expects num_classes={num_classes}"
    )


def check_multilabel(
    probs: Tensor, multilabel: bool | None, per_class_state: str | None, name: str = "probs"
) -> None:
    """For a sigmoid output: refuse an ambiguous or contradictory channel count.

    ``multilabel=None`` reads one channel as binary and L > 1 channels as L labels, but a
    3-D (N, X, Y) input is refused: it is as likely a binary map that lost its channel dim
    as X labels over Y positions. ``True``/``False`` state it (L > 1 / one channel).
    ``per_class_state``: a selector that takes no multi-label input at all.

    Example:
        >>> import torch
        >>> check_multilabel(torch.rand(2, 8, 8), None, None)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: probs of shape (2, 8, 8) with activation="sigmoid" is ambiguous: ...
        >>> check_multilabel(torch.rand(2, 8, 8), True, None)  # 8 labels over 8 positions
    """
    shape = tuple(probs.shape)
    channels = shape[1]
    if multilabel is not None and not isinstance(multilabel, bool):
        raise TypeError(f"multilabel must be None, True or False, got {multilabel!r}")
    if per_class_state is not None and channels > 1:
        raise ValueError(
            f'{per_class_state} does not support multi-label input: with activation="sigmoid", '
            f"{name} of shape {shape} holds {channels} independent labels at dim 1, and its "
            "per-class state would mix them. It takes binary sigmoid outputs (N, 1, *spatial)"
            f" — a binary map of shape (N, H, W) needs its channel dim: {name}.unsqueeze(1); "
            "for multi-label use threshold, csl, adamatch, entropy_split or Dash "
            "(docs/binary.md)"
        )
    if multilabel is None and probs.dim() == 3 and channels > 1:
        raise ValueError(
            f'{name} of shape {shape} with activation="sigmoid" is ambiguous: pass '
            f"{name}.unsqueeze(1), shape {(shape[0], 1, *shape[1:])}, for a binary map, or "
            f"multilabel=True for {channels} independent labels over {shape[2]} positions"
        )
    if multilabel is True and channels == 1:
        raise ValueError(
            f"multilabel=True, but {name} of shape {shape} has one channel at dim 1: a "
            "binary output; leave multilabel unset"
        )
    if multilabel is False and channels > 1:
        raise ValueError(
            f"multilabel=False, but {name} of shape {shape} has {channels} channels at dim 1: "
            "a binary output has one, (N, 1, *spatial)"
        )
