"""CSL, the convex-separation selector, as a module."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from pseudosel import functional as F
from pseudosel.functional.csl import check_csl_options
from pseudosel.selection import Selection

__all__ = ["CSLSelector"]


class CSLSelector(nn.Module):
    """CSL, the convex-separation selector (ICCV 2025): per-image boundary, soft weights.

    Stateless: every call splits each group (image, or batch for (N, K) input) afresh.
    Options and defaults are those of :func:`pseudosel.functional.csl`; they are kept in
    the ``options`` dict.

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
        solver: str = "closed_form",
        boundary: str = "paper",
        max_points: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.options: dict[str, Any] = dict(
            alpha=alpha,
            group=group,
            cluster_rule=cluster_rule,
            residual=residual,
            g_scale=g_scale,
            min_var=min_var,
            eps=eps,
            solver=solver,
            boundary=boundary,
            max_points=max_points,
        )
        check_csl_options(**self.options)
        self.seed = seed
        self.validate = bool(validate)

    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """Select on ``probs``; see :func:`pseudosel.functional.csl`."""
        return F.csl(probs, valid=valid, validate=self.validate, seed=self.seed, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.options.items())
