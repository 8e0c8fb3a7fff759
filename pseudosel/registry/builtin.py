"""pseudosel's own selectors, each declared once (the only list of selector names).

Adding a selector: write its functional file (``pseudosel/functional/<name>.py``), its
module file when it keeps state (``pseudosel/selectors/<name>.py``), and one
:func:`~pseudosel.registry.register_selector` call here (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pseudosel import functional as F
from pseudosel import selectors as S
from pseudosel.registry import MISSING, BenchCase, StatefulCores, UsbMapping, register_selector

__all__: list[str] = []


def _every_ten_epochs(algorithm: Any) -> Any:
    """USB's Dash moves ρ every 10 epochs."""
    per_epoch = getattr(algorithm, "num_iter_per_epoch", None)
    return 10 * per_epoch if per_epoch else MISSING


def _training_steps(algorithm: Any) -> Any:
    """U2PL anneals α over the whole run: USB's ``num_train_iter``."""
    return getattr(algorithm, "num_train_iter", None) or MISSING


def _adsh_step(module: S.AdshSelector, probs: Tensor, valid: Tensor | None, *, index: Tensor):
    """Adsh as a per-step loop: select with the current scores, record the batch, and
    recompute the scores from everything recorded so far (USB recomputes once per epoch
    over the whole unlabelled set; per step, the last pass uses the earlier ones)."""
    selection = module(probs, valid=valid)
    module.update(probs, index, valid=valid)
    module.calibrate(reset=False)
    return selection


def _shrinkmatch_step(module: S.ShrinkMatchSelector, probs: Tensor, valid: Tensor | None):
    """ShrinkMatch's step: the certain set (advancing the certain share), then the shrunk
    class space of the same batch with that share (the loss's inputs)."""
    selection = module(probs, valid=valid)
    module.shrink(probs, valid=valid)
    return selection


def _corrmatch_init(num_classes: int) -> F.CorrMatchState:
    return F.corrmatch_init()


def _flexmatch_classwise_init(num_classes: int) -> F.FlexMatchState:
    return F.flexmatch_init(num_classes)


SOFTMAX_SIGMOID = ("softmax", "sigmoid")
EVERY_OUTPUT = ("softmax", "sigmoid", "multilabel")

register_selector(
    "csl",
    F.csl,
    module=S.CSLSelector,
    inputs=EVERY_OUTPUT,
    bench=(BenchCase("csl", validate=True, compiled=True),),
    summary="threshold-free per-image split in (confidence, residual variance); soft weights",
    source="Liu & Liu, ICCV 2025 (authors' ICCV code as defaults)",
    builtin=True,
)
register_selector(
    "csl_covar",
    F.csl_covar,
    module=S.CSLSelector,
    inputs=EVERY_OUTPUT,
    summary="CSL as the CoVar code configures it (linear cluster rule, g scaled by 0.5)",
    source="Liu & Liu, CoVar code",
    builtin=True,
)
register_selector(
    "csl_max_margin",
    F.csl_max_margin,
    module=S.CSLSelector,
    inputs=EVERY_OUTPUT,
    requires=("cvxpy", "cvxpylayers"),
    summary="experimental: CSL with a max-margin (SVM) boundary per image",
    source="beyond the paper",
    builtin=True,
)
register_selector(
    "threshold",
    F.threshold,
    module=S.ThresholdSelector,
    inputs=EVERY_OUTPUT,
    usb=UsbMapping(settings={"tau": "p_cutoff"}, hook="FixedThresholdingHook"),
    bench=(BenchCase("threshold", validate=True, compiled=True),),
    examples={"default": {"tau": 0.6}},
    value_option="tau",
    summary="fixed confidence threshold, mask = max p >= tau (0.95)",
    source="FixMatch (Sohn et al., NeurIPS 2020), UniMatch",
    builtin=True,
)
register_selector(
    "adamatch",
    F.adamatch,
    module=S.AdaMatchSelector,
    needs=("labeled",),
    inputs=EVERY_OUTPUT,
    process_group=True,
    usb=UsbMapping(settings={"tau": "p_cutoff"}, hook="AdaMatchThresholdingHook"),
    bench=(BenchCase("adamatch"),),
    examples={"default": {"tau": 0.7}},
    value_option="tau",
    summary="relative threshold: tau x mean confidence of the labelled weak batch",
    source="AdaMatch (Berthelot et al., ICLR 2022), USB",
    builtin=True,
)
register_selector(
    "entropy_split",
    F.entropy_split,
    inputs=EVERY_OUTPUT,
    process_group=True,
    value_option="unreliable",
    summary="reliable = entropy below the (1 - alpha)-quantile, fixed alpha",
    source="U2PL (Wang et al., CVPR 2022)",
    builtin=True,
)
register_selector(
    "top_ratio",
    F.top_ratio,
    module=S.TopRatioSelector,
    inputs=EVERY_OUTPUT,
    process_group=True,
    bench=(BenchCase("top_ratio"),),
    examples={"default": {"ratio": 0.3}},
    value_option="ratio",
    summary="the top share of all positions by confidence, weighted by it",
    source="Dense Teacher (Zhou et al., ECCV 2022)",
    builtin=True,
)
register_selector(
    "dual_threshold",
    F.dual_threshold,
    module=S.DualThresholdSelector,
    inputs=EVERY_OUTPUT,
    bench=(BenchCase("dual_threshold"),),
    examples={"default": {"low": 0.3, "high": 0.7}},
    value_option="high",
    summary="certain (>= high) pseudo-labels; the uncertain ones (>= low) apart, for objectness",
    source="Efficient Teacher (Xu et al., 2023)",
    builtin=True,
)
register_selector(
    "shrinkmatch",
    S.ShrinkMatchSelector,
    inputs=EVERY_OUTPUT,
    process_group=True,
    train_step=_shrinkmatch_step,
    bench=(BenchCase("shrinkmatch step"),),
    examples={"default": {"tau": 0.7, "momentum": 0.9}, "restart": {"reset_every": 2}},
    value_option="tau",
    summary="certain set (max p >= tau); the uncertain rest trains in a shrunk class space",
    source="ShrinkMatch (Yang et al., ICCV 2023)",
    builtin=True,
)
register_selector(
    "gmm",
    S.GMMThresholdSelector,
    process_group=True,
    bench=(BenchCase("gmm step"),),
    examples={"default": {"num_scores": 24}, "middle": {"num_scores": 24, "policy": "middle"}},
    summary="per-class thresholds from a two-Gaussian mixture over each class's last scores",
    source="Consistent-Teacher (Wang et al., CVPR 2023)",
    builtin=True,
)
register_selector(
    "class_prior",
    S.ClassPriorSelector,
    process_group=True,
    bench=(BenchCase("class_prior step"),),
    examples={
        "default": {"tau": 0.7},
        "explicit_prior": {"prior": "uniform", "kept_share": 0.5, "momentum": 0.5},
    },
    value_option="kept_share",
    summary="per-class cuts keeping pseudo-labels in the labelled class proportions",
    source="DARS (He et al., ICCV 2021); LabelMatch (Chen et al., CVPR 2022)",
    builtin=True,
)
register_selector(
    "flexmatch",
    S.FlexMatchSelector,
    needs=("index",),
    process_group=True,
    cores=StatefulCores(_flexmatch_classwise_init, F.flexmatch_update, F.flexmatch_select),
    usb=UsbMapping(
        settings={"num_unlabeled": "ulb_dest_len", "tau": "p_cutoff", "warmup": "thresh_warmup"},
        state={"classwise_acc": "classwise_acc", "selected_label": "selected_label"},
        initial={
            "classwise_acc": lambda k, n: torch.zeros(k),
            "selected_label": lambda k, n: torch.full((n,), -1, dtype=torch.long),
        },
        hook="FlexMatchThresholdingHook",
    ),
    bench=(
        BenchCase("flexmatch step (per-sample)", dense=False),
        BenchCase("flexmatch step (class-wise)", dense=True),
    ),
    examples={
        "per_sample": {"tau": 0.6},
        "class_wise": {"tau": 0.6, "num_unlabeled": None},
    },
    value_option="tau",
    summary="class-wise curriculum thresholds tau x M(beta(k)) from per-sample records",
    source="FlexMatch (Zhang et al., NeurIPS 2021), USB",
    builtin=True,
)
register_selector(
    "freematch",
    S.FreeMatchSelector,
    process_group=True,
    cores=StatefulCores(F.freematch_init, F.freematch_update, F.freematch_select),
    usb=UsbMapping(
        settings={
            "momentum": "ema_p",
            "use_quantile": "use_quantile",
            "clip_thresh": "clip_thresh",
        },
        state={"p_model": "p_model", "time_p": "time_p", "label_hist": "label_hist"},
        initial={
            "p_model": lambda k, n: torch.full((k,), 1.0 / k),
            "time_p": lambda k, n: torch.tensor(1.0 / k),
            "label_hist": lambda k, n: torch.full((k,), 1.0 / k),
        },
        hook="FreeMatchThresholdingHook",
    ),
    bench=(
        BenchCase("freematch step"),
        BenchCase("freematch step (quantile)", {"use_quantile": True}),
    ),
    examples={
        "default": {"momentum": 0.9},
        "quantile": {"use_quantile": True, "clip_thresh": True},
    },
    summary="self-adaptive global threshold times a class-wise factor (EMA statistics)",
    source="FreeMatch (Wang et al., ICLR 2023), USB",
    builtin=True,
)
register_selector(
    "softmatch",
    S.SoftMatchSelector,
    process_group=True,
    cores=StatefulCores(F.softmatch_init, F.softmatch_update, F.softmatch_select),
    usb=UsbMapping(
        settings={"momentum": "ema_p", "n_sigma": "n_sigma", "per_class": "per_class"},
        state={"prob_max_mu_t": "mu", "prob_max_var_t": "var"},
        initial={
            "prob_max_mu_t": lambda k, n: torch.tensor(1.0 / k),
            "prob_max_var_t": lambda k, n: torch.tensor(1.0),
        },
        hook="SoftMatchWeightingHook",
    ),
    bench=(
        BenchCase("softmatch step"),
        BenchCase("softmatch step (per class)", {"per_class": True}),
    ),
    examples={"default": {"momentum": 0.9}, "per_class": {"momentum": 0.9, "per_class": True}},
    summary="truncated-Gaussian soft weights on the confidence (EMA mean and variance)",
    source="SoftMatch (Chen et al., ICLR 2023), USB",
    builtin=True,
)
register_selector(
    "corrmatch",
    S.CorrMatchSelector,
    process_group=True,
    cores=StatefulCores(_corrmatch_init, F.corrmatch_update, F.corrmatch_select),
    bench=(BenchCase("corrmatch step"),),
    examples={"default": {"momentum": 0.9}},
    summary="global threshold: EMA of the mean per-class maximum confidence",
    source="CorrMatch (Sun et al., CVPR 2024)",
    builtin=True,
)
register_selector(
    "dash",
    S.DashSelector,
    inputs=EVERY_OUTPUT,
    usb=UsbMapping(
        settings={
            "rho_init": "rho_init",
            "update_every": _every_ten_epochs,
            "gamma": "gamma",
            "c": "C",
            "rho_min": "rho_min",
            "T": "T",
        },
        state={"rho_init": "rho_init", "rho": "rho", "rho_update_cnt": "update_count"},
        initial={
            "rho_init": lambda k, n: None,
            "rho": lambda k, n: None,
            "rho_update_cnt": lambda k, n: 0,
        },
        hook="DashThresholdingHook",
    ),
    bench=(BenchCase("dash step", {"rho_init": 1.0, "update_every": 100}),),
    examples={"default": {"rho_init": 0.8, "update_every": 2}},
    summary="keep positions whose pseudo-label loss is below a decaying rho_t",
    source="Dash (Xu et al., ICML 2021), USB",
    builtin=True,
)
register_selector(
    "u2pl",
    S.EntropySplitSelector,
    inputs=EVERY_OUTPUT,
    process_group=True,
    usb=UsbMapping(settings={"total_steps": _training_steps}),
    bench=(BenchCase("u2pl entropy split step", {"total_steps": 10_000}),),
    examples={"default": {"total_steps": 5}},
    summary="entropy split with U2PL's annealed unreliable share alpha_t",
    source="U2PL (Wang et al., CVPR 2022)",
    builtin=True,
)
register_selector(
    "s4mc",
    S.S4MCSelector,
    classification=False,
    process_group=True,
    bench=(BenchCase("s4mc step", {"total_steps": 10_000}, dense=True),),
    examples={
        "default": {"total_steps": 5},
        "neighbours": {
            "total_steps": 4,
            "connectivity": 8,
            "num_neighbours": 2,
            "indicator": "confidence",
        },
    },
    summary="margins refined by the best neighbours vs a percentile kept share rising to 100%",
    source="S4MC (Kimhi et al., TMLR 2024 / arXiv:2308.13900)",
    builtin=True,
)
register_selector(
    "adsh",
    S.AdshSelector,
    needs=("index",),
    dense=False,
    process_group=True,
    train_step=_adsh_step,
    examples={"default": {"tau_1": 0.6}},
    summary="class-wise thresholds for imbalanced data, rescaled per pass",
    source="Adsh (Guo & Li, ICML 2022), USB",
    builtin=True,
)
register_selector(
    "cgmatch",
    S.CGMatchSelector,
    needs=("index",),
    dense=False,
    process_group=True,
    bench=(BenchCase("cgmatch step", dense=False),),
    examples={
        "default": {"momentum": 0.9},
        "per_class_window": {"momentum": 0.9, "per_class": True, "window": 4},
    },
    summary="easy = confidence >= its EMA; ambiguous = below it with a count gap >= its EMA",
    source="CGMatch (Cheng et al., CVPR 2025)",
    builtin=True,
)
register_selector(
    "precision_target",
    S.PrecisionTargetSelector,
    needs=("heldout",),
    process_group=True,
    examples={"fallback": {"fallback_tau": 0.6}},
    summary="experimental: the lowest threshold certified to reach precision 1 - epsilon",
    source="pseudosel (Clopper-Pearson, fixed-sequence testing)",
    builtin=True,
)
