"""Stateless selectors and the explicit-state cores of the adaptive ones:
``pseudosel.functional`` is to ``pseudosel`` what ``torch.nn.functional`` is to ``torch.nn``.
Selectors take probabilities (N, K, *spatial) and return a :class:`~pseudosel.Selection`.

The stages of the stateful cores (``*_update``, ``*_select``, ``align*``) take input first,
then state, then ``valid=``, and the front door's ``validate=`` and ``activation=``
(:func:`~pseudosel.inputs.per_class_inputs`: binary sigmoid outputs only)."""

from pseudosel.activation import class_probs
from pseudosel.functional.adamatch import adamatch
from pseudosel.functional.adsh import (
    AdshState,
    adsh_calibrate,
    adsh_init,
    adsh_recompute,
    adsh_select,
    adsh_thresholds,
)
from pseudosel.functional.alignment import AlignmentState, align, alignment_update
from pseudosel.functional.alignment_queue import (
    AlignmentQueueState,
    align_queue,
    alignment_queue_init,
    alignment_queue_update,
)
from pseudosel.functional.cgmatch import (
    CGMatchState,
    ambiguous_positions,
    cgmatch_ambiguous_weight,
    cgmatch_init,
    cgmatch_record,
    cgmatch_select,
    cgmatch_update,
    count_gap,
)
from pseudosel.functional.class_prior import check_prior, class_prior, class_prior_thresholds
from pseudosel.functional.clopper_pearson import (
    betainc,
    betainc_iterations,
    binomial_tail,
    clopper_pearson_lower,
)
from pseudosel.functional.corrmatch import (
    CorrMatchState,
    corrmatch_class_max,
    corrmatch_init,
    corrmatch_select,
    corrmatch_update,
)
from pseudosel.functional.csl import csl, csl_covar, csl_max_margin
from pseudosel.functional.dash import dash_rho, dash_select
from pseudosel.functional.dual_threshold import dual_threshold, uncertain_positions
from pseudosel.functional.entropy_split import entropy_split, split_by_entropy
from pseudosel.functional.flexmatch import (
    FlexMatchState,
    flexmatch_classwise_acc,
    flexmatch_init,
    flexmatch_record_classes,
    flexmatch_record_samples,
    flexmatch_select,
    flexmatch_thresholds,
    flexmatch_update,
)
from pseudosel.functional.freematch import (
    FreeMatchState,
    freematch_init,
    freematch_select,
    freematch_update,
)
from pseudosel.functional.gmm import (
    GMM_POLICIES,
    gmm_thresholds,
    score_queue_update,
    total_score_cut,
)
from pseudosel.functional.precision import (
    PrecisionTargetState,
    certified_threshold,
    precision_candidates,
    precision_counts,
    precision_target_calibrate,
    precision_target_init,
    precision_target_observe,
    precision_target_select,
    precision_target_update,
)
from pseudosel.functional.quantile import masked_quantile
from pseudosel.functional.s4mc import s4mc, s4mc_refine
from pseudosel.functional.shrinkmatch import ShrunkClasses, shrink_classes, shrinkmatch
from pseudosel.functional.softmatch import (
    SoftMatchState,
    softmatch_init,
    softmatch_select,
    softmatch_update,
)
from pseudosel.functional.threshold import class_threshold_selection, threshold
from pseudosel.functional.top_ratio import top_ratio

__all__ = [
    "AdshState",
    "AlignmentQueueState",
    "AlignmentState",
    "CGMatchState",
    "CorrMatchState",
    "FlexMatchState",
    "FreeMatchState",
    "GMM_POLICIES",
    "PrecisionTargetState",
    "ShrunkClasses",
    "SoftMatchState",
    "adamatch",
    "adsh_calibrate",
    "adsh_init",
    "adsh_recompute",
    "adsh_select",
    "adsh_thresholds",
    "align",
    "align_queue",
    "alignment_queue_init",
    "alignment_queue_update",
    "alignment_update",
    "ambiguous_positions",
    "betainc",
    "betainc_iterations",
    "binomial_tail",
    "certified_threshold",
    "cgmatch_ambiguous_weight",
    "cgmatch_init",
    "cgmatch_record",
    "cgmatch_select",
    "cgmatch_update",
    "check_prior",
    "class_prior",
    "class_prior_thresholds",
    "class_probs",
    "class_threshold_selection",
    "clopper_pearson_lower",
    "corrmatch_class_max",
    "corrmatch_init",
    "corrmatch_select",
    "corrmatch_update",
    "count_gap",
    "csl",
    "csl_covar",
    "csl_max_margin",
    "dash_rho",
    "dash_select",
    "dual_threshold",
    "entropy_split",
    "flexmatch_classwise_acc",
    "flexmatch_init",
    "flexmatch_record_classes",
    "flexmatch_record_samples",
    "flexmatch_select",
    "flexmatch_thresholds",
    "flexmatch_update",
    "freematch_init",
    "freematch_select",
    "freematch_update",
    "gmm_thresholds",
    "masked_quantile",
    "precision_candidates",
    "precision_counts",
    "precision_target_calibrate",
    "precision_target_init",
    "precision_target_observe",
    "precision_target_select",
    "precision_target_update",
    "s4mc",
    "s4mc_refine",
    "score_queue_update",
    "shrink_classes",
    "shrinkmatch",
    "softmatch_init",
    "softmatch_select",
    "softmatch_update",
    "split_by_entropy",
    "threshold",
    "top_ratio",
    "total_score_cut",
    "uncertain_positions",
]
