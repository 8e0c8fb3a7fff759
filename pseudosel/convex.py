"""CSL's split as the convex program it is, solved with cvxpy / cvxpylayers.

CSL_SPEC.md §3: the per-group split is the spectral relaxation of 2-way k-means. Its top
direction e₁ is the optimum of the tight semidefinite program

    maximise tr(M W)  subject to  W ⪰ 0,  tr W = 1,

over the group's 2x2 second-moment matrix M = XᵀX (the optimum is λ₁ at W = e₁e₁ᵀ), and on
the points themselves the Fantope SDP max ⟨XXᵀ, P⟩ s.t. 0 ⪯ P ⪯ I, tr P = 2 attains λ₁ + λ₂.
The training path (:func:`pseudosel.functional.csl`) uses the closed form; this module is the
reference and differentiable path, and :func:`certify` the evidence that both agree.

It is a reference, not a training path: the SDP costs orders of magnitude more per group
than the closed form (benchmarks/RESULTS.md).
Importing it imports cvxpy and cvxpylayers; ``import pseudosel`` does not.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import torch
from torch import Tensor, nn

from pseudosel.functional.separation import Axes, principal_axes, register_axes_solver

__all__ = [
    "Certificate",
    "ConvexSeparation",
    "SOLVER_RANK_ONE_RATIO",
    "Separation",
    "certify",
    "check_solver",
    "convex_axes",
    "fantope_optimum",
    "separation_problem",
    "solve_separation",
]

# Solvers the differentiable layer can use (diffcp's conic back ends) ...
_LAYER_METHODS = {"CLARABEL": "Clarabel", "SCS": "SCS", "ECOS": "ECOS"}
# ... and their settings: tight enough that the optimum matches λ₁ to ~1e-9.
_SOLVER_ARGS = {
    "CLARABEL": {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12},
    "SCS": {"eps_abs": 1e-10, "eps_rel": 1e-10, "max_iters": 100_000},
    "ECOS": {"abstol": 1e-10, "reltol": 1e-10, "feastol": 1e-10},
}
# With a solver in the loop λ₂ = tr M - λ₁ carries the solver's error (~1e-13 of tr M at
# the settings above), so a group counts as rank one below this ratio (closed form: 1e-12).
SOLVER_RANK_ONE_RATIO = 1e-10
_FANTOPE_MAX_POINTS = 64


@contextmanager
def _quiet_cvxpylayers() -> Iterator[None]:
    """Silence the one numpy-2 DeprecationWarning diffcp's interface raises, nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"__array__ implementation doesn't accept a copy keyword",
            category=DeprecationWarning,
            module=r"cvxpylayers\.",
        )
        yield


def check_solver(solver: str) -> str:
    """Return the canonical name of ``solver``; raise naming the installed solvers.

    Example:
        >>> from pseudosel.convex import check_solver
        >>> check_solver("clarabel")
        'CLARABEL'
    """
    installed = cp.installed_solvers()
    usable = [name for name in _LAYER_METHODS if name in installed]
    if not isinstance(solver, str) or solver.upper() not in usable:
        raise ValueError(
            f"solver must be one of the installed conic solvers cvxpylayers can use, "
            f"{usable}, got {solver!r} (cvxpy.installed_solvers(): {installed})"
        )
    return solver.upper()


@functools.lru_cache(maxsize=1)
def separation_problem() -> tuple[cp.Problem, cp.Parameter, cp.Variable]:
    """The DPP-compliant SDP  max tr(M W)  s.t.  W ⪰ 0, tr W = 1  with M a symmetric Parameter.

    Returns:
        ``(problem, M, W)``: the cvxpy problem, its (2, 2) parameter and (2, 2) variable.

    Example:
        >>> from pseudosel.convex import separation_problem
        >>> problem, moments, w = separation_problem()
        >>> problem.is_dpp(), moments.shape
        (True, (2, 2))
    """
    moments = cp.Parameter((2, 2), symmetric=True, name="M")
    w = cp.Variable((2, 2), symmetric=True, name="W")
    problem = cp.Problem(cp.Maximize(cp.trace(moments @ w)), [w >> 0, cp.trace(w) == 1])
    assert problem.is_dpp()
    return problem, moments, w


@functools.lru_cache(maxsize=4)
def _separation_layer(solver: str):
    from cvxpylayers.torch import CvxpyLayer

    problem, moments, w = separation_problem()
    args = {"solve_method": _LAYER_METHODS[solver], **_SOLVER_ARGS[solver]}
    return CvxpyLayer(problem, parameters=[moments], variables=[w], solver_args=args)


def _check_moments(moments: object) -> Tensor:
    if not isinstance(moments, Tensor) or not moments.is_floating_point():
        got = moments.dtype if isinstance(moments, Tensor) else type(moments).__name__
        raise TypeError(f"M must be a floating-point torch.Tensor, got {got}")
    if moments.dim() != 3 or moments.shape[1:] != (2, 2):
        raise ValueError(f"M must have shape (B, 2, 2), got {tuple(moments.shape)}")
    m = moments.detach().to(torch.float64)
    scale = m.abs().amax(dim=(1, 2)).clamp_min(1e-300)
    asymmetry = (m - m.mT).abs().amax(dim=(1, 2)) / scale
    if bool((asymmetry > 1e-6).any()):
        worst = int(asymmetry.argmax())
        raise ValueError(
            f"M must be symmetric: M[{worst}] differs from its transpose by "
            f"{float(asymmetry[worst]):.3g} (relative)"
        )
    smallest = torch.linalg.eigvalsh(m)[:, 0] / scale
    if bool((smallest < -1e-9).any()):
        worst = int(smallest.argmin())
        raise ValueError(
            f"M must be positive semi-definite (a second-moment matrix XᵀX): M[{worst}] has "
            f"eigenvalue {float(smallest[worst]):.3g} (relative to its largest entry)"
        )
    return moments


class _QuietSolve(torch.autograd.Function):
    """The cvxpylayers solve with its backward pass run under :func:`_quiet_cvxpylayers` too
    (the warning is raised again when diffcp computes derivatives)."""

    @staticmethod
    def forward(ctx, moments: Tensor, method: str) -> Tensor:  # type: ignore[override]
        with torch.enable_grad(), _quiet_cvxpylayers():
            inner = moments.detach().requires_grad_(True)
            (w,) = _separation_layer(method)(inner)
        ctx.inner, ctx.w = inner, w
        return w.detach()

    @staticmethod
    def backward(ctx, grad_w: Tensor):  # type: ignore[override]
        with _quiet_cvxpylayers():
            # retain_graph: the outer graph may be differentiated more than once (gradcheck)
            (grad,) = torch.autograd.grad(ctx.w, ctx.inner, grad_w, retain_graph=True)
        return grad, None


def _solve_w(moments: Tensor, method: str) -> Tensor:
    if moments.requires_grad:
        return _QuietSolve.apply(moments, method)
    with _quiet_cvxpylayers():
        (w,) = _separation_layer(method)(moments)
    return w


@dataclass
class Separation:
    """Result of :func:`solve_separation`, (B, ...) per field, in the input dtype.

    Attributes:
        w: (B, 2, 2) optimal W (≈ e₁e₁ᵀ when λ₁ > λ₂).
        direction: (B, 2) top direction e₁, sign fixed so its larger component is positive.
        value: (B,) optimum tr(M W) = λ₁.

    Example:
        >>> import torch
        >>> from pseudosel.convex import solve_separation
        >>> result = solve_separation(torch.tensor([[[1.0, 0.0], [0.0, 3.0]]]))
        >>> result.w.round(decimals=4), round(float(result.value), 4)
        (tensor([[[0., 0.],
                 [0., 1.]]]), 3.0)
    """

    w: Tensor
    direction: Tensor
    value: Tensor


def _direction_from_w(w: Tensor) -> Tensor:
    """e₁ from W = e₁e₁ᵀ: the column of W with the larger diagonal, normalised.

    Differentiable; the sign makes that component positive."""
    diagonal = w.diagonal(dim1=-2, dim2=-1)
    pick = (diagonal[:, 1] > diagonal[:, 0]).long()
    column = w.gather(2, pick.view(-1, 1, 1).expand(-1, 2, 1)).squeeze(2)
    return column / column.norm(dim=1, keepdim=True).clamp_min(1e-300)


def solve_separation(moments: Tensor, *, solver: str = "CLARABEL") -> Separation:
    """Solve the separation SDP for a batch of 2x2 second-moment matrices with cvxpylayers.

    Differentiable with respect to ``moments``. Each M is divided by its trace before the
    solve (W is scale-free; the optimum is scaled back), so accuracy does not depend on n.

    Args:
        moments: (B, 2, 2) symmetric positive semi-definite matrices M = XᵀX.
        solver: conic solver, ``"CLARABEL"`` (default), ``"SCS"`` or ``"ECOS"`` (installed).

    Returns:
        :class:`Separation` in the dtype of ``moments`` (cvxpylayers works in float64).

    Raises:
        TypeError / ValueError: not a float (B, 2, 2) tensor, not symmetric, not PSD, or an
            unknown or missing solver (the message names the installed ones).

    Example:
        >>> import torch
        >>> from pseudosel.convex import solve_separation
        >>> result = solve_separation(torch.tensor([[[4.0, 0.0], [0.0, 1.0]]]))
        >>> round(float(result.value), 4), result.direction.round(decimals=4)
        (4.0, tensor([[1., 0.]]))
    """
    method = check_solver(solver)
    moments = _check_moments(moments)
    m = moments.to(torch.float64)
    trace = m.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1e-300)
    w = m.new_zeros(0, 2, 2) if m.shape[0] == 0 else _solve_w(m / trace[:, None, None], method)
    value = (m * w).sum(dim=(1, 2))
    dtype = moments.dtype
    return Separation(w.to(dtype), _direction_from_w(w).to(dtype), value.to(dtype))


def convex_axes(moments: Tensor, *, solver: str = "CLARABEL") -> Axes:
    """The :class:`~pseudosel.functional.separation.Axes` of M from the convex program.

    e₁ comes from the SDP's optimal W, λ₁ is its optimum and λ₂ = tr M − λ₁, so the CSL
    assignment and weighting that follow are those of the closed form, fed by the solver.

    Example:
        >>> import torch
        >>> from pseudosel.convex import convex_axes
        >>> axes = convex_axes(torch.tensor([[[4.0, 0.0], [0.0, 1.0]]], dtype=torch.float64))
        >>> round(float(axes.lam1), 6), round(float(axes.lam2), 6)
        (4.0, 1.0)
    """
    result = solve_separation(moments, solver=solver)
    trace = moments.diagonal(dim1=-2, dim2=-1).sum(-1)
    lam1 = result.value
    lam2 = (trace - lam1).clamp_min(0)
    # e₁'s angle, taken from W itself (its top eigenvector) without a sign ambiguity
    axes_w = principal_axes(result.w)
    return Axes(lam1, lam2, axes_w.cos, axes_w.sin)


def fantope_optimum(points: Tensor, *, solver: str = "SCS") -> float:
    """max ⟨XXᵀ, P⟩ s.t. 0 ⪯ P ⪯ I, tr P = 2 on the (n, 2) points X (n <= 64): = λ₁ + λ₂.

    Example:
        >>> import torch
        >>> from pseudosel.convex import fantope_optimum
        >>> round(fantope_optimum(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])), 5)
        7.0
    """
    x = points.detach().to(torch.float64).cpu().numpy()
    n = x.shape[0]
    if n > _FANTOPE_MAX_POINTS:
        raise ValueError(f"the Fantope SDP is solved for n <= {_FANTOPE_MAX_POINTS}, got n={n}")
    gram = x @ x.T
    p = cp.Variable((n, n), symmetric=True)
    constraints = [p >> 0, cp.trace(p) == min(2, n)]
    if n > 1:
        constraints.append(torch.eye(n, dtype=torch.float64).numpy() - p >> 0)
    problem = cp.Problem(cp.Maximize(cp.trace(gram @ p)), constraints)
    method = check_solver(solver)
    problem.solve(solver=method, **_SOLVER_ARGS[method])
    return float(problem.value)


@dataclass
class Certificate:
    """Per-group agreement of the closed-form kernel with the convex program.

    Attributes (one entry per group):
        convex_optimum: optimum of the 2x2 SDP (λ₁ by the solver).
        closed_form_lambda1: λ₁ of the closed-form kernel.
        relative_gap: |convex − closed form| / closed form.
        same_assignment: share of valid positions put in the same cluster by both paths.
        fantope_optimum: Fantope SDP optimum for groups with <= 64 valid positions (else nan).
        closed_form_lambda_sum: λ₁ + λ₂ of the closed form (what the Fantope SDP attains).
        valid_points: number of valid positions.

    Example:
        >>> import torch
        >>> from pseudosel.convex import certify
        >>> print(certify(torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])))
        ... # doctest: +ELLIPSIS
        group | n | SDP optimum | closed-form λ1 | rel. gap | same assignment | Fantope | λ1 + λ2
        0 | 3 | ...
    """

    convex_optimum: list[float]
    closed_form_lambda1: list[float]
    relative_gap: list[float]
    same_assignment: list[float]
    fantope_optimum: list[float]
    closed_form_lambda_sum: list[float]
    valid_points: list[int]

    def max_relative_gap(self) -> float:
        """Largest relative gap between the solver's optimum and the closed-form λ₁."""
        return max(self.relative_gap, default=0.0)

    def __str__(self) -> str:
        lines = [
            "group | n | SDP optimum | closed-form λ1 | rel. gap | same assignment "
            "| Fantope | λ1 + λ2",
        ]
        for g in range(len(self.convex_optimum)):
            lines.append(
                f"{g} | {self.valid_points[g]} | {self.convex_optimum[g]:.9g} | "
                f"{self.closed_form_lambda1[g]:.9g} | {self.relative_gap[g]:.2e} | "
                f"{self.same_assignment[g]:.4f} | {self.fantope_optimum[g]:.9g} | "
                f"{self.closed_form_lambda_sum[g]:.9g}"
            )
        return "\n".join(lines)


def certify(
    probs: Tensor,
    *,
    valid: Tensor | None = None,
    solver: str = "CLARABEL",
    fantope_solver: str = "SCS",
    **csl_options: Any,
) -> Certificate:
    """Check, group by group, that CSL's fast kernel solves the paper's convex problem.

    Runs the split twice — closed form and cvxpy — on the features of ``probs`` and reports
    the optimum of the SDP against the closed-form λ₁, the share of identical cluster
    assignments, and, for groups of at most 64 valid positions, the Fantope SDP on the points
    against λ₁ + λ₂.

    Args:
        probs: (N, K) or (N, K, *spatial) probabilities.
        valid: optional bool (N, *spatial).
        solver: solver of the 2x2 SDP (default CLARABEL).
        fantope_solver: solver of the Fantope SDP (default SCS, much faster there).
        **csl_options: ``scope``, ``residual``, ``g_scale``, ``rank_one_guard`` as for
            :func:`pseudosel.functional.csl` (same defaults).

    Returns:
        :class:`Certificate`; ``print(certificate)`` shows a table.

    Example:
        >>> import torch
        >>> from pseudosel.convex import certify
        >>> report = certify(torch.randn(2, 4, 5, 5).softmax(1))
        >>> report.max_relative_gap() < 1e-6, report.valid_points
        (True, [25, 25])
    """
    from pseudosel.features import DEFAULT_RESIDUAL, csl_features
    from pseudosel.functional.separation import (
        RANK_ONE_RATIO,
        assign_second_cluster,
        group_points,
        second_moments,
    )
    from pseudosel.validation import check_probs, resolve_valid

    check_probs(probs)
    valid = resolve_valid(probs, valid)
    c, s, _ = csl_features(
        probs,
        residual=csl_options.get("residual", DEFAULT_RESIDUAL),
        g_scale=csl_options.get("g_scale", 1.0),
    )
    guard = csl_options.get("rank_one_guard", False)
    if "group" in csl_options:
        from pseudosel._deprecation import warn_once

        warn_once(
            "certify:group", "certify(group=...) is deprecated and will be removed; use scope="
        )
    scope = csl_options.get("scope", csl_options.get("group", "auto"))
    c, s, ok = group_points(c, s, valid, scope, probs.dim())
    c = c.masked_fill(~ok, 0.0).to(torch.float64)
    s = s.masked_fill(~ok, 0.0).to(torch.float64)
    count = ok.sum(-1)
    moments = second_moments(c, s, torch.float64)
    closed = principal_axes(moments)
    convex = convex_axes(moments, solver=solver)
    same_closed = assign_second_cluster(c, s, closed, count, RANK_ONE_RATIO if guard else None) & ok
    same_convex = (
        assign_second_cluster(c, s, convex, count, SOLVER_RANK_ONE_RATIO if guard else None) & ok
    )
    agree = ((same_closed == same_convex) & ok).sum(-1) / count.clamp_min(1)
    fantope, lam_sum = [], (closed.lam1 + closed.lam2).tolist()
    for g in range(c.shape[0]):
        n = int(count[g])
        if 0 < n <= _FANTOPE_MAX_POINTS:
            points = torch.stack((c[g][ok[g]], s[g][ok[g]]), -1)
            fantope.append(fantope_optimum(points, solver=fantope_solver))
        else:
            fantope.append(float("nan"))
    lam1 = closed.lam1
    gap = (convex.lam1 - lam1).abs() / lam1.clamp_min(1e-300)
    return Certificate(
        convex_optimum=convex.lam1.tolist(),
        closed_form_lambda1=lam1.tolist(),
        relative_gap=torch.where(count > 0, gap, 0.0).tolist(),
        same_assignment=agree.tolist(),
        fantope_optimum=fantope,
        closed_form_lambda_sum=lam_sum,
        valid_points=count.tolist(),
    )


class ConvexSeparation(nn.Module):
    """Differentiable CSL split: features (B, n, 2) → top direction and soft responsibilities.

    M = XᵀX per group, the separation SDP solved by cvxpylayers (gradients by implicit
    differentiation), e₁ read off the optimal W, e₂ ⟂ e₁, λ₁ the optimum and
    λ₂ = tr M − λ₁. Responsibilities are a softmax over the two clusters of the squared
    normalised projections (x·e_j)² / λ_j divided by ``temperature``; as the temperature
    goes to 0 they approach CSL's hard assignment. Where λ₁ > λ₂ the gradients agree with
    the analytic eigenvector derivative (``torch.linalg.eigh`` backward).

    Args:
        g_scale: initial multiplier of the second feature (s). Default 1.0.
        learn_scale: make that multiplier a learnable parameter (stored as its log).
        temperature: softmax temperature of the responsibilities. Default 0.1.
        solver: conic solver, as for :func:`solve_separation`.

    Shape:
        features (B, n, 2) → direction (B, 2), responsibilities (B, n, 2).

    Example:
        >>> import torch
        >>> from pseudosel.convex import ConvexSeparation
        >>> layer = ConvexSeparation(learn_scale=True)
        >>> x = torch.rand(2, 16, 2, dtype=torch.float64)
        >>> direction, resp = layer(x)
        >>> resp.sum().backward()
        >>> layer.log_scale.grad is not None
        True
    """

    def __init__(
        self,
        *,
        g_scale: float = 1.0,
        learn_scale: bool = False,
        temperature: float = 0.1,
        solver: str = "CLARABEL",
    ) -> None:
        super().__init__()
        from pseudosel.validation import check_real

        g_scale = check_real("g_scale", g_scale, low=0.0, low_open=True)
        self.temperature = check_real("temperature", temperature, low=0.0, low_open=True)
        self.solver = check_solver(solver)
        log_scale = torch.tensor(g_scale, dtype=torch.float64).log()
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Separate each group of ``features`` (B, n, 2); see the class docstring."""
        if not isinstance(features, Tensor) or not features.is_floating_point():
            raise TypeError("features must be a floating-point torch.Tensor of shape (B, n, 2)")
        if features.dim() != 3 or features.shape[2] != 2:
            raise ValueError(f"features must have shape (B, n, 2), got {tuple(features.shape)}")
        scale = torch.stack((torch.ones_like(self.log_scale), self.log_scale.exp()))
        x = features.to(torch.float64) * scale
        moments = x.mT @ x
        result = solve_separation(moments, solver=self.solver)
        e1 = result.direction.to(torch.float64)
        e2 = torch.stack((-e1[:, 1], e1[:, 0]), -1)
        lam1 = result.value.to(torch.float64)
        lam2 = (moments.diagonal(dim1=-2, dim2=-1).sum(-1) - lam1).clamp_min(1e-12)
        proj = torch.stack(
            (
                (x @ e1.unsqueeze(-1)).squeeze(-1) ** 2 / lam1.clamp_min(1e-300)[:, None],
                (x @ e2.unsqueeze(-1)).squeeze(-1) ** 2 / lam2[:, None],
            ),
            -1,
        )
        responsibilities = torch.softmax(proj / self.temperature, dim=-1)
        return e1.to(features.dtype), responsibilities.to(features.dtype)


register_axes_solver("cvxpy", convex_axes, SOLVER_RANK_ONE_RATIO)
