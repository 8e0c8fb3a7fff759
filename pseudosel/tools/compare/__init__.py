"""``pseudosel compare``: which selector keeps more right and fewer wrong pseudo-labels?

Reads a predictions file (:class:`PredictionFile`: ``probs`` or ``logits`` (N, K[, H, W]),
the true ``labels``, optionally ``valid`` or ``ignore_mask``), streams it in batches of whole
samples (memory bounded by the batch, and CSL's groups stay whole images), runs every
selector on every batch and reports coverage, precision, weighted precision, recall, AUROC
and mean weight, plus a threshold sweep, a reliability diagram and CSL's feature space.

Any registered selector runs by name — the built-in ones and a plug-in's
(:func:`pseudosel.available_selectors`, docs/plugins.md) — as ``name``, ``name:VALUE`` (its
value option, e.g. ``threshold:0.9``) or ``name:key=value,...``
(:mod:`pseudosel.tools.compare.specs`); how each one runs follows its registry entry
(:mod:`pseudosel.tools.compare.runners`).

Stateful selectors run in training mode over the batches in file order, as during training.
Started from fresh state and measured on one pass they would report their cold start
(FlexMatch keeps everything while no sample has been recorded; an EMA started at 1/K keeps
everything for thousands of batches), so they first make ``passes - 1`` warm-up passes over
the file that only advance their state, and the last pass is the one measured (default
``passes=3``; the report and the table say so). During the warm-up an EMA's momentum is the
cumulative average's, ``1 - 1/step`` (capped at the selector's own), so the state reaches
the file's average statistics in one pass; the measured pass uses the selector's momentum.
Stateless selectors are measured on one pass. Classification CSL draws one boundary per
batch.

A selector that needs held-out labels (``precision_target``, experimental) takes them from
the file by two-fold cross-fitting. During the first warm-up pass the samples with an even
index feed one module's held-out window and those with an odd index another's; each
calibrates once, and each sample is measured with the module that did not see its label —
so it needs ``passes >= 2``. Its row is what the calibrated selector achieves on data
exchangeable with its held-out half (same file, same model).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from pseudosel.metrics import SelectionStats
from pseudosel.tools.compare.files import PredictionFile
from pseudosel.tools.compare.report import Sweep, feature_space_sample, table
from pseudosel.tools.compare.report import plots as write_plots
from pseudosel.tools.compare.runners import make_runner, runner_for
from pseudosel.tools.compare.specs import check_selector, parse_selector

__all__ = [
    "DEFAULT_PASSES",
    "DEFAULT_SELECTORS",
    "PredictionFile",
    "compare",
    "feature_space_sample",
    "make_runner",
    "parse_selector",
    "table",
]

#: the selectors compared when none are named (a configuration of the tool)
DEFAULT_SELECTORS = [  # a choice of selectors
    "threshold", "threshold:0.9", "flexmatch", "freematch", "softmatch", "csl",
]  # fmt: skip
#: passes over the file for stateful selectors: the first ``DEFAULT_PASSES - 1`` warm the
#: state up, the last one is measured
DEFAULT_PASSES = 3


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

    Args:
        path: the predictions file (``.npz`` or ``.pt``, :class:`PredictionFile`).
        selectors: specs ``name``, ``name:VALUE`` or ``name:key=value,...`` of registered
            selectors. Default :data:`DEFAULT_SELECTORS`.
        out: folder for ``compare.json`` and, with ``plots``, the PNGs. Default None: the
            report is only returned.
        batch_size: samples per batch (memory is bounded by the batch). Default 64.
        ignore_index: label (and ``ignore_mask``) value of unknown / ignored positions.
        from_logits: apply softmax over dim 1 to the predictions, whatever their key.
        plots: write the plots (needs matplotlib) when ``out`` is given.
        progress: show a progress bar (tqdm, when installed).
        passes: stateful selectors run ``passes - 1`` warm-up passes over the file that
            only advance their state, then the measured pass; stateless selectors are
            measured on one pass (a selector that needs held-out labels reads them in the
            first warm-up pass, so it needs ``passes >= 2``). Default 3.

    Returns:
        The report: ``file``, ``samples``, ``shape``, ``num_classes``, ``batch_size``,
        ``passes``, per selector spec its statistics with ``warmup_passes`` and
        ``in_own_warmup``, ``threshold_sweep``, ``reliability`` (and ``plots``).

    Raises:
        ValueError: a malformed file, predictions that are not probabilities (suggesting
            ``from_logits`` when they look like logits), NaN/inf, a bad selector spec, or a
            selector that cannot run on this file.
        TypeError: an argument of the wrong type.
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
    specs = list(selectors or DEFAULT_SELECTORS)
    checked = {text: check_selector(text) for text in specs}  # before the file is read
    for spec, _ in checked.values():
        if passes < 2 and "heldout" in spec.needs:
            raise ValueError(
                f"{spec.name} calibrates on held-out labels, which pseudosel compare takes "
                "from the file's labels during the first warm-up pass (two-fold "
                f"cross-fitting), so passes must be >= 2, got passes={passes}"
            )
    source = PredictionFile(path, ignore_index=ignore_index, from_logits=from_logits)
    if out is not None:  # an output that cannot be written fails before the work, not after
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
    runners = {
        text: runner_for(text, spec, options, source.num_classes, source.size, source.dense)
        for text, (spec, options) in checked.items()
    }
    stats = {text: SelectionStats(source.num_classes, ignore_index=ignore_index) for text in specs}
    stateful = {text: run for text, run in runners.items() if run.stateful}
    warmup = passes - 1 if stateful else 0
    sweep = Sweep.empty()
    scatter = None
    per_pass = math.ceil(source.size / batch_size)
    bar = _progress_bar(per_pass * (warmup + 1)) if progress else None
    try:
        with torch.no_grad():
            step = 0
            for _ in range(warmup):  # advance the stateful selectors' state only
                for probs, labels, valid, index, known in _batches(source, batch_size):
                    step += 1
                    for run in stateful.values():
                        run.warm_up(probs, valid, index, labels, known, step)
                    if bar is not None:
                        bar.update()
            # a selector still in its own warm-up when measured (FlexMatch: more samples
            # unused than any class has learnt) reports warm-up numbers: say so
            unfinished = {text for text, run in stateful.items() if run.in_warmup()}
            for probs, labels, valid, index, known in _batches(source, batch_size):
                confidence, predicted = probs.max(1)
                sweep.add(confidence, predicted == labels, known)
                target = labels.masked_fill(~known, ignore_index)
                for text, run in runners.items():
                    stats[text].update(run(probs, valid, index), target)
                if scatter is None:
                    scatter = feature_space_sample(probs, labels, known, source.dense)
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
            text: {
                **{k: v.tolist() for k, v in s.compute().items()},
                "warmup_passes": warmup if text in stateful else 0,
                "in_own_warmup": text in unfinished,
            }
            for text, s in stats.items()
        },
        "threshold_sweep": sweep.curve(),
        "reliability": sweep.reliability(),
    }
    if out is not None:
        (out / "compare.json").write_text(json.dumps(report, indent=2))
        if plots:
            report["plots"] = write_plots(report, scatter, out)
            (out / "compare.json").write_text(json.dumps(report, indent=2))
    return report


def _batches(source: PredictionFile, batch_size: int):
    """The file's batches with each sample's position in the file (``index``, long (N,))
    and the positions whose label is known and valid (``known``, bool (N, *spatial))."""
    start = 0
    for probs, labels, valid in source.batches(batch_size):
        index = torch.arange(start, start + probs.shape[0])
        start += probs.shape[0]
        known = labels != source.ignore_index
        if valid is not None:
            known &= valid
        yield probs, labels, valid, index, known


def _progress_bar(total: int):
    """A tqdm bar over ``total`` batches, or None without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="compare", unit="batch")
