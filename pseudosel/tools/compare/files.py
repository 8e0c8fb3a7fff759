"""The predictions file of ``pseudosel compare``: opened, checked and streamed in batches.

A ``.npz`` (read without pickles, array by array and row range by row range) or a ``.pt``
(read with ``weights_only=True``, memory-mapped) holding ``probs`` or ``logits``
(N, K[, H, W]), ``labels`` (the true labels, ``ignore_index`` where unknown) and optionally
``valid`` (bool) or ``ignore_mask`` (integers, ``ignore_index`` = ignored).

Every batch is checked as it is read: ``probs`` must be finite, in [0, 1] and sum to 1 along
dim 1 at the valid positions; ``logits`` (or ``probs`` read with ``from_logits=True``) must be
finite there. A file that fails raises ``ValueError`` naming the file, the key and the first
offending sample; when the rows look like logits it suggests ``--from-logits``.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pseudosel.validation import check_ignore_index, sum_tolerance

__all__ = ["PredictionFile"]


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
        num_classes: K; dense: whether the predictions have positions (N, K, *spatial)
        rather than one row per sample (N, K); from_logits: whether the predictions are
        read as logits.
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
        self.dense = len(shape) > 2
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
