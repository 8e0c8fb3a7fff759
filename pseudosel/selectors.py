"""Selectors as ``nn.Module``s: hold the options (and, for adaptive ones, state) and call
:mod:`pseudosel.functional`."""

from __future__ import annotations

from torch import Tensor, nn

from pseudosel import functional as F
from pseudosel.functional.csl import check_csl_options
from pseudosel.selection import Selection
from pseudosel.validation import check_real

__all__ = ["CSLSelector", "ThresholdSelector"]


class ThresholdSelector(nn.Module):
    """Fixed confidence threshold (FixMatch): mask = max p >= tau. Stateless.

    Args:
        tau: threshold in [0, 1]. Default 0.95 (FixMatch, UniMatch).
        validate: check input values on every call (default True).

    Shape:
        probs (N, K) or (N, K, *spatial); valid (N, *spatial); every Selection field
        (N, *spatial).

    Example:
        >>> import torch
        >>> from pseudosel import ThresholdSelector
        >>> selector = ThresholdSelector(tau=0.9)
        >>> selector(torch.tensor([[0.95, 0.05]])).mask
        tensor([True])
    """

    def __init__(self, tau: float = 0.95, *, validate: bool = True) -> None:
        super().__init__()
        self.tau = check_real("tau", tau, low=0.0, high=1.0)
        self.validate = bool(validate)

    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """Select on ``probs``; see :func:`pseudosel.functional.threshold`."""
        return F.threshold(probs, self.tau, valid=valid, validate=self.validate)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


class CSLSelector(nn.Module):
    """CSL, the convex-separation selector (ICCV 2025): per-image boundary, soft weights.

    Stateless: every call splits each group (image, or batch for (N, K) input) afresh.
    Options and defaults are those of :func:`pseudosel.functional.csl`.

    Shape:
        probs (N, K) or (N, K, *spatial) with K >= 2; valid (N, *spatial); every Selection
        field (N, *spatial).

    Example:
        >>> import torch
        >>> from pseudosel import CSLSelector
        >>> selector = CSLSelector(alpha=8.0)
        >>> sel = selector(torch.randn(2, 4, 16, 16).softmax(1))
        >>> sel.weight.shape
        torch.Size([2, 16, 16])
    """

    def __init__(
        self,
        *,
        alpha: float = 2.0,
        group: str = "auto",
        cluster_rule: str = "confidence",
        residual: str = "theory",
        g_scale: float = 1.0,
        min_var: float = 0.0,
        eps: float = 1e-8,
        validate: bool = True,
    ) -> None:
        super().__init__()
        check_csl_options(
            alpha=alpha,
            group=group,
            cluster_rule=cluster_rule,
            residual=residual,
            g_scale=g_scale,
            min_var=min_var,
            eps=eps,
        )
        self.alpha = float(alpha)
        self.group = group
        self.cluster_rule = cluster_rule
        self.residual = residual
        self.g_scale = float(g_scale)
        self.min_var = float(min_var)
        self.eps = float(eps)
        self.validate = bool(validate)

    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """Select on ``probs``; see :func:`pseudosel.functional.csl`."""
        return F.csl(
            probs,
            alpha=self.alpha,
            group=self.group,
            cluster_rule=self.cluster_rule,
            residual=self.residual,
            g_scale=self.g_scale,
            min_var=self.min_var,
            eps=self.eps,
            valid=valid,
            validate=self.validate,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, group={self.group!r}, cluster_rule={self.cluster_rule!r}, "
            f"residual={self.residual!r}, g_scale={self.g_scale}, min_var={self.min_var}, "
            f"eps={self.eps}"
        )
