"""``pseudosel bench --peers``: pseudosel's selectors beside semilearn's (USB 0.3.2) own hooks.

USB is where most readers first meet these selectors, so its hooks are the peers to beat at
its own sizes (CIFAR: 448 unlabelled samples per step, 10 or 100 classes; 64 for a small
batch). Every registered selector whose :class:`~pseudosel.registry.UsbMapping` names the
USB hook it replaces (``hook=``), and distribution alignment (USB's ``DistAlignEMAHook`` and
``DistAlignQueueHook``), is timed on the same batches as that hook, in one run, round by
round in turn:

- both sides start from the weak view's logits and end with the mask (or weights) and the
  pseudo-labels (Dash: the soft targets its algorithm trains on), so a row times what a
  training step pays for its selection;
- pseudosel: ``softmax(-1)``, then the selector's module as a training loop holds it, with
  its defaults — ``validate=True`` included — one training step per call
  (:meth:`SelectorSpec.step`); a third column with ``validate=False``: what the value check
  costs;
- USB: what its algorithm's ``train_step`` calls: ``compute_prob`` and the masking hook on
  the probabilities (FixMatch, FlexMatch, SoftMatch, AdaMatch), or the masking hook on the
  logits, which applies the softmax itself (FreeMatch, Dash); then
  ``PseudoLabelingHook.gen_ulb_targets`` as the algorithm calls it. Distribution alignment:
  the softmax and ``dist_align`` on both sides.

The timed rows use USB's defaults (EMA momentum 0.999, Dash's ρ updated every 10 epochs of
100 steps). Before timing, both sides run the same 20 batches in a setting that moves their
state within 20 steps (momentum 0.7, an epoch of one step) and are compared at every step:
masks and labels equal, weights and aligned probabilities within float32 rounding, and the
state USB's checkpoint code reads (``UsbMapping.state``: thresholds, EMA statistics, ρ,
the per-sample records, the queues) equal — ``same output`` in the report. A row thus times
two implementations of one rule, not two rules. The batches cycle through 8 draws of
varied confidence; FlexMatch gets random positions in an unlabelled set of 50,000
(CIFAR's), AdaMatch a labelled batch of a seventh of the unlabelled one.

semilearn is imported from where the README's test command installs it
(:mod:`pseudosel.tools.semilearn_env`); without it, :func:`peer_report` raises ImportError
with the install line.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import torch
from torch import Tensor

from pseudosel.registry import available_selectors, selector_spec
from pseudosel.tools.bench.sizes import parse_size
from pseudosel.tools.semilearn_env import INSTALL_HINT, install_import_shims

__all__ = ["PEER_SIZES", "PeerReport", "PeerRow", "peer_markdown", "peer_report", "report_dict"]

#: USB's sizes: CIFAR-10 and CIFAR-100 steps (64 labelled x uratio 7), and a small batch
PEER_SIZES = ("448x10", "448x100", "64x10")
#: the unlabelled set FlexMatch records per sample (CIFAR's 50,000)
NUM_UNLABELED = 50_000
#: steps both sides run from their initial state before timing, outputs compared
CHECKED_STEPS = 20
#: distinct batches per size, cycled
BATCHES = 8
#: calls per timed round; rounds alternate between pseudosel and USB
CALLS_PER_ROUND = 20
#: USB's defaults for what its hooks read from the algorithm (semilearn's config files)
TAU = 0.95
DASH = dict(rho_min=0.05, gamma=1.27, C=1.0001, rho_init=1.0, T=0.5)


@dataclass(frozen=True)
class Setting:
    """What both sides are configured with: the EMA momentum and Dash's steps per epoch."""

    momentum: float
    iter_per_epoch: int


#: the timed rows: USB's defaults
TIMED = Setting(momentum=0.999, iter_per_epoch=100)
#: the output check: state that moves within CHECKED_STEPS
CHECKED = Setting(momentum=0.7, iter_per_epoch=1)


@dataclass
class PeerRow:
    """One selector at one size: median ms per step of each side, and their ratio."""

    selector: str
    hook: str
    shape: list[int]
    ours_ms: float
    usb_ms: float
    ratio: float  # pseudosel / USB: below 1, pseudosel is faster
    ours_unchecked_ms: float  # pseudosel with validate=False: what the value check costs
    same_output: bool
    difference: str = ""  # what differed, when not the same


@dataclass
class PeerReport:
    """A ``--peers`` run: the machine and versions, the timing protocol, the rows."""

    date: str
    machine: str
    torch: str
    semilearn: str
    python: str
    threads: int
    rounds: int
    calls_per_round: int = CALLS_PER_ROUND
    rows: list[PeerRow] = field(default_factory=list)


@dataclass
class _Side:
    """One side of a row, built fresh: ``step(batch)`` → outputs, and the object holding
    its state (the module, or USB's hook)."""

    step: Callable[[dict[str, Tensor]], Any]
    holder: Any


@dataclass
class _Pair:
    """Both sides of one row. ``ours(setting, validate, **options)`` and ``usb(setting)``
    build a fresh side; ``compare`` says what differs between their outputs ("" when
    nothing); ``state`` maps USB's hook attributes to the module's buffers."""

    selector: str
    hook: str
    ours: Callable[..., _Side]
    usb: Callable[[Setting], _Side]
    compare: Callable[[Any, Any], str]
    state: dict[str, str] = field(default_factory=dict)


def peer_report(
    sizes: Sequence[str] = PEER_SIZES, *, rounds: int = 15, seed: int = 0
) -> PeerReport:
    """Time every selector USB also has beside USB's hook, at each size (N x K, on the CPU).

    Args:
        sizes: classification shapes ``"NxK"`` (default :data:`PEER_SIZES`).
        rounds: timed rounds per side (each :data:`CALLS_PER_ROUND` calls; the median
            round is reported). Default 15.
        seed: seed of the batches.

    Raises:
        ImportError: semilearn is not importable (the message says how to install it).
        ValueError: a size that is not (N, K).
    """
    shapes = [parse_size(size) for size in sizes]
    for size, shape in zip(sizes, shapes, strict=True):
        if len(shape) != 2:
            raise ValueError(f"--peers sizes are (N, K) classification batches, got {size!r}")
    semilearn = _import_semilearn()
    report = PeerReport(
        date=date.today().isoformat(),
        machine=f"{platform.machine()}, {platform.processor() or platform.platform()}",
        torch=torch.__version__,
        semilearn=getattr(semilearn, "__version__", "0.3.2"),
        python=sys.version.split()[0],
        threads=torch.get_num_threads(),
        rounds=rounds,
    )
    for shape in shapes:
        batches = _batches(shape, seed)
        for pair in _pairs(shape[1]):
            difference = _compare(pair, batches)
            ours_s, unchecked_s, usb_s = _time_side_by_side(pair, batches, rounds)
            report.rows.append(
                PeerRow(
                    selector=pair.selector,
                    hook=pair.hook,
                    shape=list(shape),
                    ours_ms=ours_s * 1e3,
                    usb_ms=usb_s * 1e3,
                    ratio=ours_s / usb_s,
                    ours_unchecked_ms=unchecked_s * 1e3,
                    same_output=not difference,
                    difference=difference,
                )
            )
    return report


def peer_markdown(report: PeerReport) -> str:
    """The report as a markdown table, with its machine line."""
    lines = [
        f"{report.date} · {report.machine} · {report.threads} threads · torch {report.torch} · "
        f"semilearn {report.semilearn} · median of {report.rounds} rounds of "
        f"{report.calls_per_round} steps, alternated",
        "",
        "| selector | USB hook | shape | pseudosel ms | USB ms | pseudosel / USB | "
        "pseudosel, validate=False ms | same output |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in report.rows:
        shape = "x".join(map(str, row.shape))
        same = "yes" if row.same_output else f"NO: {row.difference}"
        lines.append(
            f"| {row.selector} | {row.hook} | {shape} | {row.ours_ms:.3f} | {row.usb_ms:.3f} | "
            f"{row.ratio:.2f} | {row.ours_unchecked_ms:.3f} | {same} |"
        )
    slower = [row for row in report.rows if row.ratio > 1]
    lines += [
        "",
        f"pseudosel no slower than USB's hook in {len(report.rows) - len(slower)} of "
        f"{len(report.rows)} rows"
        + ("." if not slower else "; slower: " + ", ".join(_row_name(row) for row in slower)),
    ]
    return "\n".join(lines)


def report_dict(report: PeerReport) -> dict[str, Any]:
    """The report as plain data (the JSON the command writes)."""
    return asdict(report)


def _row_name(row: PeerRow) -> str:
    return f"{row.selector} at {'x'.join(map(str, row.shape))} ({row.ratio:.2f}x)"


def _import_semilearn() -> types.ModuleType:
    install_import_shims()
    try:
        import semilearn
    except ImportError as error:
        raise ImportError(f"pseudosel bench --peers needs semilearn 0.3.2 ({error}): "
                          f"{INSTALL_HINT}") from error  # fmt: skip
    return semilearn


def _batches(shape: tuple[int, ...], seed: int) -> list[dict[str, Tensor]]:
    """:data:`BATCHES` batches: logits at several scales (from unsure to confident), the
    labelled batch's logits and the unlabelled positions."""
    n, k = shape
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for i in range(BATCHES):
        scale = 1.0 + 1.5 * i
        logits = torch.randn(n, k, generator=generator) * scale
        labelled = torch.randn(max(1, n // 7), k, generator=generator) * (scale + 2.0)
        index = torch.randperm(NUM_UNLABELED, generator=generator)[:n]
        batches.append({"logits": logits, "logits_labeled": labelled, "index": index})
    return batches


def _cycle(batches: list[dict[str, Tensor]]) -> Iterator[dict[str, Tensor]]:
    while True:
        yield from batches


def _compare(pair: _Pair, batches: list[dict[str, Tensor]], **options: Any) -> str:
    """What differs between the two sides over :data:`CHECKED_STEPS` steps in the
    :data:`CHECKED` setting — outputs, then state — or "" (``options``: given to
    pseudosel's side, for the tests)."""
    ours, usb = pair.ours(CHECKED, True, **options), pair.usb(CHECKED)
    for step, batch in zip(range(CHECKED_STEPS), _cycle(batches), strict=False):
        difference = pair.compare(ours.step(batch), usb.step(batch))
        difference = difference or _state_difference(pair.state, ours.holder, usb.holder)
        if difference:
            return f"step {step}: {difference}"
    return ""


def _state_difference(state: dict[str, str], module: Any, hook: Any) -> str:
    for attribute, buffer in state.items():
        theirs, mine = getattr(hook, attribute), getattr(module, buffer)
        if theirs is None:
            continue  # not set by USB's hook yet (Dash's ρ before its first update)
        theirs = torch.as_tensor(theirs, dtype=mine.dtype)
        if theirs.numel() == mine.numel():  # USB keeps some scalars as (1,) tensors
            theirs = theirs.reshape(mine.shape)
        if theirs.shape != mine.shape or not torch.allclose(mine, theirs, rtol=1e-5, atol=1e-7):
            return f"state {attribute} differs"
    return ""


def _time_side_by_side(
    pair: _Pair, batches: list[dict[str, Tensor]], rounds: int
) -> tuple[float, float, float]:
    """Median seconds per step of pseudosel (validate=True, then False) and of USB: rounds
    of :data:`CALLS_PER_ROUND` steps, the three in turn, each on fresh state warmed up by
    one round, in the :data:`TIMED` setting."""
    sides = (pair.ours(TIMED, True), pair.ours(TIMED, False), pair.usb(TIMED))
    batch_of = [_cycle(batches) for _ in sides]
    times: list[list[float]] = [[] for _ in sides]
    for round_ in range(rounds + 1):
        for index, side in enumerate(sides):
            begin = time.perf_counter()
            for _ in range(CALLS_PER_ROUND):
                side.step(next(batch_of[index]))
            if round_ > 0:  # the first round warms up
                times[index].append((time.perf_counter() - begin) / CALLS_PER_ROUND)
    ours, unchecked, usb = (statistics.median(side) for side in times)
    return ours, unchecked, usb


# ------------------------------------------------------------------------------ the pairs
def _pairs(num_classes: int) -> list[_Pair]:
    """Every registered selector whose USB mapping names its hook, then alignment."""
    _import_semilearn()
    pairs = []
    for name in available_selectors():
        spec = selector_spec(name)
        if spec.usb is None or not spec.usb.hook:
            continue
        if spec.usb.hook not in _USB_SIDES:
            raise ValueError(
                f"selector {name!r} names USB hook {spec.usb.hook!r}, which --peers cannot "
                f"drive (known: {sorted(_USB_SIDES)})"
            )
        usb_side, options, compare = _USB_SIDES[spec.usb.hook]
        pairs.append(
            _Pair(
                name,
                spec.usb.hook,
                _ours_factory(name, num_classes, options),
                lambda setting, side=usb_side: side(num_classes, setting),
                compare,
                dict(spec.usb.state),
            )
        )
    pairs += _alignment_pairs(num_classes)
    return pairs


def _ours_factory(name: str, num_classes: int, options: Callable[[Setting], dict[str, Any]]):
    """A fresh module of the registered selector — its defaults, the setting's options,
    then ``overrides`` — and a step from the batch's logits: ``softmax(-1)``, then
    :meth:`SelectorSpec.step` (Dash: also its soft targets, as its algorithm trains on)."""
    spec = selector_spec(name)

    def build(setting: Setting, validate: bool = True, **overrides: Any) -> _Side:
        chosen = {**options(setting), **overrides}
        module = spec.build(
            num_classes, num_unlabeled=NUM_UNLABELED, validate=validate, **chosen
        ).train()
        labelled, index = "labeled" in spec.needs, "index" in spec.needs
        soft_targets = spec.usb.hook == "DashThresholdingHook"

        def step(batch: dict[str, Tensor]) -> Any:
            inputs = {}
            if labelled:
                inputs["probs_labeled"] = batch["logits_labeled"].softmax(-1)
            if index:
                inputs["index"] = batch["index"]
            selection = spec.step(module, batch["logits"].softmax(-1), None, **inputs)
            if soft_targets:  # USB's Dash trains on softmax(logits / T) until ρ is at ρ_min
                torch.softmax(batch["logits"] / module.T, dim=-1)
            return selection

        return _Side(step, module)

    return build


def _hook(path: str, name: str):
    return getattr(importlib.import_module(f"semilearn.algorithms.{path}"), name)


def _softmax(logits: Tensor) -> Tensor:
    """USB's ``AlgorithmBase.compute_prob``."""
    return torch.softmax(logits, dim=-1)


def _algorithm(**settings: Any) -> types.SimpleNamespace:
    """The attributes of USB's algorithm object that its hooks read (one process)."""
    defaults = dict(p_cutoff=TAU, distributed=False, world_size=1, use_quantile=False,
                    clip_thresh=False, T=DASH["T"], compute_prob=_softmax)  # fmt: skip
    return types.SimpleNamespace(**{**defaults, **settings})


def _masking_on_probs(algorithm: Any, hook: Any, probs: Tensor, batch: dict) -> Tensor:
    """The masking hook on the probabilities, as FixMatch and SoftMatch call it."""
    return hook.masking(algorithm, logits_x_ulb=probs, softmax_x_ulb=False)


def _on_probs(hook: Any, masking: Callable = _masking_on_probs) -> _Side:
    """FixMatch's ``train_step`` order: ``compute_prob`` (softmax), the masking hook on the
    probabilities (``masking(algorithm, hook, probs, batch)``), then hard pseudo-labels
    from them (``PseudoLabelingHook``)."""
    labeler = _hook("hooks", "PseudoLabelingHook")()
    algorithm = _algorithm()

    def step(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        probs = torch.softmax(batch["logits"].detach(), dim=-1)
        mask = masking(algorithm, hook, probs, batch)
        labels = labeler.gen_ulb_targets(algorithm, probs, use_hard_label=True, softmax=False)
        return mask, labels

    return _Side(step, hook)


def _on_logits(hook: Any, *, hard: bool = True, **settings: Any) -> _Side:
    """FreeMatch's and Dash's ``train_step`` order: the masking hook on the logits (it
    applies the softmax), then the pseudo-labels from the logits; ``settings``: more of
    the algorithm's attributes. The algorithm counts its steps (``it``), as USB's loop."""
    labeler = _hook("hooks", "PseudoLabelingHook")()
    algorithm = _algorithm(it=0, **settings)

    def step(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        mask = hook.masking(algorithm, logits_x_ulb=batch["logits"])
        algorithm.it += 1
        labels = labeler.gen_ulb_targets(
            algorithm, batch["logits"], use_hard_label=hard, T=algorithm.T
        )
        return mask, labels

    return _Side(step, hook)


def _fixed(num_classes: int, setting: Setting) -> _Side:
    return _on_probs(_hook("hooks", "FixedThresholdingHook")())


def _adamatch(num_classes: int, setting: Setting) -> _Side:
    def masking(algorithm: Any, hook: Any, probs: Tensor, batch: dict) -> Tensor:
        probs_labeled = torch.softmax(batch["logits_labeled"].detach(), dim=-1)
        return hook.masking(
            algorithm, logits_x_lb=probs_labeled, logits_x_ulb=probs, softmax_x_lb=False,
            softmax_x_ulb=False,
        )  # fmt: skip

    return _on_probs(_hook("adamatch.utils", "AdaMatchThresholdingHook")(), masking)


def _flexmatch(num_classes: int, setting: Setting) -> _Side:
    def masking(algorithm: Any, hook: Any, probs: Tensor, batch: dict) -> Tensor:
        return hook.masking(
            algorithm, logits_x_ulb=probs, idx_ulb=batch["index"], softmax_x_ulb=False
        )

    hook = _hook("flexmatch.utils", "FlexMatchThresholdingHook")(
        ulb_dest_len=NUM_UNLABELED, num_classes=num_classes, thresh_warmup=True
    )
    return _on_probs(hook, masking)


def _freematch(num_classes: int, setting: Setting) -> _Side:
    return _on_logits(
        _hook("freematch.utils", "FreeMatchThresholdingHook")(num_classes, setting.momentum)
    )


def _softmatch(num_classes: int, setting: Setting) -> _Side:
    hook = _hook("softmatch.utils", "SoftMatchWeightingHook")
    return _on_probs(hook(num_classes, momentum=setting.momentum))


def _dash(num_classes: int, setting: Setting) -> _Side:
    from semilearn.core.criterions import CELoss

    hook = _hook("dash.utils", "DashThresholdingHook")(
        rho_min=DASH["rho_min"], gamma=DASH["gamma"], C=DASH["C"]
    )
    # Dash trains on soft targets until rho reaches its floor: gen_ulb_targets as called
    return _on_logits(
        hook, hard=False, rho_init=DASH["rho_init"], num_iter_per_epoch=setting.iter_per_epoch,
        use_hard_label=False, ce_loss=CELoss(),
    )  # fmt: skip


def _momentum(setting: Setting) -> dict[str, Any]:
    return {"momentum": setting.momentum}


def _dash_options(setting: Setting) -> dict[str, Any]:
    return dict(rho_init=DASH["rho_init"], update_every=10 * setting.iter_per_epoch,
                gamma=DASH["gamma"], c=DASH["C"], rho_min=DASH["rho_min"], T=DASH["T"])  # fmt: skip


def _no_options(setting: Setting) -> dict[str, Any]:
    return {}


def _labels_differ(ours, labels: Tensor) -> bool:
    if labels.dim() == ours.labels.dim() + 1:  # soft targets (Dash): their arg-max
        labels = labels.argmax(-1)
    return not torch.equal(ours.labels, labels)


def _hard(ours, usb) -> str:
    """A hard selection: equal mask and labels (USB's mask is a 0/1 float)."""
    mask, labels = usb
    if not torch.equal(ours.mask, mask > 0):
        return f"{int((ours.mask != (mask > 0)).sum())} mask entries differ"
    return "labels differ" if _labels_differ(ours, labels) else ""


def _soft(ours, usb) -> str:
    """A soft weighting: weights within float32 rounding, equal labels."""
    weight, labels = usb
    if not torch.allclose(ours.weight, weight, rtol=1e-5, atol=1e-6):
        return f"weights differ by up to {float((ours.weight - weight).abs().max()):.3g}"
    return "labels differ" if _labels_differ(ours, labels) else ""


#: USB hook class → (its side's factory, the pseudosel options that match USB's setting,
#: how the outputs compare)
_USB_SIDES: dict[str, tuple[Callable, Callable[[Setting], dict[str, Any]], Callable]] = {
    "FixedThresholdingHook": (_fixed, _no_options, _hard),
    "AdaMatchThresholdingHook": (_adamatch, _no_options, _hard),
    "FlexMatchThresholdingHook": (_flexmatch, _no_options, _hard),
    "FreeMatchThresholdingHook": (_freematch, _momentum, _hard),
    "SoftMatchWeightingHook": (_softmatch, _momentum, _soft),
    "DashThresholdingHook": (_dash, _dash_options, _hard),
}


def _alignment_pairs(num_classes: int) -> list[_Pair]:
    """Distribution alignment, EMA (ReMixMatch, SoftMatch, AdaMatch) and queue (SimMatch,
    CoMatch): a transform before a selector, not a registered selector. Both sides: the
    softmax of the logits, then the alignment."""
    from pseudosel import DistributionAlignment, DistributionAlignmentQueue

    def usb(name: str, ema: bool):
        def build(setting: Setting) -> _Side:
            options = {"momentum": setting.momentum} if ema else {}
            with contextlib.redirect_stdout(io.StringIO()):  # the hooks print their target
                hook = _hook("hooks", name)(num_classes, **options)
            algorithm = _algorithm()

            def step(batch: dict[str, Tensor]) -> Tensor:
                return hook.dist_align(algorithm, probs_x_ulb=batch["logits"].softmax(-1))

            return _Side(step, hook)

        return build

    def ours(cls, ema: bool):
        def build(setting: Setting, validate: bool = True, **overrides: Any) -> _Side:
            options = {"momentum": setting.momentum} if ema else {}
            module = cls(num_classes, validate=validate, **{**options, **overrides}).train()
            return _Side(lambda batch: module(batch["logits"].softmax(-1)), module)

        return build

    def aligned(ours_probs, usb_probs) -> str:
        if torch.allclose(ours_probs, usb_probs, rtol=1e-5, atol=1e-7):
            return ""
        gap = float((ours_probs - usb_probs).abs().max())
        return f"aligned probabilities differ by up to {gap:.3g}"

    return [
        _Pair("distribution alignment", "DistAlignEMAHook",
              ours(DistributionAlignment, ema=True), usb("DistAlignEMAHook", ema=True),
              aligned, {"p_model": "p_model"}),
        _Pair("distribution alignment (queue)", "DistAlignQueueHook",
              ours(DistributionAlignmentQueue, ema=False), usb("DistAlignQueueHook", ema=False),
              aligned, {"p_model": "p_model", "p_model_ptr": "p_model_ptr"}),
    ]  # fmt: skip
