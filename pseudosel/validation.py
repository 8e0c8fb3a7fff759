"""Input contract checks shared by every selector: shapes, dtypes, validity masks, values.

Shape and dtype checks read only metadata and always run. Value checks (finite, >= 0,
summing to 1 along the class axis) read the data: in CPU eager mode they raise
``ValueError``; on other devices and under ``torch.compile`` they become a device-side
assertion (``torch._assert_async``), so they add neither a host synchronisation nor a graph
break. Every selector exposes them through ``validate: bool = True``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection
from numbers import Integral, Real

import torch
from torch import Tensor

from pseudosel import kernels
from pseudosel.kernels import planes

__all__ = [
    "ACTIVATIONS",
    "check_activation",
    "check_bool_mask",
    "check_choice",
    "check_float_matrix",
    "check_ignore_index",
    "check_labels",
    "check_long",
    "check_probability_values",
    "check_probs",
    "check_real",
    "check_sigmoid_values",
    "compute_dtype",
    "in_dtype",
    "is_multilabel",
    "probability_vectors_ok",
    "resolve_valid",
    "sigmoid_values_ok",
    "values_hint",
    "values_ok",
]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# How a network's output along dim 1 becomes probabilities: "softmax" (dim 1 holds K
# classes) or "sigmoid" (each entry of dim 1 is an independent positive-class probability).
ACTIVATIONS = ("softmax", "sigmoid")


def in_dtype(tensor: Tensor, dtype: torch.dtype) -> Tensor:
    """``tensor.to(dtype)``, without the call when it has that dtype already: even a no-op
    ``.to`` is a dispatched op, and a small batch's training step makes dozens of them.

    Example:
        >>> import torch
        >>> x = torch.zeros(2)
        >>> in_dtype(x, torch.float32) is x, in_dtype(x, torch.float64).dtype
        (True, torch.float64)
    """
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype selectors compute in: float32 for float16/bfloat16, otherwise ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_probs(probs: object, *, name: str = "probs", min_classes: int = 2) -> None:
    """Check that ``probs`` is a float tensor (N, K, *spatial) with K >= ``min_classes``.

    A single channel (K = 1) where two classes are needed is named as what it usually is,
    a binary sigmoid output, and the error points to ``activation="sigmoid"``.

    Raises:
        TypeError: not a tensor, or not float16/bfloat16/float32/float64.
        ValueError: fewer than two dimensions, or a class dimension (dim 1) that is too small.
    """
    if not isinstance(probs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(probs).__name__}")
    if probs.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got dtype {probs.dtype}"
        )
    if probs.dim() < 2 or probs.shape[1] < min_classes:
        binary = probs.dim() >= 2 and probs.shape[1] == 1
        hint = (
            '; a single channel is a binary sigmoid output: pass activation="sigmoid" '
            "(its probability p is read as the two classes (1 - p, p))"
            if binary
            else ""
        )
        raise ValueError(
            f"{name} must have a class dimension at dim 1 of size >= {min_classes}, "
            f"i.e. shape (N, K) or (N, K, *spatial), got shape {tuple(probs.shape)}{hint}"
        )


def check_activation(activation: object) -> str:
    """Check that ``activation`` is ``"softmax"`` or ``"sigmoid"``; return it.

    Example:
        >>> check_activation("sigmoid")
        'sigmoid'
    """
    return check_choice("activation", activation, ACTIVATIONS)


def is_multilabel(probs: Tensor, activation: str) -> bool:
    """Whether ``probs`` is a multi-label output: ``activation="sigmoid"`` and more than one
    channel at dim 1, i.e. (N, L, *spatial) independent sigmoids with L > 1.

    With ``"sigmoid"``, dim 1 of size 1 is a binary output (positions (N, *spatial)) and
    dim 1 of size L > 1 holds L labels (positions (N, L, *spatial)). With ``"softmax"``
    dim 1 is always the class axis. Reads only the shape.

    Example:
        >>> import torch
        >>> is_multilabel(torch.rand(4, 3), "sigmoid"), is_multilabel(torch.rand(4, 1), "sigmoid")
        (True, False)
    """
    return activation == "sigmoid" and probs.dim() >= 2 and probs.shape[1] > 1


def _position_shape(probs: Tensor, activation: str = "softmax") -> tuple[int, ...]:
    if is_multilabel(probs, activation):
        return tuple(probs.shape)  # one position per (sample, label[, pixel])
    return (probs.shape[0], *probs.shape[2:])


def resolve_valid(
    probs: Tensor,
    valid: Tensor | None = None,
    *,
    ignore_mask: Tensor | None = None,
    ignore_index: int = 255,
    activation: str = "softmax",
) -> Tensor:
    """Return the bool validity mask (N, *spatial) of the positions of ``probs``.

    Args:
        probs: (N, K, *spatial) predictions (only its shape and device are used).
        valid: optional bool (N, *spatial); True marks positions that take part.
        ignore_mask: optional integer (N, *spatial) map in UniMatch's convention:
            positions equal to ``ignore_index`` are ignored. Exclusive with ``valid``.
        ignore_index: the value of ``ignore_mask`` that marks an ignored position, an int
            within the range of ``ignore_mask``'s dtype (0..255 for uint8). Default 255.
        activation: ``"softmax"`` (default) or ``"sigmoid"``; a multi-label sigmoid output
            (N, L, *spatial) with L > 1 has one position per entry, so the masks are shaped
            like ``probs`` itself (:func:`is_multilabel`).

    Returns:
        bool tensor (N, *spatial) on the device of ``probs`` ((N, L, *spatial) for a
        multi-label output); all True when neither is given.

    Raises:
        TypeError: ``ignore_index`` is not an int (None, a float or a bool), or ``valid`` /
            ``ignore_mask`` have the wrong type or dtype.
        ValueError: shapes or devices differ from those of ``probs``, both masks are given, or
            ``ignore_index`` lies outside the range of ``ignore_mask``'s dtype (e.g. -1 with
            uint8, which would otherwise wrap around and ignore the 255 positions).
    """
    expected = _position_shape(probs, activation)
    check_ignore_index(ignore_index)
    if valid is not None and ignore_mask is not None:
        raise ValueError(
            "pass either valid (bool, True = use) or ignore_mask (ignore_index = ignored), not both"
        )
    if ignore_mask is not None:
        if not isinstance(ignore_mask, Tensor):
            raise TypeError(f"ignore_mask must be a torch.Tensor, got {type(ignore_mask).__name__}")
        if (
            ignore_mask.dtype == torch.bool
            or ignore_mask.is_floating_point()
            or (ignore_mask.is_complex())
        ):
            raise TypeError(
                "ignore_mask must be an integer tensor whose value ignore_index marks ignored "
                f"positions (use valid= for a bool mask), got dtype {ignore_mask.dtype}"
            )
        _check_position_tensor("ignore_mask", ignore_mask, probs, expected, activation)
        check_ignore_index(ignore_index, ignore_mask.dtype)
        return ignore_mask != ignore_index
    if valid is None:
        return probs.new_ones(expected, dtype=torch.bool)  # on the device of probs
    if not isinstance(valid, Tensor):
        raise TypeError(
            f"valid must be a torch.Tensor of dtype torch.bool, got {type(valid).__name__}"
        )
    if valid.dtype != torch.bool:
        raise TypeError(f"valid must be a torch.bool tensor, got dtype {valid.dtype}")
    _check_position_tensor("valid", valid, probs, expected, activation)
    return valid


def check_ignore_index(ignore_index: object, dtype: torch.dtype | None = None) -> int:
    """Check that ``ignore_index`` is an int that an integer ``dtype`` can hold; return it.

    Without ``dtype`` only the type is checked. With an integer ``dtype`` (that of the
    ``ignore_mask`` it is compared with), a value outside ``torch.iinfo(dtype)`` is refused:
    no element could equal it, and torch would compare after wrapping it around (-1 in
    uint8 is 255).

    Raises:
        TypeError: not an int (None, float, bool, str, ...).
        ValueError: outside the range of ``dtype``.

    Example:
        >>> import torch
        >>> check_ignore_index(255, torch.uint8)
        255
        >>> check_ignore_index(-1, torch.uint8)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: ignore_index=-1 is outside the range [0, 255] of ignore_mask's dtype...
    """
    if type(ignore_index) is not int and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, Integral)
    ):
        raise TypeError(
            "ignore_index must be an int, the value of ignore_mask that marks ignored "
            f"positions (default 255), got {type(ignore_index).__name__} {ignore_index!r}"
        )
    value = int(ignore_index)
    integer = dtype is not None and not (dtype.is_floating_point or dtype.is_complex)
    if integer and dtype != torch.bool:
        info = torch.iinfo(dtype)
        if not info.min <= value <= info.max:
            raise ValueError(
                f"ignore_index={value} is outside the range [{info.min}, {info.max}] of "
                f"ignore_mask's dtype {dtype}, so no position could equal it (torch would "
                "wrap it around); pass an ignore_index within that range or convert "
                "ignore_mask first, e.g. ignore_mask.long()"
            )
    return value


def _check_position_tensor(
    name: str, tensor: Tensor, probs: Tensor, expected: tuple[int, ...], activation: str
) -> None:
    if tuple(tensor.shape) != expected:
        if (
            not is_multilabel(probs, activation)
            and probs.dim() >= 3
            and tuple(tensor.shape) == tuple(probs.shape[:-1])
        ):
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)}, probs without its last dim: probs "
                f"{tuple(probs.shape)} looks channels-last. The class axis must be dim 1; "
                "use probs.movedim(-1, 1)"
            )
        where = (
            "one position per (sample, label) of the multi-label sigmoid probs"
            if is_multilabel(probs, activation)
            else "without the class dim 1"
        )
        raise ValueError(
            f"{name} must have shape {expected} (the shape of probs {tuple(probs.shape)} "
            f"{where}), got {tuple(tensor.shape)}"
        )
    if tensor.device != probs.device:
        raise ValueError(f"{name} must be on {probs.device} like probs, got {tensor.device}")


def sum_tolerance(dtype: torch.dtype) -> float:
    """How far from 1 a class-axis sum may be: 1e-3, or 6 machine epsilons for half types."""
    return max(1e-3, 6.0 * torch.finfo(dtype).eps)


# no double quotes in the hints: inductor pastes the message of torch._assert_async into C++
_SIGMOID_HINT = (
    "with activation='sigmoid', probs must hold sigmoid probabilities (finite, in [0, 1]); "
    "if these are logits pass from_logits=True to select_reliable or apply sigmoid "
    "first; validate=False skips this check"
)
_VALUES_HINT = (
    "probs must hold probabilities along dim 1 (finite, >= 0, summing to 1 within "
    "{tol:.3g}); if these are logits pass from_logits=True to select_reliable or apply "
    "softmax(dim=1) first; channels-last input needs probs.movedim(-1, 1); validate=False "
    "skips this check"
)


def probability_vectors_ok(probs: Tensor, valid: Tensor, *, all_valid: bool = False) -> Tensor:
    """0-dim bool tensor: every valid position of ``probs`` is a probability vector along
    dim 1 (entries >= 0, summing to 1 within ``sum_tolerance(probs.dtype)``; NaN or
    infinite entries fail). Computed on the device, no host synchronisation, no raising.

    ``all_valid``: promise that ``valid`` is all True (no ignored position), which allows a
    cheaper test: the row sums (one reduction over the class axis), their smallest and
    largest, and the smallest entry overall (a full reduction, cheaper than one over the
    class axis). Under torch.compile the class planes are summed one by one instead
    (:func:`pseudosel.kernels.planes.probability_vectors_ok`), fused into the selector's
    own pass over the probabilities.
    """
    # compiling: the check fused into the selector's pass over the planes
    if kernels.compiling() and planes.unrolls(probs):
        return planes.probability_vectors_ok(probs, valid)
    tol = sum_tolerance(probs.dtype)
    work = compute_dtype(probs.dtype)
    row_sum = probs.sum(1, dtype=work)  # half input summed in float32, as compiled
    if all_valid and row_sum.numel() > 0:
        lowest, highest = torch.aminmax(row_sum)
        return (probs.amin() >= 0) & ((lowest - 1).abs() <= tol) & ((highest - 1).abs() <= tol)
    ok_position = (probs.amin(1).to(work) >= 0) & ((row_sum - 1).abs() <= tol)
    return (ok_position | ~valid).all()


def probability_vectors_ok_on_host(probs: Tensor) -> bool:
    """:func:`probability_vectors_ok` with ``all_valid`` for eager CPU input, where the
    verdict is read on the host anyway: the row sums' smallest and largest and the smallest
    entry, three reductions read as Python numbers and compared there — a third of the ops
    of the tensor-valued test, which is what a small batch pays for (the same verdict:
    tests/test_validation.py). ``probs`` must have at least one position."""
    work = compute_dtype(probs.dtype)
    row_sum = probs.sum(1) if probs.dtype == work else probs.sum(1, dtype=work)
    lowest, highest = torch.aminmax(row_sum)
    tol = _tolerance_in(probs.dtype, work)
    # |x - 1| is exact in ``work`` near 1, and NaN compares False, as on the device; the
    # entries are read only when the sums pass, so they are finite then
    return (
        abs(lowest.item() - 1.0) <= tol
        and abs(highest.item() - 1.0) <= tol
        and _no_negative_entry(probs)
    )


#: same-width integers of the float dtypes whose integer minimum is the faster pass
_SIGN_AS_INT = {torch.float32: torch.int32, torch.float16: torch.int16,
                torch.bfloat16: torch.int16}  # fmt: skip
#: from how many entries the integer pass is taken (below, the view costs more than it saves)
INT_MINIMUM_FROM = 8192


def _no_negative_entry(probs: Tensor) -> bool:
    """Whether the smallest entry of ``probs`` — finite entries — is >= 0.

    A float whose sign bit is clear reads as a non-negative integer of its width, so the
    integers' minimum is >= 0 exactly when no entry is negative or −0.0: the same verdict
    as the floats' minimum but for −0.0 (which passes), asked of the floats when the
    integers' minimum is negative. For float32 and the half types from
    :data:`INT_MINIMUM_FROM` entries on a CPU, where the integer minimum is 1.5-2.4x faster
    (vector integer minima, no NaN to propagate: benchmarks/bench_value_check.py); 64-bit
    integers have no vector minimum on common CPUs, and float64 keeps the float pass.
    """
    as_int = _SIGN_AS_INT.get(probs.dtype)
    # a tensor with its negative bit set (a lazy negation, e.g. ``conj().imag``) has no
    # integer view
    if as_int is not None and probs.numel() >= INT_MINIMUM_FROM and not probs.is_neg():
        if probs.view(as_int).min().item() >= 0:
            return True
    return probs.min().item() >= 0


@functools.cache
def _tolerance_in(dtype: torch.dtype, work: torch.dtype) -> float:
    """``sum_tolerance(dtype)`` rounded to ``work``, as the device-side comparison sees it."""
    return torch.tensor(sum_tolerance(dtype), dtype=work).item()


def sigmoid_values_ok(probs: Tensor, valid: Tensor) -> Tensor:
    """0-dim bool tensor: every valid position of a sigmoid output (N, 1, *spatial) or
    (N, L, *spatial) holds a probability in [0, 1] (NaN fails). No host synchronisation."""
    values = probs if is_multilabel(probs, "sigmoid") else probs.squeeze(1)
    return (((values >= 0) & (values <= 1)) | ~valid).all()  # NaN compares False


def values_ok(
    probs: Tensor, valid: Tensor, *, activation: str = "softmax", all_valid: bool = False
) -> Tensor:
    """The value check of a selector's input as a 0-dim bool tensor (no raising):
    :func:`probability_vectors_ok` for ``activation="softmax"``, :func:`sigmoid_values_ok`
    for ``"sigmoid"``. :func:`pseudosel.compiled.compiled` computes it inside the graph
    and raises after it."""
    if activation == "sigmoid":
        return sigmoid_values_ok(probs, valid)
    return probability_vectors_ok(probs, valid, all_valid=all_valid)


def values_hint(probs: Tensor, activation: str = "softmax") -> str:
    """What a failed value check says: what ``probs`` must hold and how to fix it."""
    if activation == "sigmoid":
        return _SIGMOID_HINT
    return _VALUES_HINT.format(tol=sum_tolerance(probs.dtype))


def check_probability_values(probs: Tensor, valid: Tensor, *, all_valid: bool = False) -> None:
    """Check that every valid position of ``probs`` is a probability vector along dim 1.

    A position passes when all its entries are >= 0 and they sum to 1 within
    ``sum_tolerance(probs.dtype)``; NaN or infinite entries fail. Ignored positions are not
    checked. ``all_valid``: promise that ``valid`` is all True (see
    :func:`probability_vectors_ok`, which this raises on).

    Raises:
        ValueError: in CPU eager mode, naming the first offending position.
        RuntimeError: from the device-side assertion on other devices / under torch.compile.
    """
    if all_valid and kernels.eager_cpu(probs) and probs.numel() > 0:
        passed = probability_vectors_ok_on_host(probs)
    else:
        ok = probability_vectors_ok(probs, valid, all_valid=all_valid)
        passed = _passes(ok, _VALUES_HINT.format(tol=sum_tolerance(probs.dtype)))
    if not passed:
        tol = sum_tolerance(probs.dtype)
        hint = _VALUES_HINT.format(tol=tol)
        # CPU eager only: the per-position test again, to name the first failure
        _refuse_channels_last(probs, tol)
        work = compute_dtype(probs.dtype)
        row_sum, row_min = probs.sum(1, dtype=work), probs.amin(1).to(work)
        ok_position = (row_min >= 0) & ((row_sum - 1).abs() <= tol)
        _name_first_failure(
            ok_position,
            valid,
            hint,
            lambda where: f"sum {float(row_sum[where]):.6g}, minimum {float(row_min[where]):.6g}",
        )


def _refuse_channels_last(probs: Tensor, tol: float) -> None:
    """Raise the channels-last error when the rows along the last dim of a failing dense
    input are probability vectors (dim 1 is then a spatial axis): the logits hint would
    mislead there."""
    if probs.dim() < 3 or probs.numel() == 0:
        return
    work = compute_dtype(probs.dtype)
    rows = probs.sum(-1, dtype=work)
    if bool((probs.amin(-1) >= 0).all()) and bool(((rows - 1).abs() <= tol).all()):
        raise ValueError(
            f"probs of shape {tuple(probs.shape)} holds probability vectors along its last "
            "dim, not along dim 1: it looks channels-last. The class axis must be dim 1; use "
            "probs.movedim(-1, 1)"
        )


def _passes(ok: Tensor, hint: str) -> bool:
    """True when the check passed or was handed to the device: a device-side assertion
    (RuntimeError, no host sync) on other devices and under torch.compile; on eager CPU
    the verdict itself (False: the caller names the failure)."""
    # reading the verdict would synchronise a GPU and cannot be traced: assert on device
    if torch.compiler.is_compiling() or ok.device.type != "cpu":
        torch._assert_async(ok, hint)
        return True
    return bool(ok)


def _name_first_failure(
    ok_position: Tensor, valid: Tensor, hint: str, describe: Callable[[tuple[int, ...]], str]
) -> None:
    """Raise a ValueError naming the first valid position where ``ok_position`` fails,
    described by ``describe(where)`` (no failing position: the hint alone)."""
    failing = (valid & ~ok_position).nonzero()
    if failing.shape[0] == 0:
        raise ValueError(hint)
    where = tuple(int(i) for i in failing[0])
    raise ValueError(f"{hint}. First offending position {where}: {describe(where)}")


def check_sigmoid_values(probs: Tensor, valid: Tensor) -> None:
    """Check that every valid position of a sigmoid output holds a probability in [0, 1].

    ``probs`` is (N, 1, *spatial) (binary; ``valid`` (N, *spatial)) or (N, L, *spatial)
    (multi-label; ``valid`` of the same shape). NaN or infinite values fail; ignored
    positions are not checked. One fast pass over ``probs``. Then the two-class form
    (1 − p, p) is a probability vector, as :func:`check_probability_values` requires.

    Raises:
        ValueError: in CPU eager mode, naming the first offending position.
        RuntimeError: from the device-side assertion on other devices / under torch.compile.

    Example:
        >>> import torch
        >>> check_sigmoid_values(torch.tensor([[0.2], [1.0]]), torch.ones(2, dtype=torch.bool))
    """
    if not _passes(sigmoid_values_ok(probs, valid), _SIGMOID_HINT):
        values = probs if is_multilabel(probs, "sigmoid") else probs.squeeze(1)
        ok_position = (values >= 0) & (values <= 1)  # NaN compares False
        _name_first_failure(
            ok_position, valid, _SIGMOID_HINT, lambda where: f"{float(values[where]):.6g}"
        )


def check_labels(
    labels: Tensor,
    num_classes: int | None,
    used: Tensor,
    *,
    ignore_index: int | None = None,
    name: str = "target",
) -> None:
    """Check that the true labels ``labels`` lie in [0, ``num_classes``) wherever ``used``.

    ``used`` marks the positions whose label is counted (valid, and not ``ignore_index``
    when there is one); elsewhere any value is accepted. Without ``num_classes`` only
    negative labels are refused. A label out of range would otherwise count as a wrong
    pseudo-label.

    Raises:
        ValueError: in CPU eager mode, naming the first offending position and its label.
        RuntimeError: from the device-side assertion on other devices / under torch.compile.

    Example:
        >>> import torch
        >>> used = torch.tensor([True, True])
        >>> check_labels(torch.tensor([0, 7]), 2, used, ignore_index=255)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: target must hold classes in [0, 2) or ignore_index=255 ...: 7
    """
    upper = ", inf)" if num_classes is None else f", {num_classes})"
    unknown = (
        " (mark positions without a label with valid=False)"
        if ignore_index is None
        else f" or ignore_index={ignore_index} where the label is unknown"
    )
    hint = f"{name} must hold classes in [0{upper}{unknown}"
    in_range = labels >= 0
    if num_classes is not None:
        in_range &= labels < num_classes
    if not _passes((in_range | ~used).all(), hint):
        _name_first_failure(in_range, used, hint, lambda where: f"{int(labels[where])}")


def check_real(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """Check that ``value`` is a finite real number in [low, high] (or (low, high]); return it."""
    if type(value) is not float and (isinstance(value, bool) or not isinstance(value, Real)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    number = float(value)
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and number > high
    if not math.isfinite(number) or too_low or too_high:
        lower = "-inf" if low is None else f"{low:g}"
        upper = "inf" if high is None else f"{high:g}"
        bracket = "(" if low_open or low is None else "["
        closing = ")" if high is None else "]"
        raise ValueError(f"{name} must be in {bracket}{lower}, {upper}{closing}, got {value!r}")
    return number


def check_choice(name: str, value: object, choices: Collection[str]) -> str:
    """Check that ``value`` is one of the strings in ``choices``; return it."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def check_float_matrix(name: str, value: object, meaning: str) -> None:
    """``value`` must be a floating 2-D tensor; ``meaning`` names its axes for the message,
    e.g. ``"(K, Q) tensor of score rows"``.

    Example:
        >>> import torch
        >>> check_float_matrix("scores", torch.zeros(3), "(N, M) tensor")
        Traceback (most recent call last):
        ...
        TypeError: scores must be a floating (N, M) tensor, got torch.float32 tensor of shape (3,)
    """
    if isinstance(value, Tensor) and value.is_floating_point() and value.dim() == 2:
        return
    got = (
        f"{value.dtype} tensor of shape {tuple(value.shape)}"
        if isinstance(value, Tensor)
        else type(value).__name__
    )
    raise TypeError(f"{name} must be a floating {meaning}, got {got}")


def check_bool_mask(name: str, value: object, of: str, shape: tuple[int, ...]) -> None:
    """``value`` must be a bool tensor of ``shape``, the shape of the tensor named ``of``.

    Example:
        >>> import torch
        >>> check_bool_mask("valid", torch.ones(3, dtype=torch.bool), "labels", (2,))
        Traceback (most recent call last):
        ...
        ValueError: valid must have the shape of labels (2,), got (3,)
    """
    if not isinstance(value, Tensor) or value.dtype != torch.bool:
        got = value.dtype if isinstance(value, Tensor) else type(value).__name__
        raise TypeError(f"{name} must be a bool tensor, got {got}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(
            f"{name} must have the shape of {of} {tuple(shape)}, got {tuple(value.shape)}"
        )


def check_long(name: str, value: object) -> None:
    """``value`` must be a long (int64) tensor.

    Example:
        >>> import torch
        >>> check_long("labels", torch.zeros(2))
        Traceback (most recent call last):
        ...
        TypeError: labels must be a long tensor, got torch.float32
    """
    if not isinstance(value, Tensor) or value.dtype != torch.long:
        got = value.dtype if isinstance(value, Tensor) else type(value).__name__
        raise TypeError(f"{name} must be a long tensor, got {got}")
