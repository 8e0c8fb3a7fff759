"""``pseudosel compare``: which selector keeps more right and fewer wrong pseudo-labels?

Reads a predictions file — ``.npz`` (loaded without pickles) or ``.pt`` (loaded with
``weights_only=True``) holding ``probs`` or ``logits`` (N, K[, H, W]), ``labels`` (the true
labels, ``ignore_index`` where unknown) and optionally ``valid`` (bool) or ``ignore_mask``
(integers, ``ignore_index`` = ignored) — streams it in batches of whole samples (memory
bounded by the batch, and CSL's groups stay whole images), runs every selector on every
batch and reports coverage, precision, weighted precision, recall, AUROC and mean weight,
plus a threshold sweep, a reliability diagram and CSL's feature space.

Every batch is checked as it is read: ``probs`` must be finite, in [0, 1] and sum to 1 along
dim 1 at the valid positions; ``logits`` (or ``probs`` read with ``from_logits=True``) must be
finite there. A file that fails raises ``ValueError`` naming the file, the key and the first
offending sample; when the rows look like logits it suggests ``--from-logits``.

Stateful selectors (FlexMatch, FreeMatch, SoftMatch, CorrMatch, Adsh) run in training mode
over the batches in file order, as during training. Started from fresh state and measured on one
pass they would report their cold start (FlexMatch keeps everything while no sample has been
recorded; an EMA started at 1/K keeps everything for thousands of batches), so they first
make ``passes - 1`` warm-up passes over the file that only advance their state, and the last
pass is the one measured (default ``passes=3``; the report and the table say so). During
the warm-up an EMA's momentum is the cumulative average's, ``1 - 1/step`` (capped at the
selector's own), so the state reaches the file's average statistics in one pass; the
measured pass uses the selector's momentum. Stateless selectors are measured on one pass.
Classification CSL draws one boundary per batch.

``precision_target`` (experimental) needs held-out labels: it takes them from the file by
two-fold cross-fitting. During the first warm-up pass the samples with an even index feed
one selector's held-out window and those with an odd index another's; each calibrates once,
and each sample is measured with the selector that did not see its label — so it needs
``passes >= 2``. Its row is what the certified threshold achieves on data exchangeable with
its held-out half (same file, same model).
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import pseudosel
from pseudosel.metrics import SelectionStats
from pseudosel.validation import check_ignore_index, sum_tolerance

__all__ = [
    "PredictionFile",
    "compare",
    "feature_space_sample",
    "make_selector",
    "parse_selector",
    "table",
]

DEFAULT_SELECTORS = ["threshold", "threshold:0.9", "flexmatch", "freematch", "softmatch", "csl"]
SELECTOR_NAMES = (
    "threshold",
    "csl",
    "csl_max_margin",
    "entropy_split",
    "flexmatch",
    "freematch",
    "softmatch",
    "corrmatch",
    "adsh",
    "precision_target",
)
#: selectors whose state (thresholds, class counts, running means) evolves over the batches
STATEFUL_SELECTORS = (
    "flexmatch",
    "freematch",
    "softmatch",
    "corrmatch",
    "adsh",
    "precision_target",
)
#: largest held-out window of precision_target (per fold; a dense file keeps its last pixels)
HELDOUT_WINDOW = 1 << 20
#: passes over the file for stateful selectors: the first ``DEFAULT_PASSES - 1`` warm the
#: state up, the last one is measured
DEFAULT_PASSES = 3
SWEEP_BINS = 1000
RELIABILITY_BINS = 15
SCATTER_POINTS = 4000


class _NpyMember:
    """One array of an .npz, read row range by row range (no pickles, no full load)."""

    def __init__(self, archive: zipfile.ZipFile, name: str) -> None:
        self.handle = archive.open(name)
        version = np.lib.format.read_magic(self.handle)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(self.handle)
        else:
            header = np.lib.format.read_array_header_2_0(self.handle)
        self.shape, fortran, self.dtype = header
        if self.dtype.hasobject:
            raise ValueError(
                f"{name[:-4]!r} holds Python objects (a pickle); refused — save plain numeric "
                "arrays"
            )
        if fortran and len(self.shape) > 1:
            raise ValueError(f"{name[:-4]!r} is stored in Fortran order; save it C-contiguous")
        self.offset = self.handle.tell()
        self.row_bytes = self.dtype.itemsize * math.prod(self.shape[1:])

    def rows(self, start: int, stop: int) -> np.ndarray:
        self.handle.seek(self.offset + start * self.row_bytes)
        data = self.handle.read((stop - start) * self.row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape((stop - start, *self.shape[1:]))


class PredictionFile:
    """A predictions file opened for streaming; raises ``ValueError`` naming what is wrong.

    ``from_logits=True`` reads the predictions as logits (softmax over dim 1) whatever their
    key; a ``logits`` key is always read so.

    Attributes:
        size: number of samples N; shape: (N, K, *spatial) of the predictions;
        num_classes: K; from_logits: whether the predictions are read as logits.
    """

    def __init__(
        self, path: str | Path, *, ignore_index: int = 255, from_logits: bool = False
    ) -> None:
        self.path = Path(path)
        self.ignore_index = check_ignore_index(ignore_index)
        if not isinstance(from_logits, bool):
            raise TypeError(f"from_logits must be a bool, got {type(from_logits).__name__}")
        self._force_logits = from_logits
        if not self.path.exists():
            raise ValueError(f"predictions file {self.path} does not exist")
        suffix = self.path.suffix.lower()
        self._arrays: dict[str, _NpyMember] | dict[str, Tensor]
        if suffix == ".npz":
            self._arrays = self._open_npz()
        elif suffix == ".pt":
            self._arrays = self._open_pt()
        else:
            raise ValueError(f"predictions file must be .npz or .pt, got {self.path.name!r}")
        self._check()

    def _open_npz(self) -> dict[str, _NpyMember]:
        try:
            archive = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile as error:
            raise ValueError(f"{self.path} is not a valid .npz file: {error}") from error
        self._archive = archive
        return {
            name[:-4]: _NpyMember(archive, name)
            for name in archive.namelist()
            if name.endswith(".npy")
        }

    def _open_pt(self) -> dict[str, Tensor]:
        try:
            content = torch.load(self.path, weights_only=True, mmap=True, map_location="cpu")
        except Exception as error:  # weights_only refuses arbitrary objects here
            raise ValueError(
                f"{self.path} could not be loaded with weights_only=True (only tensors are "
                f"accepted; pickled objects are refused): {error}"
            ) from error
        if not isinstance(content, dict) or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in content.items()
        ):
            raise ValueError(f"{self.path} must hold a dict of named tensors")
        return content

    def _shape(self, key: str) -> tuple[int, ...]:
        value = self._arrays[key]
        return tuple(value.shape)

    def _dtype(self, key: str) -> torch.dtype:
        value = self._arrays[key]
        if isinstance(value, Tensor):
            return value.dtype
        try:
            return torch.from_numpy(np.empty(0, dtype=value.dtype)).dtype
        except TypeError as error:
            raise ValueError(
                f"{self.path.name}: {key!r} has dtype {value.dtype}, which torch cannot read"
            ) from error

    def _check(self) -> None:
        keys = set(self._arrays)
        present = [k for k in ("probs", "logits") if k in keys]
        if len(present) != 1:
            raise ValueError(
                f"{self.path.name} must hold exactly one of 'probs' or 'logits' (N, K[, H, W]); "
                f"it holds {sorted(keys) or 'nothing'}"
            )
        self.key = present[0]
        self.from_logits = self.key == "logits" or self._force_logits
        if "labels" not in keys:
            raise ValueError(
                f"{self.path.name} has no 'labels' (the true labels); it holds {sorted(keys)}"
            )
        if "valid" in keys and "ignore_mask" in keys:
            raise ValueError(f"{self.path.name} holds both 'valid' and 'ignore_mask'; keep one")
        self.mask_key = (
            "valid" if "valid" in keys else "ignore_mask" if "ignore_mask" in keys else None
        )
        shape = self._shape(self.key)
        if len(shape) < 2 or shape[1] < 2:
            raise ValueError(
                f"{self.key!r} must have shape (N, K[, H, W]) with K >= 2, got {shape}"
            )
        if shape[0] == 0:
            raise ValueError(f"{self.path.name} is empty: {self.key!r} has shape {shape}")
        self.shape = shape
        self.size, self.num_classes = shape[0], shape[1]
        positions = (shape[0], *shape[2:])
        for key in ("labels", self.mask_key):
            if key is not None and self._shape(key) != positions:
                raise ValueError(
                    f"{key!r} must have shape {positions} (that of {self.key!r} {shape} without "
                    f"dim 1), got {self._shape(key)}"
                )
        if self.mask_key == "ignore_mask":
            mask_dtype = self._dtype("ignore_mask")
            if mask_dtype == torch.bool or mask_dtype.is_floating_point or mask_dtype.is_complex:
                raise ValueError(
                    f"{self.path.name}: 'ignore_mask' must hold integers (ignore_index="
                    f"{self.ignore_index} marks ignored positions), got dtype {mask_dtype}; "
                    "save a bool mask under 'valid' instead"
                )
            info = torch.iinfo(mask_dtype)
            if not info.min <= self.ignore_index <= info.max:
                raise ValueError(
                    f"{self.path.name}: ignore_index={self.ignore_index} (--ignore-index) is "
                    f"outside the range [{info.min}, {info.max}] of 'ignore_mask' (dtype "
                    f"{mask_dtype}), so no position could equal it; pass an ignore_index in "
                    "that range, or save ignore_mask as int64"
                )

    def _rows(self, key: str, start: int, stop: int) -> Tensor:
        value = self._arrays[key]
        if isinstance(value, Tensor):
            return value[start:stop].clone()
        return torch.from_numpy(value.rows(start, stop).copy())

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """(probs float32, labels long, valid bool or None) for consecutive sample ranges."""
        for start in range(0, self.size, batch_size):
            stop = min(start + batch_size, self.size)
            raw = self._rows(self.key, start, stop)
            labels = self._rows("labels", start, stop).long()
            valid = None
            if self.mask_key == "valid":
                valid = self._rows("valid", start, stop).bool()
            elif self.mask_key == "ignore_mask":
                valid = self._rows("ignore_mask", start, stop) != self.ignore_index
            probs = raw.float()
            if self.from_logits:
                self._check_logits(probs, valid, start)
                probs = probs.softmax(1)
            else:
                tol = sum_tolerance(raw.dtype if raw.is_floating_point() else torch.float32)
                self._check_probabilities(probs, valid, start, tol)
            known = labels != self.ignore_index
            if valid is not None:
                known &= valid
            bad = known & ((labels < 0) | (labels >= self.num_classes))
            if bool(bad.any()):
                where = tuple(int(i) for i in bad.nonzero()[0])
                raise ValueError(
                    f"labels must lie in [0, {self.num_classes}) or equal ignore_index="
                    f"{self.ignore_index}; sample {start + where[0]} has label "
                    f"{int(labels[where])} at {where[1:] or 'its position'}"
                )
            yield probs, labels, valid

    def _where(self, bad: Tensor, start: int) -> tuple[int, ...]:
        """The first True position of ``bad`` (N, *spatial), as (sample, *spatial) in the file."""
        first = tuple(int(i) for i in bad.nonzero()[0])
        return (start + first[0], *first[1:])

    def _describe(self, where: tuple[int, ...]) -> str:
        sample = f"sample {where[0]}"
        return sample + (f" at position {where[1:]}" if len(where) > 1 else "")

    def _check_logits(self, logits: Tensor, valid: Tensor | None, start: int) -> None:
        """Logits must be finite at the valid positions (softmax turns NaN/inf into NaN)."""
        ok = torch.isfinite(logits).all(1)
        if valid is not None:
            ok |= ~valid
        if bool(ok.all()):
            return
        where = self._where(~ok, start)
        row = logits[(where[0] - start, slice(None), *where[1:])]
        raise ValueError(
            f"{self.path.name}: {self.key!r} read as logits must be finite at valid positions; "
            f"{self._describe(where)} holds {_preview(row)}"
        )

    def _check_probabilities(
        self, probs: Tensor, valid: Tensor | None, start: int, tol: float
    ) -> None:
        """Finite, >= 0, <= 1, summing to 1 within ``tol`` along dim 1 at valid positions."""
        row_sum = probs.sum(1)
        row_min = probs.amin(1)
        row_max = probs.amax(1)
        ok = (row_min >= 0) & (row_max <= 1) & ((row_sum - 1).abs() <= tol)  # NaN: False
        if valid is not None:
            ok |= ~valid
        if bool(ok.all()):
            return
        where = self._where(~ok, start)
        at = (where[0] - start, *where[1:])
        total, low, high = float(row_sum[at]), float(row_min[at]), float(row_max[at])
        message = (
            f"{self.path.name}: {self.key!r} must hold probabilities along dim 1 (finite, in "
            f"[0, 1], summing to 1 within {tol:.3g}) at valid positions; "
            f"{self._describe(where)} has sum {total:.6g}, minimum {low:.6g}, maximum "
            f"{high:.6g}"
        )
        if not all(math.isfinite(v) for v in (total, low, high)):
            message += " (NaN or infinite values: check the model's outputs before saving)"
        elif low < 0 or high > 1 or abs(total - 1) > 0.05:
            message += (
                ". These look like logits: rerun with --from-logits (from_logits=True in "
                "Python), or save them under the key 'logits'"
            )
        else:
            message += ". Renormalise the rows (probs / probs.sum(1, keepdim=True)) before saving"
        raise ValueError(message)


def _preview(row: Tensor, limit: int = 6) -> str:
    values = ", ".join(f"{float(v):.4g}" for v in row[:limit])
    return f"[{values}{', ...' if len(row) > limit else ''}]"


def parse_selector(spec: object) -> tuple[str, float | None]:
    """Split a selector spec ``name[:tau]`` into ``(name, tau or None)``; raise if malformed.

    Raises:
        TypeError: ``spec`` is not a string.
        ValueError: unknown name, a value on a selector other than threshold, or a tau that
            is not a number in [0, 1]; the message shows a valid example.

    Example:
        >>> parse_selector("threshold:0.9")
        ('threshold', 0.9)
        >>> parse_selector("csl")
        ('csl', None)
    """
    if not isinstance(spec, str):
        raise TypeError(f"a selector spec must be a string like 'threshold:0.9', got {spec!r}")
    name, colon, value = spec.partition(":")
    if name not in SELECTOR_NAMES:
        raise ValueError(
            f"unknown selector {spec!r}; choose from {', '.join(SELECTOR_NAMES)} "
            "(threshold takes an optional tau, e.g. threshold:0.9)"
        )
    if not colon:
        return name, None
    if name != "threshold":
        raise ValueError(
            f"only threshold takes a value (threshold:TAU, e.g. threshold:0.9), got {spec!r}"
        )
    try:
        tau = float(value)
    except ValueError:
        tau = math.nan
    if not 0.0 <= tau <= 1.0:
        raise ValueError(
            f"{spec!r}: tau {value!r} is not a number in [0, 1]; write e.g. threshold:0.9"
        )
    return name, tau


def is_stateful(spec: str) -> bool:
    """Whether the selector ``spec`` carries state from batch to batch (FlexMatch, ...)."""
    return parse_selector(spec)[0] in STATEFUL_SELECTORS


def make_selector(spec: str, num_classes: int, num_samples: int, dense: bool):
    """A callable (probs, valid, index) → Selection for ``spec`` = ``name[:tau]``.

    Selectors run with ``validate=False``: :meth:`PredictionFile.batches` has checked the
    values already.
    """
    name, value = parse_selector(spec)
    if name == "threshold":
        tau = 0.95 if value is None else value
        return lambda probs, valid, index: pseudosel.functional.threshold(
            probs, tau, valid=valid, validate=False
        )
    if name in ("csl", "csl_max_margin", "entropy_split"):
        return lambda probs, valid, index: pseudosel.select_reliable(
            probs, name, valid=valid, validate=False
        )
    if name == "flexmatch":
        return _FlexMatchRunner(
            pseudosel.FlexMatchSelector(num_classes, None if dense else num_samples, validate=False)
        )
    if name == "adsh":
        if dense:
            raise ValueError("adsh keeps one record per sample: classification (N, K) only")
        adsh = pseudosel.AdshSelector(num_classes, num_samples, validate=False)

        def adsh_step(probs: Tensor, valid: Tensor, index: Tensor):
            # select, then record; the scores follow everything recorded so far (USB
            # recomputes once per epoch: with --passes the last pass uses the earlier ones)
            selection = adsh(probs, valid)
            adsh.record(probs, index, valid)
            adsh.recompute(reset=False)
            return selection

        return adsh_step
    if name == "precision_target":
        return _HeldOutRunner(num_classes, num_samples, dense)
    adaptive: torch.nn.Module = {
        "freematch": pseudosel.FreeMatchSelector,
        "softmatch": pseudosel.SoftMatchSelector,
        "corrmatch": pseudosel.CorrMatchSelector,
    }[name](num_classes, validate=False)
    return _EmaRunner(adaptive)


class _HeldOutRunner:
    """(probs, valid, index) → Selection for precision_target, calibrated on the file's own
    labels by two-fold cross-fitting: :meth:`observe` feeds the samples with an even index
    to one selector's held-out window and the odd ones to the other's, once (the first
    warm-up pass); the first measured call calibrates both, and each sample is then selected
    by the selector that did not see its label."""

    def __init__(self, num_classes: int, num_samples: int, dense: bool) -> None:
        window = HELDOUT_WINDOW if dense else min(HELDOUT_WINDOW, (num_samples + 1) // 2)
        self.folds = [
            pseudosel.PrecisionTargetSelector(num_classes, window=window, validate=False)
            for _ in range(2)
        ]
        self.num_samples = num_samples
        self.observed = 0
        self.calibrated = False

    @staticmethod
    def _even(index: Tensor, like: Tensor) -> Tensor:
        return (index % 2 == 0).view(-1, *([1] * (like.dim() - 1)))

    def observe(self, probs: Tensor, labels: Tensor, known: Tensor, index: Tensor) -> None:
        """Push a batch's known labels into the two folds (only during the first pass)."""
        if self.observed >= self.num_samples:
            return
        self.observed += probs.shape[0]
        even = self._even(index, known)
        for fold, part in zip(self.folds, (even, ~even), strict=True):
            held = known & part
            fold.observe_heldout(probs, torch.where(held, labels, 0), held)

    def __call__(self, probs: Tensor, valid: Tensor | None, index: Tensor):
        if not self.calibrated:
            for fold in self.folds:
                fold.calibrate()
            self.calibrated = True
        on_even, on_odd = (fold(probs, valid) for fold in self.folds)
        even = self._even(index, on_even.mask)
        # a sample is selected by the fold calibrated on the other half
        return type(on_even)(
            *(torch.where(even, b, a) for a, b in zip(on_even, on_odd, strict=True))
        )


class _FlexMatchRunner:
    """(probs, valid, index) → Selection for FlexMatch: per-sample with the file's sample
    index as the unlabelled set's positions, class-wise for dense files."""

    def __init__(self, module: pseudosel.FlexMatchSelector) -> None:
        self.module = module

    def __call__(self, probs: Tensor, valid: Tensor | None, index: Tensor):
        return self.module(probs, None if self.module.num_unlabeled is None else index, valid)


class _EmaRunner:
    """(probs, valid, index) → Selection for an EMA selector (FreeMatch, SoftMatch, CorrMatch).

    Their ``momentum`` (the weight of the old value, 0.999) needs some 3,000 batches to
    forget the initial state. On a fixed file the steady state is the average of the batch
    statistics, so :meth:`warm_up` advances the state with the cumulative average (momentum
    ``1 - 1/step``, capped at the selector's own, as BatchNorm's ``momentum=None``): one
    pass reaches it. The measured pass runs with the selector's own momentum.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def __call__(self, probs: Tensor, valid: Tensor | None, index: Tensor):
        return self.module(probs, valid)

    def warm_up(self, probs: Tensor, valid: Tensor | None, step: int) -> None:
        """Advance the state on the ``step``-th warm-up batch (counted from 1)."""
        published = self.module.momentum
        self.module.momentum = min(published, 1.0 - 1.0 / step)
        try:
            self.module(probs, valid)
        finally:
            self.module.momentum = published


@dataclass
class _Sweep:
    """Histograms over max confidence for the threshold sweep and the reliability diagram."""

    correct: Tensor
    wrong: Tensor
    conf_sum: Tensor

    @classmethod
    def empty(cls) -> _Sweep:
        return cls(*(torch.zeros(SWEEP_BINS, dtype=torch.float64) for _ in range(3)))

    def add(self, confidence: Tensor, correct: Tensor, known: Tensor) -> None:
        slot = (confidence.double() * SWEEP_BINS).long().clamp_(0, SWEEP_BINS - 1).flatten()
        self.correct.index_add_(0, slot, (known & correct).flatten().double())
        self.wrong.index_add_(0, slot, (known & ~correct).flatten().double())
        self.conf_sum.index_add_(0, slot, (confidence.double() * known).flatten())

    def curve(self) -> dict[str, list[float]]:
        total = float((self.correct + self.wrong).sum())
        kept_correct = self.correct.flip(0).cumsum(0).flip(0)  # confidence >= bin edge
        kept = (self.correct + self.wrong).flip(0).cumsum(0).flip(0)
        coverage = (kept / max(total, 1.0)).tolist()
        precision = (kept_correct / kept.clamp_min(1)).tolist()
        taus = (torch.arange(SWEEP_BINS, dtype=torch.float64) / SWEEP_BINS).tolist()
        keep = [i for i, k in enumerate(kept.tolist()) if k > 0]
        return {
            "tau": [taus[i] for i in keep],
            "coverage": [coverage[i] for i in keep],
            "precision": [precision[i] for i in keep],
        }

    def reliability(self) -> dict[str, list[float]]:
        edges = [round(i * SWEEP_BINS / RELIABILITY_BINS) for i in range(RELIABILITY_BINS + 1)]
        conf, acc, count = [], [], []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            n = float((self.correct[lo:hi] + self.wrong[lo:hi]).sum())
            count.append(n)
            conf.append(float(self.conf_sum[lo:hi].sum()) / n if n else 0.0)
            acc.append(float(self.correct[lo:hi].sum()) / n if n else 0.0)
        return {"mean_confidence": conf, "accuracy": acc, "count": count}


def compare(
    path: str | Path,
    *,
    selectors: list[str] | None = None,
    out: str | Path | None = None,
    batch_size: int = 64,
    ignore_index: int = 255,
    from_logits: bool = False,
    plots: bool = True,
    progress: bool = True,
    passes: int = DEFAULT_PASSES,
) -> dict:
    """Run the comparison; return (and with ``out`` write) the report. See the module doc.

    ``from_logits=True`` applies softmax over dim 1 to the predictions, whatever their key.
    ``passes``: stateful selectors (``STATEFUL_SELECTORS``) run ``passes - 1`` warm-up passes
    over the file that only advance their state, then the measured pass; stateless selectors
    are measured on one pass (``precision_target`` reads its held-out labels in the first
    warm-up pass, so it needs ``passes >= 2``). The report records ``passes`` and, per
    selector, ``warmup_passes``.
    Raises ``ValueError`` for a malformed file, predictions that are not probabilities
    (suggesting ``from_logits`` when they look like logits), NaN/inf, or a bad selector spec.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(passes, bool) or not isinstance(passes, int):
        raise TypeError(f"passes must be an int, got {type(passes).__name__}")
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    if isinstance(selectors, str):
        raise TypeError(
            f"selectors must be a list of specs such as ['threshold:0.9', 'csl'], got the "
            f"string {selectors!r}"
        )
    specs = selectors or DEFAULT_SELECTORS
    for spec in specs:
        parse_selector(spec)
    if passes < 2 and any(parse_selector(spec)[0] == "precision_target" for spec in specs):
        raise ValueError(
            "precision_target calibrates on the file's labels during the first warm-up pass "
            f"(two-fold cross-fitting), so passes must be >= 2, got passes={passes}"
        )
    source = PredictionFile(path, ignore_index=ignore_index, from_logits=from_logits)
    if out is not None:  # an output that cannot be written fails before the work, not after
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
    dense = len(source.shape) > 2
    runners = {spec: make_selector(spec, source.num_classes, source.size, dense) for spec in specs}
    stats = {spec: SelectionStats(source.num_classes, ignore_index=ignore_index) for spec in specs}
    stateful = {spec: run for spec, run in runners.items() if is_stateful(spec)}
    warmup = passes - 1 if stateful else 0
    sweep = _Sweep.empty()
    scatter = None
    per_pass = math.ceil(source.size / batch_size)
    bar = _progress_bar(per_pass * (warmup + 1)) if progress else None
    start = 0
    try:
        with torch.no_grad():
            step = 0
            for _ in range(warmup):  # advance the stateful selectors' state only
                start = 0
                for probs, labels, valid in source.batches(batch_size):
                    index = torch.arange(start, start + probs.shape[0])
                    start += probs.shape[0]
                    step += 1
                    for run in stateful.values():
                        if isinstance(run, _EmaRunner):
                            run.warm_up(probs, valid, step)
                        elif isinstance(run, _HeldOutRunner):
                            known = labels != ignore_index
                            run.observe(probs, labels, known if valid is None else known & valid,
                                        index)  # fmt: skip
                        else:
                            run(probs, valid, index)
                    if bar is not None:
                        bar.update()
            # a selector still in its own warm-up when measured (FlexMatch: more samples
            # unused than any class has learnt) reports warm-up numbers: say so
            unfinished = {spec for spec, run in stateful.items() if _in_warmup(run)}
            start = 0
            for probs, labels, valid in source.batches(batch_size):
                index = torch.arange(start, start + probs.shape[0])
                start += probs.shape[0]
                confidence, predicted = probs.max(1)
                known = labels != ignore_index
                if valid is not None:
                    known &= valid
                sweep.add(confidence, predicted == labels, known)
                target = labels.masked_fill(~known, ignore_index)
                for spec, run in runners.items():
                    stats[spec].update(run(probs, valid, index), target)
                if scatter is None:
                    scatter = feature_space_sample(probs, labels, known, dense)
                if bar is not None:
                    bar.update()
    except BaseException:
        if bar is not None:
            bar.leave = False  # erase the bar, so that the error message stands alone
        raise
    finally:
        if bar is not None:
            bar.close()
    report = {
        "file": str(path),
        "samples": source.size,
        "shape": list(source.shape),
        "num_classes": source.num_classes,
        "batch_size": batch_size,
        "passes": passes,
        "selectors": {
            spec: {
                **{k: v.tolist() for k, v in s.compute().items()},
                "warmup_passes": warmup if spec in stateful else 0,
                "in_own_warmup": spec in unfinished,
            }
            for spec, s in stats.items()
        },
        "threshold_sweep": sweep.curve(),
        "reliability": sweep.reliability(),
    }
    if out is not None:
        (out / "compare.json").write_text(json.dumps(report, indent=2))
        if plots:
            report["plots"] = _plots(report, scatter, out)
            (out / "compare.json").write_text(json.dumps(report, indent=2))
    return report


def _in_warmup(run) -> bool:
    """Whether a runner's selector module reports its own warm-up as unfinished."""
    in_warmup = getattr(getattr(run, "module", None), "in_warmup", None)
    return bool(in_warmup()) if in_warmup is not None else False


def _progress_bar(total: int):
    """A tqdm bar over ``total`` batches, or None without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="compare", unit="batch")


def feature_space_sample(probs: Tensor, labels: Tensor, known: Tensor, dense: bool) -> dict:
    """CSL features of one group (the first image, or the whole batch) and its split.

    Returns numpy ``confidence``, ``spread``, ``correct`` (at most 4,000 known positions,
    seeded subsample) and the reliable cluster's ``center`` — the inputs of
    :func:`pseudosel.viz.plot_feature_space`.
    """
    from pseudosel.features import csl_features
    from pseudosel.functional.csl import split_groups
    from pseudosel.functional.separation import group_points

    group = probs[:1] if dense else probs
    c, s, predicted = csl_features(group)
    ok = known[:1] if dense else known
    gc, gs, gv = group_points(c, s, ok, "auto", group.dim())
    split = split_groups(gc[:1], gs[:1], gv[:1])
    keep = ok.flatten().nonzero().flatten()
    if len(keep) > SCATTER_POINTS:
        keep = keep[torch.randperm(len(keep), generator=torch.Generator().manual_seed(0))][
            :SCATTER_POINTS
        ]
    truth = (labels[:1] if dense else labels).flatten()
    return {
        "confidence": c.flatten()[keep].numpy(),
        "spread": s.flatten()[keep].numpy(),
        "correct": (predicted.flatten() == truth)[keep].numpy(),
        "center": tuple(float(v) for v in split.center[0]),
    }


def _plots(report: dict, scatter: dict | None, out: Path) -> list[str]:
    from pseudosel import viz

    sweep = report["threshold_sweep"]
    points = {}
    for spec, metrics in report["selectors"].items():
        if "precision" in metrics:
            points[spec] = (metrics["ratio"], metrics["precision"])
    paths = [
        viz.plot_coverage_precision(
            sweep["coverage"], sweep["precision"], points, out / "coverage_precision.png"
        ),
        viz.plot_reliability(
            report["reliability"]["mean_confidence"],
            report["reliability"]["accuracy"],
            report["reliability"]["count"],
            out / "reliability.png",
        ),
    ]
    if scatter is not None:
        paths.append(
            viz.plot_feature_space(
                scatter["confidence"],
                scatter["spread"],
                scatter["correct"],
                scatter["center"],
                out / "csl_feature_space.png",
                title="CSL feature space (first "
                + ("image)" if len(report["shape"]) > 2 else "batch)"),
            )
        )
    return [str(p) for p in paths]


def table(report: dict) -> str:
    """The report's selectors as a fixed-width text table."""
    columns = [
        ("coverage", "ratio"),
        ("precision", "precision"),
        ("w.precision", "weighted_precision"),
        ("recall", "recall"),
        ("AUROC", "auroc"),
        ("mean w", "mean_weight"),
    ]
    warmed = [s for s, m in report["selectors"].items() if m.get("warmup_passes", 0) > 0]
    unfinished = [s for s, m in report["selectors"].items() if m.get("in_own_warmup")]
    names = {
        s: s + ("*" if s in warmed else "") + ("!" if s in unfinished else "")
        for s in report["selectors"]
    }
    width = max(len(n) for n in names.values()) + 2
    lines = [f"{'selector':<{width}}" + "".join(f"{h:>12}" for h, _ in columns)]
    lines.append("-" * len(lines[0]))
    for spec, metrics in report["selectors"].items():
        cells = "".join(
            f"{metrics[key]:>12.4f}" if key in metrics else f"{'-':>12}" for _, key in columns
        )
        lines.append(f"{names[spec]:<{width}}{cells}")
    if warmed:
        passes = report["selectors"][warmed[0]]["warmup_passes"]
        lines.append(
            f"* stateful: measured on the last of {passes + 1} passes over the file (the first "
            f"{passes} only advance its state; --passes sets the number)"
        )
    if unfinished:
        lines.append(
            "! still in its own warm-up when measured (FlexMatch: more samples unused than "
            "any class has learnt, so its thresholds stay near 0): these numbers are its "
            "warm-up, not its steady state"
        )
    return "\n".join(lines)
