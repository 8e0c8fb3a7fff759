"""CSL, the convex-separation selector, as a module."""

from __future__ import annotations

import functools
from typing import Any

from torch import Tensor

from pseudosel import functional as F
from pseudosel._deprecation import renamed_keywords
from pseudosel._grad import no_grad
from pseudosel.compiled import compiled
from pseudosel.features import DEFAULT_RESIDUAL
from pseudosel.functional.csl import CSL_PRESETS, check_csl_options
from pseudosel.functional.separation import load_variants
from pseudosel.selection import Selection
from pseudosel.selectors._base import Selector, check_backend
from pseudosel.validation import check_choice

__all__ = ["CSLSelector"]


class CSLSelector(Selector):
    """CSL, the convex-separation selector (ICCV 2025): per-image boundary, soft weights.

    Stateless: every call splits each group (image, or batch for (N, K) input) afresh.
    Options and defaults are those of :func:`pseudosel.functional.csl` — the authors'
    published ICCV code; they are kept in the ``options`` dict. :meth:`preset` builds one
    from a named configuration (``"csl"``, ``"csl_covar"``). ``compile=True`` runs the
    compiled path (:mod:`pseudosel.compiled`: compiled on the first call, batch size
    dynamic); default False (eager). ``backend``: ``"auto"`` (default), ``"eager"``,
    ``"compiled"`` (the same as ``compile=True``) or ``"triton"`` (CUDA), as in
    :func:`pseudosel.functional.csl`. ``validate``, ``activation``, ``multilabel`` and
    ``weighting`` are the options every selector module shares
    (:mod:`pseudosel.selectors._base`): ``activation="sigmoid"`` takes binary
    (N, 1, *spatial) or multi-label (N, L, *spatial) sigmoid outputs (one boundary per label
    by default; docs/binary.md), ``weighting="hard"`` returns the trusted set as 0/1
    weights.

    Shape:
        probs (N, K) or (N, K, *spatial) with K >= 2; valid (N, *spatial); every Selection
        field (N, *spatial). Multi-label sigmoid probs (N, L, *spatial): valid and the
        fields (N, L, *spatial).

    Example:
        >>> import torch
        >>> from pseudosel import CSLSelector
        >>> selector = CSLSelector(alpha=8.0)
        >>> sel = selector(torch.randn(2, 4, 16, 16).softmax(1))
        >>> sel.weight.shape
        torch.Size([2, 16, 16])
    """

    @renamed_keywords("CSLSelector", group="scope")
    def __init__(
        self,
        *,
        alpha: float = 2.0,
        scope: str = "auto",
        cluster_rule: str = "confidence",
        residual: str = DEFAULT_RESIDUAL,
        g_scale: float = 1.0,
        min_var: float = 0.0,
        eps: float = 1e-8,
        rank_one_guard: bool = False,
        solver: str = "closed_form",
        boundary: str = "paper",
        max_points: int = 256,
        seed: int = 0,
        compile: bool = False,
        backend: str = "auto",
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.options: dict[str, Any] = dict(
            alpha=alpha,
            scope=scope,
            cluster_rule=cluster_rule,
            residual=residual,
            g_scale=g_scale,
            min_var=min_var,
            eps=eps,
            rank_one_guard=rank_one_guard,
            solver=solver,
            boundary=boundary,
            max_points=max_points,
        )
        load_variants(self.options)  # solver="cvxpy" / boundary="max_margin" plug in
        check_csl_options(**self.options)
        self.seed = seed
        self.backend = check_backend(backend, compile)
        self.compile = bool(compile) or self.backend == "compiled"
        if self.compile:
            self._select = compiled(F.csl)
        else:
            self._select = functools.partial(F.csl, backend=self.backend)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> CSLSelector:
        """A selector with the named configuration of ``CSL_PRESETS``, options overridden.

        ``"csl"``: the ICCV 2025 code (the defaults); ``"csl_covar"``: the CoVar code
        (linear cluster rule, λ = 0.25, g_scale = 0.5). See docs/csl.md.

        Example:
            >>> from pseudosel import CSLSelector
            >>> CSLSelector.preset("csl_covar", alpha=8.0).options["cluster_rule"]
            'linear'
        """
        check_choice("preset", name, CSL_PRESETS)
        return cls(**{**CSL_PRESETS[name], **overrides})

    @no_grad
    def forward(self, probs: Tensor, valid: Tensor | None = None) -> Selection:
        """Select on ``probs``; see :func:`pseudosel.functional.csl`."""
        selection = self._select(
            probs,
            valid=valid,
            validate=self.validate,
            seed=self.seed,
            activation=self.activation,
            multilabel=self.multilabel,
            **self.options,
        )
        return self.finish(selection)

    def extra_repr(self) -> str:
        items = {
            **self.options,
            "compile": self.compile,
            "backend": self.backend,
            **self.shared_options(),
        }
        return ", ".join(f"{key}={value!r}" for key, value in items.items())
