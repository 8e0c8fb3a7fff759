"""Selectors as ``nn.Module``s, one file per selector beside its functional twin
(``pseudosel/functional/flexmatch.py`` ↔ ``pseudosel/selectors/flexmatch.py``): they hold the
options and, for adaptive ones, their state in registered buffers, and call
:mod:`pseudosel.functional`.

Stateful selectors follow BatchNorm's convention: in training mode ``forward`` advances the
statistics and selects, in the order the published method uses; in eval mode it selects
with frozen state. ``update`` is public for users who drive the two steps themselves.
State round-trips through ``state_dict`` exactly. Selection never builds an autograd graph:
inputs are detached and buffers never carry history.
"""

from pseudosel.selectors._base import Alignment, Selector
from pseudosel.selectors.adamatch import AdaMatchSelector
from pseudosel.selectors.adsh import AdshSelector
from pseudosel.selectors.alignment import DistributionAlignment
from pseudosel.selectors.alignment_queue import DistributionAlignmentQueue
from pseudosel.selectors.cgmatch import CGMatchSelector
from pseudosel.selectors.class_prior import ClassPriorSelector
from pseudosel.selectors.corrmatch import CorrMatchSelector
from pseudosel.selectors.csl import CSLSelector
from pseudosel.selectors.dash import DashSelector
from pseudosel.selectors.dual_threshold import DualThresholdSelector
from pseudosel.selectors.entropy_split import EntropySplitSelector
from pseudosel.selectors.flexmatch import FlexMatchSelector
from pseudosel.selectors.freematch import FreeMatchSelector
from pseudosel.selectors.gmm import GMMThresholdSelector
from pseudosel.selectors.precision import PrecisionTargetSelector
from pseudosel.selectors.s4mc import S4MCSelector
from pseudosel.selectors.shrinkmatch import ShrinkMatchSelector
from pseudosel.selectors.softmatch import SoftMatchSelector
from pseudosel.selectors.threshold import ThresholdSelector
from pseudosel.selectors.top_ratio import TopRatioSelector

__all__ = [
    "AdaMatchSelector",
    "Alignment",
    "AdshSelector",
    "CGMatchSelector",
    "CSLSelector",
    "ClassPriorSelector",
    "CorrMatchSelector",
    "DashSelector",
    "DistributionAlignment",
    "DistributionAlignmentQueue",
    "DualThresholdSelector",
    "EntropySplitSelector",
    "FlexMatchSelector",
    "FreeMatchSelector",
    "GMMThresholdSelector",
    "PrecisionTargetSelector",
    "S4MCSelector",
    "Selector",
    "ShrinkMatchSelector",
    "SoftMatchSelector",
    "ThresholdSelector",
    "TopRatioSelector",
]
