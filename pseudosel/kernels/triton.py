"""Triton kernels for the GPU hot paths (``backend="triton"``): the feature pass over the
class planes, with the threshold selection and the value check fused into it, and CSL's
per-group passes (:func:`split_groups`).

One program reads a tile of positions × classes once and computes, for each position,

- the confidence c = max_k p_k and the label k* = arg-max (the lowest index on ties, and
  the first NaN where a row holds one: as ``probs.max(1)``);
- with ``check``: whether the position holds a probability vector (no NaN, every entry
  >= 0, the sum within ``validation.sum_tolerance`` of 1: as
  :func:`pseudosel.validation.probability_vectors_ok`), counted per program, so the
  verdict is one small reduction after the kernel and no host synchronisation;
- for CSL, the residual mass r = Σ_{k≠k*} p_k and the sums Σ d_k², Σ d_k of the scaled
  deviations d_k = (p_k − m) / r, m = r / (K − 1), turned into s by the formula of
  :func:`pseudosel.features.spread_from_sums` (the same two-pass arithmetic);
- for the threshold selector: mask = c >= τ (and valid), weight, score.

Up to :data:`ONE_CHUNK_CLASSES` classes the tile holds every class of its positions, and
every quantity above comes from one read of the class planes; beyond, the classes are
walked in chunks (max, then r, then the deviations: three walks over the same rows, the
later two from the cache). Dense input (N, K, *spatial) is tiled along the contiguous
positions of each sample, classification input (N, K) along its contiguous classes.

Arithmetic is in float32 for float16/bfloat16/float32 input and in float64 for float64
input (``validation.compute_dtype``); divisions round to nearest (``div_rn``), as torch's.
Confidence, labels and the threshold selection are bit-equal to the formulas; s and the
row sums differ from them by the order of summation only (tests/kernels/test_triton.py).

CSL's split (:func:`split_groups`) walks each group's points four times — second moments;
assignment and cluster sums; the reliable cluster's centred variance; z-scores and weights
— accumulating in float64 in a fixed order (one partial sum per program, then added up, no
atomics), with the per-group steps between the passes (the 2×2 eigen-problem, the choice of
the reliable cluster, the z-score constants) done by the formula's own torch functions.

The kernels are plain functions here, turned into Triton kernels on first use: compiled
(``triton.runtime.jit.JITFunction``) for CUDA tensors, or interpreted on the CPU
(``TRITON_INTERPRET=1``, triton's interpreter; for the tests) — both in one process, since
the decision is made per call, not when triton is imported. ``import pseudosel`` does not
import this module (``backend="triton"`` does, on first use), and this module imports
triton only where it is installed: without it, a call raises ``ImportError`` naming the
extra to install.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pseudosel.validation import compute_dtype, sum_tolerance

try:  # the kernels' own module names, as triton's code generator looks them up
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the triton extra is not installed
    triton = tl = None

# The reductions' combine functions, passed to tl.reduce: the kernels call no @triton.jit
# function of triton.language (tl.max, tl.sum, tl.zeros are such functions, compiled or
# interpreted as TRITON_INTERPRET was when triton was imported), so that one process runs
# them both ways; triton's interpreter recognises these combine functions.
_MAX = _MIN = _SUM = None
if tl is not None:
    _MAX, _MIN, _SUM = (
        tl.standard._elementwise_max,
        tl.standard._elementwise_min,
        tl.standard._sum_combine,
    )

__all__ = [
    "ONE_CHUNK_CLASSES",
    "available",
    "confidence_and_labels",
    "csl_features",
    "interpreting",
    "require",
    "split_groups",
    "threshold_selection",
    "unavailable_reason",
]

#: up to this many classes, one tile holds every class of its positions (one read)
ONE_CHUNK_CLASSES = 64
# elements per tile (positions × classes): 16 per thread at triton's default 4 warps
_TILE = 2048


def available() -> bool:
    """Whether triton can be imported."""
    return triton is not None


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET=1`` is set: CPU tensors then run in triton's interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def unavailable_reason(device: torch.device) -> str | None:
    """Why ``backend="triton"`` cannot run on tensors on ``device``, or None when it can."""
    if device.type != "cuda" and not (device.type == "cpu" and interpreting()):
        return (
            f'backend="triton" runs on CUDA tensors, got a tensor on {device} (on the CPU '
            "only under TRITON_INTERPRET=1, triton's interpreter, which is for tests); use "
            'backend="auto", "eager" or "compiled" there'
        )
    if triton is None:
        return (
            'backend="triton" needs triton (pip install "pseudosel[triton]"; triton ships '
            "wheels for Linux x86-64 and aarch64)"
        )
    return None


def require(device: torch.device) -> None:
    """Raise where :func:`unavailable_reason` has a reason: ``ValueError`` for the device,
    ``ImportError`` without triton."""
    reason = unavailable_reason(device)
    if reason is not None:
        raise (ImportError if "needs triton" in reason else ValueError)(reason)


# ------------------------------------------------------------------------------ the kernel


def _feature_pass(
    probs_ptr,
    valid_ptr,
    params_ptr,
    conf_ptr,
    label_ptr,
    s_ptr,
    weight_ptr,
    mask_ptr,
    score_ptr,
    bad_ptr,
    length,
    num_classes,
    stride_n,
    stride_k,
    stride_l,
    WORK: tl.constexpr,
    WIDE: tl.constexpr,
    HAS_VALID: tl.constexpr,
    CHECK: tl.constexpr,
    SPREAD: tl.constexpr,
    REFERENCE: tl.constexpr,
    SCALE: tl.constexpr,
    SELECT: tl.constexpr,
    ONE_CHUNK: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One tile: BLOCK_P positions of sample ``program_id(1)``, all their classes.

    params: float64 [τ, tolerance, g_scale]. Outputs are (N', L') row-major; ``bad`` holds
    one count per program of the (valid) positions that fail the value check.
    """
    pid_l = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_l = pid_l * BLOCK_P + tl.arange(0, BLOCK_P)
    in_range = offs_l < length
    base = pid_n.to(tl.int64) * stride_n + offs_l.to(tl.int64) * stride_l
    out = pid_n.to(tl.int64) * length + offs_l
    offs_k = tl.arange(0, BLOCK_K)
    zero_k = tl.full([BLOCK_P, BLOCK_K], 0, tl.int32)
    minus_inf = float("-inf")
    if ONE_CHUNK:
        # every class of the tile's positions in registers: one read
        kmask = offs_k < num_classes
        both = in_range[:, None] & kmask[None, :]
        ptrs = probs_ptr + base[:, None] + offs_k[None, :].to(tl.int64) * stride_k
        x = tl.load(ptrs, mask=both, other=0.0).to(WORK)
        k2 = zero_k + offs_k[None, :]
        isnan = (x != x) & both
        first_nan = tl.reduce(tl.where(isnan, k2, num_classes), 1, _MIN)
        xm = tl.where(kmask[None, :] & ~isnan, x, minus_inf)
        conf = tl.reduce(xm, 1, _MAX)
        label = tl.reduce(tl.where(xm == conf[:, None], k2, num_classes), 1, _MIN)
        row_sum = tl.reduce(x, 1, _SUM)  # padded entries loaded as 0
        row_min = tl.reduce(tl.where(kmask[None, :] & ~isnan, x, float("inf")), 1, _MIN)
    else:
        # classes in chunks: the running maximum takes over on a strictly larger chunk
        # maximum, so the lowest index wins ties across chunks too
        conf = tl.full([BLOCK_P], minus_inf, WORK)
        label = tl.full([BLOCK_P], 0, tl.int32)
        first_nan = tl.full([BLOCK_P], 0, tl.int32) + num_classes
        row_sum = tl.full([BLOCK_P], 0, WORK)
        row_min = tl.full([BLOCK_P], float("inf"), WORK)
        for start in range(0, num_classes, BLOCK_K):
            kk = start + offs_k
            kmask = kk < num_classes
            both = in_range[:, None] & kmask[None, :]
            ptrs = probs_ptr + base[:, None] + kk[None, :].to(tl.int64) * stride_k
            x = tl.load(ptrs, mask=both, other=0.0).to(WORK)
            k2 = zero_k + kk[None, :]
            isnan = (x != x) & both
            first_nan = tl.minimum(
                first_nan,
                tl.reduce(tl.where(isnan, k2, num_classes), 1, _MIN),
            )
            xm = tl.where(kmask[None, :] & ~isnan, x, minus_inf)
            chunk_max = tl.reduce(xm, 1, _MAX)
            chunk_arg = tl.reduce(tl.where(xm == chunk_max[:, None], k2, num_classes), 1, _MIN)
            take = chunk_max > conf
            conf = tl.where(take, chunk_max, conf)
            label = tl.where(take, chunk_arg, label)
            row_sum += tl.reduce(x, 1, _SUM)
            row_min = tl.minimum(
                row_min,
                tl.reduce(tl.where(kmask[None, :] & ~isnan, x, float("inf")), 1, _MIN),
            )
    nan_row = first_nan < num_classes
    conf = tl.where(nan_row, float("nan"), conf)
    label = tl.where(nan_row, first_nan, label)
    tl.store(conf_ptr + out, conf, mask=in_range)
    tl.store(label_ptr + out, label.to(tl.int64), mask=in_range)
    if HAS_VALID:
        valid = tl.load(valid_ptr + out, mask=in_range, other=0) != 0
    else:
        valid = in_range
    if CHECK:
        tolerance = tl.load(params_ptr + 1).to(WORK)
        ok = (~nan_row) & (row_min >= 0) & (tl.abs(row_sum - 1.0) <= tolerance)
        bad = valid & in_range & ~ok
        program = pid_n * tl.num_programs(0) + pid_l
        tl.store(bad_ptr + program, tl.reduce(bad.to(tl.int32), 0, _SUM))
    if SELECT:
        tau = tl.load(params_ptr).to(WORK)
        chosen = (conf >= tau) & valid
        tl.store(mask_ptr + out, chosen.to(tl.uint8), mask=in_range)
        tl.store(weight_ptr + out, chosen.to(WORK), mask=in_range)
        if HAS_VALID:
            tl.store(score_ptr + out, tl.where(valid, conf, 0.0), mask=in_range)
    if SPREAD:
        km1 = (num_classes - 1).to(WORK)
        # r: the residual mass, summed over the classes other than the arg-max
        if ONE_CHUNK:
            residual = (k2 != label[:, None]) & kmask[None, :]
            r = tl.reduce(tl.where(residual, x, 0.0), 1, _SUM)
        else:
            r = tl.full([BLOCK_P], 0, WORK)
            for start in range(0, num_classes, BLOCK_K):
                kk = start + offs_k
                kmask = kk < num_classes
                both = in_range[:, None] & kmask[None, :]
                ptrs = probs_ptr + base[:, None] + kk[None, :].to(tl.int64) * stride_k
                x = tl.load(ptrs, mask=both, other=0.0).to(WORK)
                residual = ((zero_k + kk[None, :]) != label[:, None]) & kmask[None, :]
                r += tl.reduce(tl.where(residual, x, 0.0), 1, _SUM)
        tiny = tl.full([BLOCK_P], 1.1754943508222875e-38, WORK)
        if WIDE:
            tiny = tl.full([BLOCK_P], 2.2250738585072014e-308, WORK)
            mean = r / km1
            inverse = 1.0 / tl.maximum(r, tiny)
        else:
            mean = tl.math.div_rn(r, km1)
            inverse = tl.math.div_rn(tl.full([BLOCK_P], 1.0, WORK), tl.maximum(r, tiny))
        # the scaled deviations d_k = (p_k − m) / r over the residual classes
        if ONE_CHUNK:
            d = tl.where(residual, (x - mean[:, None]) * inverse[:, None], 0.0)
            squares = tl.reduce(d * d, 1, _SUM)
            drift = tl.reduce(d, 1, _SUM)
        else:
            squares = tl.full([BLOCK_P], 0, WORK)
            drift = tl.full([BLOCK_P], 0, WORK)
            for start in range(0, num_classes, BLOCK_K):
                kk = start + offs_k
                kmask = kk < num_classes
                both = in_range[:, None] & kmask[None, :]
                ptrs = probs_ptr + base[:, None] + kk[None, :].to(tl.int64) * stride_k
                x = tl.load(ptrs, mask=both, other=0.0).to(WORK)
                residual = ((zero_k + kk[None, :]) != label[:, None]) & kmask[None, :]
                d = tl.where(residual, (x - mean[:, None]) * inverse[:, None], 0.0)
                squares += tl.reduce(d * d, 1, _SUM)
                drift += tl.reduce(d, 1, _SUM)
        # pseudosel.features.spread_from_sums
        s = squares * r * (km1 * 0.5)
        s = tl.minimum(s, r * ((km1 - 1.0) * 0.5))
        s = tl.where(num_classes == 2, 0.0, s)
        if REFERENCE:
            if WIDE:
                alpha = 1.0 / (2.0 * km1)
            else:
                alpha = tl.math.div_rn(tl.full([BLOCK_P], 1.0, WORK), 2.0 * km1)
            s = s + (drift * r) * alpha
            s = s + mean * 0.5
        if SCALE:
            s = s * tl.load(params_ptr + 2).to(WORK)
        tl.store(s_ptr + out, s, mask=in_range)


def _group_pass(
    c_ptr,
    s_ptr,
    valid_ptr,
    coef_ptr,
    second_ptr,
    weight_ptr,
    score_ptr,
    part_ptr,
    size,
    STAGE: tl.constexpr,
    HAS_VALID: tl.constexpr,
    WORK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One block of one group of CSL's split (:func:`split_groups`), by ``STAGE``:

    1. the second moments Σc², Σcs, Σs² (float64, from exact products);
    2. the assignment to the second cluster (stored as 0/1 bytes) and the sums n₂, Σc and Σs
       of each cluster (float64);
    3. the reliable cluster's centred squares Σ(c − μ_c)², Σ(s − μ_s)² (float64);
    4. the z-scores, weights and scores.

    Reductions write one partial sum per program into ``part`` (G, blocks, 5); the caller
    adds them up (a fixed order: no atomics). ``coef`` holds 8 per-group constants.
    """
    pid_b = tl.program_id(0)
    group = tl.program_id(1).to(tl.int64)
    offs = pid_b * BLOCK + tl.arange(0, BLOCK)
    in_range = offs < size
    where = group * size + offs
    c = tl.load(c_ptr + where, mask=in_range, other=0.0)
    s = tl.load(s_ptr + where, mask=in_range, other=0.0)
    if HAS_VALID:
        ok = (tl.load(valid_ptr + where, mask=in_range, other=0) != 0) & in_range
        c = tl.where(ok, c, 0.0)  # ignored positions at (0, 0), dropping any NaN there
        s = tl.where(ok, s, 0.0)
    else:
        ok = in_range
    okf = ok.to(WORK)
    part = part_ptr + (group * tl.num_programs(0) + pid_b) * 5
    coef = coef_ptr + group * 8
    if STAGE == 1:
        cw = c.to(tl.float64)
        sw = s.to(tl.float64)
        tl.store(part, tl.reduce(cw * cw, 0, _SUM))
        tl.store(part + 1, tl.reduce(cw * sw, 0, _SUM))
        tl.store(part + 2, tl.reduce(sw * sw, 0, _SUM))
    if STAGE == 2:
        along_first = tl.abs(c * tl.load(coef) + s * tl.load(coef + 1))
        along_second = tl.abs(s * tl.load(coef + 2) + c * tl.load(coef + 3))
        second = (along_second - along_first > 0).to(WORK) * tl.load(coef + 4) * okf
        first = okf - second
        tl.store(second_ptr + where, second.to(tl.uint8), mask=in_range)
        tl.store(part, tl.reduce(second.to(tl.float64), 0, _SUM))
        tl.store(part + 1, tl.reduce((c * first).to(tl.float64), 0, _SUM))
        tl.store(part + 2, tl.reduce((s * first).to(tl.float64), 0, _SUM))
        tl.store(part + 3, tl.reduce((c * second).to(tl.float64), 0, _SUM))
        tl.store(part + 4, tl.reduce((s * second).to(tl.float64), 0, _SUM))
    if STAGE == 3:
        second = tl.load(second_ptr + where, mask=in_range, other=0).to(WORK)
        first = okf - second
        member = first + (second - first) * tl.load(coef)
        dc = c - tl.load(coef + 1)
        ds = s - tl.load(coef + 2)
        tl.store(part, tl.reduce((dc * dc * member).to(tl.float64), 0, _SUM))
        tl.store(part + 1, tl.reduce((ds * ds * member).to(tl.float64), 0, _SUM))
    if STAGE == 4:
        z_c = (c - tl.load(coef)) * tl.load(coef + 2)  # > 0: more confident than the mean
        z_s = (s - tl.load(coef + 1)) * tl.load(coef + 3)  # > 0: less spread than the mean
        best = tl.maximum(z_c, z_s)
        trusted = (best > 0).to(WORK)
        distance = z_c * z_c + z_s * z_s
        offset = tl.where(distance > 0, tl.load(coef + 4), 0.0)
        falloff = tl.exp((distance + offset) * tl.load(coef + 5))
        # below 1 wherever z ≠ 0 also where exp is not correctly rounded (GPU exp)
        falloff = tl.where(distance > 0, tl.minimum(falloff, tl.load(coef + 6)), falloff)
        weight = tl.maximum(falloff, trusted)
        score = tl.maximum(best, 0.0) + tl.sqrt(distance) * (trusted - 1.0)
        if HAS_VALID:
            weight = weight * okf
            score = score * okf
        tl.store(weight_ptr + where, weight, mask=in_range)
        tl.store(score_ptr + where, score, mask=in_range)


# ------------------------------------------------------------------------------ launching

_KERNELS: dict[tuple[str, bool], Any] = {}
_PARAMS: dict[tuple[str, int | None, float, float, float], Tensor] = {}


def _kernel(function: Callable[..., Any], interpret: bool) -> Any:
    """``function`` as a Triton kernel: interpreted (CPU tensors) or compiled (CUDA)."""
    key = (function.__name__, interpret)
    if key not in _KERNELS:
        if interpret:
            from triton.runtime.interpreter import InterpretedFunction

            _KERNELS[key] = InterpretedFunction(function)
        else:
            _KERNELS[key] = triton.runtime.jit.JITFunction(function)
    return _KERNELS[key]


def _params(device: torch.device, tau: float, tolerance: float, g_scale: float) -> Tensor:
    """[τ, tolerance, g_scale] as a float64 tensor on ``device``, made once per value set
    (filled on the device: no host-to-device copy, so CUDA-graph capture can replay it)."""
    key = (device.type, device.index, tau, tolerance, g_scale)
    if key not in _PARAMS:
        _PARAMS[key] = torch.stack(
            [torch.full((), value, dtype=torch.float64, device=device) for value in key[2:]]
        )
    return _PARAMS[key]


class _Layout:
    """How the kernel walks ``probs``: (N', K, L') with strides, outputs (N', L')."""

    def __init__(self, probs: Tensor):
        n, k = probs.shape[:2]
        spatial = math.prod(probs.shape[2:])
        if probs.dim() == 2 or spatial == 1:
            # classification: one "sample" of N positions, classes contiguous
            flat = probs.reshape(n, k)
            self.samples, self.length = 1, n
            self.strides = (0, flat.stride(1), flat.stride(0))
        else:
            flat = probs.reshape(n, k, spatial)
            self.samples, self.length = n, spatial
            self.strides = (flat.stride(0), flat.stride(1), flat.stride(2))
        self.flat = flat
        self.num_classes = k
        chunk = min(triton.next_power_of_2(k), ONE_CHUNK_CLASSES)
        self.one_chunk = k <= ONE_CHUNK_CLASSES
        self.block_k = chunk if self.one_chunk else (128 if self.strides[1] == 1 else 32)
        self.block_p = max(16, min(_TILE // self.block_k, triton.next_power_of_2(self.length)))
        self.grid = (triton.cdiv(self.length, self.block_p), self.samples)


def _run(
    probs: Tensor,
    valid: Tensor | None,
    *,
    check: bool,
    spread: bool = False,
    residual: str = "reference",
    g_scale: float = 1.0,
    tau: float | None = None,
) -> dict[str, Tensor]:
    """Launch the feature pass; the outputs (shaped (N, *spatial)) by name."""
    require(probs.device)
    if probs.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"probs must be a float tensor, got {probs.dtype}")
    layout = _Layout(probs)
    work = compute_dtype(probs.dtype)
    shape = (probs.shape[0], *probs.shape[2:])
    device = probs.device
    conf = torch.empty(shape, dtype=work, device=device)
    outputs = {"confidence": conf, "labels": torch.empty(shape, dtype=torch.long, device=device)}
    select, has_valid = tau is not None, valid is not None
    if spread:
        outputs["s"] = torch.empty(shape, dtype=work, device=device)
    if select:
        outputs["mask"] = torch.empty(shape, dtype=torch.uint8, device=device)
        outputs["weight"] = torch.empty(shape, dtype=work, device=device)
        outputs["score"] = torch.empty(shape, dtype=work, device=device) if has_valid else conf
    programs = layout.grid[0] * layout.grid[1]
    bad = torch.zeros(max(programs, 1), dtype=torch.int32, device=device)
    if programs > 0:
        valid_bytes = valid.reshape(-1).contiguous().view(torch.uint8) if has_valid else conf
        params = _params(device, float(tau or 0.0), sum_tolerance(probs.dtype), float(g_scale))
        kernel = _kernel(_feature_pass, interpret=device.type == "cpu")
        kernel[layout.grid](
            layout.flat,
            valid_bytes,
            params,
            conf,
            outputs["labels"],
            outputs.get("s", conf),
            outputs.get("weight", conf),
            outputs.get("mask", conf),
            outputs.get("score", conf),
            bad,
            layout.length,
            layout.num_classes,
            *layout.strides,
            WORK=tl.float64 if work == torch.float64 else tl.float32,
            WIDE=work == torch.float64,
            HAS_VALID=has_valid,
            CHECK=check,
            SPREAD=spread,
            REFERENCE=residual == "reference",
            SCALE=g_scale != 1.0,
            SELECT=select,
            ONE_CHUNK=layout.one_chunk,
            BLOCK_P=layout.block_p,
            BLOCK_K=layout.block_k,
        )
    if select:
        outputs["mask"] = outputs["mask"].view(torch.bool)
    if check:
        outputs["verdict"] = (bad == 0).all()
    return outputs


def confidence_and_labels(probs: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`pseudosel.features.confidence_and_labels` as a Triton kernel.

    Args:
        probs: (N, K, *spatial) float tensor on a CUDA device (or on the CPU under
            ``TRITON_INTERPRET=1``).

    Returns:
        ``(confidence, labels)``: (N, *spatial), the compute dtype and int64.
    """
    outputs = _run(probs, None, check=False)
    return outputs["confidence"], outputs["labels"]


def csl_features(
    probs: Tensor,
    residual: str = "reference",
    g_scale: float = 1.0,
    *,
    valid: Tensor | None = None,
    check: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """:func:`pseudosel.features.csl_features` as one Triton pass, with the value check.

    Args:
        probs: (N, K, *spatial) probabilities, K >= 2 (CUDA; CPU under TRITON_INTERPRET=1).
        residual: ``"reference"`` or ``"theory"`` (checked by the caller).
        g_scale: the multiplier on s.
        valid: bool (N, *spatial) or None; only the value check reads it.
        check: compute the value check's verdict.

    Returns:
        ``(c, s, labels, verdict)``: verdict is a 0-dim bool tensor (every valid position
        holds a probability vector), or None without ``check``.
    """
    outputs = _run(
        probs, valid if check else None, check=check, spread=True, residual=residual,
        g_scale=g_scale,
    )  # fmt: skip
    return outputs["confidence"], outputs["s"], outputs["labels"], outputs.get("verdict")


def threshold_selection(
    probs: Tensor, tau: float, valid: Tensor | None, *, check: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """FixMatch's selection in one Triton pass: the fields of
    :func:`pseudosel.functional.threshold` and the value check.

    Args:
        probs: (N, K, *spatial) probabilities (CUDA; CPU under TRITON_INTERPRET=1).
        tau: the threshold.
        valid: bool (N, *spatial), or None when every position is valid.
        check: compute the value check's verdict.

    Returns:
        ``(labels, weight, mask, score, verdict)``: mask = (max p >= τ) & valid, weight the
        mask as 0/1, score the confidence (0 at ignored positions); verdict as in
        :func:`csl_features`.
    """
    outputs = _run(probs, valid, check=check, tau=float(tau))
    return (
        outputs["labels"],
        outputs["weight"],
        outputs["mask"],
        outputs["score"],
        outputs.get("verdict"),
    )


def split_groups(
    c: Tensor,
    s: Tensor,
    valid: Tensor,
    *,
    axes_of: Callable[[Tensor], Any],
    rank_one: float | None,
    alpha: float,
    cluster_rule: str,
    min_var: float,
    eps: float,
    all_valid: bool,
) -> Any:
    """:func:`pseudosel.functional.csl.split_groups` with its four passes over the positions
    as Triton kernels (moments; assignment and cluster sums; the reliable cluster's centred
    variance; z-scores and weights) and its per-group steps between them as the formula's
    own torch functions (:mod:`pseudosel.functional.separation`). Sums accumulate in
    float64 in a fixed order (a partial sum per program, then added up).

    Args:
        c: (G, n) confidences, float32 or float64 (CUDA; CPU under TRITON_INTERPRET=1).
        s: (G, n) residual spreads, the dtype of ``c``.
        valid: (G, n) bool.
        axes_of: the directions from the (G, 2, 2) moments (the axes solver's).
        rank_one: the rank-one guard's λ₂/λ₁ ratio, or None.
        alpha: the fall-off's width.
        cluster_rule: how the reliable cluster is chosen.
        min_var: floor on the reliable cluster's variances.
        eps: added to the variances.
        all_valid: promise that ``valid`` is all True (its loads are skipped).

    Returns:
        :class:`~pseudosel.functional.separation.GroupSplit`; the trusted set is the
        formula's except where a point and a mean are within rounding of each other.
    """
    from pseudosel.functional.separation import GroupSplit, reliable_cluster, z_score_scales

    require(c.device)
    dtype, acc, device = c.dtype, torch.float64, c.device
    groups, size = c.shape
    c, s = c.contiguous(), s.contiguous()
    block = 1024
    blocks = triton.cdiv(size, block)
    grid = (blocks, groups)
    kernel = _kernel(_group_pass, interpret=device.type == "cpu")
    valid_bytes = c if all_valid else valid.contiguous().view(torch.uint8)
    part = torch.zeros(groups, blocks, 5, dtype=acc, device=device)
    second = torch.empty(groups, size, dtype=torch.uint8, device=device)
    weight = torch.empty(groups, size, dtype=dtype, device=device)
    score = torch.empty_like(weight)
    work = tl.float64 if dtype == torch.float64 else tl.float32

    def launch(stage: int, coef: Tensor) -> Tensor:
        kernel[grid](
            c, s, valid_bytes, coef.contiguous(), second, weight, score, part, size,
            STAGE=stage, HAS_VALID=not all_valid, WORK=work, BLOCK=block,
        )  # fmt: skip
        return part.sum(1)

    def constants(*columns: Tensor) -> Tensor:
        table = torch.zeros(groups, 8, dtype=dtype, device=device)
        if columns:
            table[:, : len(columns)] = torch.stack([column.to(dtype) for column in columns], -1)
        return table

    # 1. the directions
    m11, m12, m22 = launch(1, constants())[:, :3].unbind(-1)
    moments = torch.stack((torch.stack((m11, m12), -1), torch.stack((m12, m22), -1)), -2)
    axes = axes_of(moments)
    if all_valid:
        count = torch.full((groups,), size, dtype=torch.long, device=device)
    else:
        count = valid.sum(-1)
    degenerate = count <= 1
    if rank_one is not None:
        degenerate = degenerate | (axes.lam2 <= rank_one * axes.lam1)
    root1, root2 = axes.lam1.sqrt(), axes.lam2.sqrt()
    # 2. assignment and cluster sums
    n2, sum_c1, sum_s1, sum_c2, sum_s2 = launch(
        2,
        constants(
            axes.cos * root2, axes.sin * root2, axes.cos * root1, -axes.sin * root1,
            (~degenerate).to(acc),
        ),
    ).unbind(-1)  # fmt: skip
    sizes = torch.stack((count.to(acc) - n2, n2), -1)
    cluster_sums = torch.stack(
        (torch.stack((sum_c1, sum_s1), -1), torch.stack((sum_c2, sum_s2), -1)), 1
    )
    reliable_is_second, center, n_reliable = reliable_cluster(
        sizes, cluster_sums, cluster_rule, eps
    )
    # 3. the reliable cluster's centred variance
    squares = launch(3, constants(reliable_is_second.to(acc), center[:, 0], center[:, 1]))
    squares = squares[:, :2]
    variance = torch.where(
        n_reliable[:, None] > 1, squares / (n_reliable - 1).clamp_min(1)[:, None], 0.0
    )
    low_c, high_s, scale_c, scale_s = z_score_scales(center, variance, min_var, eps, dtype)
    # 4. z-scores, weights, scores
    finfo = torch.finfo(dtype)
    fill = torch.ones(groups, dtype=acc, device=device)
    launch(
        4,
        constants(
            low_c, high_s, scale_c, scale_s, fill * (2 * alpha * finfo.eps), fill * (-1.0 / alpha),
            fill * (1.0 - finfo.eps / 2),
        ),
    )  # fmt: skip
    return GroupSplit(
        weight, weight == 1, score, second.view(torch.bool), reliable_is_second, center.to(dtype)
    )
