"""The convex path: SDP optimum = closed-form λ₁, same directions and clusters, same CSL
weights; Fantope certificate; differentiable layer; max-margin boundary; errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers.probability_maps import classifier_outputs, smooth_maps

import pseudosel
import pseudosel.functional as F
from pseudosel.convex import (
    ConvexSeparation,
    certify,
    convex_axes,
    fantope_optimum,
    separation_problem,
    solve_separation,
)
from pseudosel.features import csl_features
from pseudosel.functional.csl import split_groups
from pseudosel.functional.separation import (
    RANK_ONE_RATIO,
    assign_second_cluster,
    principal_axes,
    second_moments,
)
from pseudosel.max_margin import max_margin_split

pytestmark = pytest.mark.slow


def realistic_groups(count: int, n: int = 256, seed: int = 0):
    """CSL feature clouds of real-looking probability maps, one group per image."""
    side = int(math.isqrt(n))
    probs = smooth_maps(
        count, 21, side, side, sharpness=2.0 + seed % 7, seed=seed, dtype=torch.float64
    )
    c, s, _ = csl_features(probs)
    return c.reshape(count, -1), s.reshape(count, -1)


def adversarial_groups(seed: int = 0):
    """Clouds that stress the solver: rank one, nearly rank one, tiny or huge scale, few
    points, nearly isotropic. Returns (c, s) of shape (16, 64)."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for kind in range(16):
        t = torch.rand(64, generator=gen, dtype=torch.float64) + 0.5
        noise = torch.randn(2, 64, generator=gen, dtype=torch.float64)
        if kind % 8 == 0:
            c, s = t, 0.3 * t  # exactly rank one
        elif kind % 8 == 1:
            c, s = t, 0.3 * t + 1e-3 * noise[0]  # nearly rank one
        elif kind % 8 == 2:
            c, s = t, 1e-6 * torch.rand(64, generator=gen, dtype=torch.float64)  # tiny s
        elif kind % 8 == 3:
            c, s = 1e4 * t, 1e4 * torch.rand(64, generator=gen, dtype=torch.float64)
        elif kind % 8 == 4:
            c, s = noise[0], noise[1] * 1.05  # nearly isotropic
        else:
            c, s = t, torch.rand(64, generator=gen, dtype=torch.float64) * (kind % 8) / 10
        rows.append((c, s))
    return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])


def all_groups():
    groups = [realistic_groups(16, seed=seed) for seed in range(11)]
    groups += [adversarial_groups(seed) for seed in range(2)]
    return groups  # 13 batches of 16: 208 groups


def test_problem_is_the_dpp_sdp():
    problem, moments, w = separation_problem()
    assert problem.is_dpp() and moments.shape == (2, 2) and w.shape == (2, 2)
    assert separation_problem()[0] is problem  # built once


def test_optimum_direction_and_clusters_agree_with_closed_form_on_208_groups():
    checked_directions = 0
    for c, s in all_groups():
        valid = torch.ones_like(c, dtype=torch.bool)
        moments = second_moments(c, s, torch.float64)
        closed = principal_axes(moments)
        result = solve_separation(moments)
        np.testing.assert_allclose(result.value.numpy(), closed.lam1.numpy(), rtol=1e-6)
        gap = (closed.lam1 - closed.lam2) / closed.lam1
        well_posed = gap > 1e-3
        e_closed = torch.stack((closed.cos, closed.sin), -1)
        alignment = (result.direction * e_closed).sum(-1).abs()
        assert (alignment[well_posed] > 1 - 1e-8).all()
        checked_directions += int(well_posed.sum())
        # identical assignment except at near-ties; exactly rank-one groups split on rounding
        # unless guarded (each path at its own ratio), so the guard is on here ...
        convex = convex_axes(moments)
        count = valid.sum(-1)
        ours = assign_second_cluster(c, s, closed, count, RANK_ONE_RATIO)
        theirs = assign_second_cluster(c, s, convex, count, 1e-10)
        first = (c * closed.cos[:, None] + s * closed.sin[:, None]).abs() * closed.lam2.sqrt()[
            :, None
        ]
        second = (s * closed.cos[:, None] - c * closed.sin[:, None]).abs() * closed.lam1.sqrt()[
            :, None
        ]
        near_tie = (first - second).abs() <= 1e-6 * torch.maximum(first, second)
        assert torch.equal(ours[~near_tie], theirs[~near_tie])
        # ... and the default, always split, agrees on every group that is not rank one
        split = (closed.lam2 > 1e-10 * closed.lam1)[:, None] & ~near_tie
        ours, theirs = (assign_second_cluster(c, s, axes, count) for axes in (closed, convex))
        assert torch.equal(ours[split], theirs[split])
    assert checked_directions >= 180


def test_cvxpy_and_closed_form_csl_give_the_same_weights(dtype):
    for seed, sharpness in [(0, 6.0), (1, 2.0), (2, 12.0)]:
        probs = smooth_maps(4, 21, 16, 16, sharpness=sharpness, seed=seed, dtype=dtype)
        valid = torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(seed)) > 0.2
        closed = F.csl(probs, valid=valid)
        convex = F.csl(probs, valid=valid, solver="cvxpy")
        torch.testing.assert_close(convex.weight, closed.weight, rtol=0, atol=1e-5)
    cls = classifier_outputs(200, 10, seed=4, dtype=dtype)
    torch.testing.assert_close(
        F.csl(cls, solver="cvxpy").weight, F.csl(cls).weight, rtol=0, atol=1e-5
    )
    module = pseudosel.CSLSelector(solver="cvxpy")
    torch.testing.assert_close(module(cls).weight, F.csl(cls).weight, rtol=0, atol=1e-5)


def test_certificate_and_fantope_on_small_groups():
    probs = smooth_maps(3, 8, 5, 5, sharpness=4.0, seed=3)
    report = certify(probs)
    assert report.valid_points == [25, 25, 25]
    assert report.max_relative_gap() < 1e-6
    assert all(share == 1.0 for share in report.same_assignment)
    np.testing.assert_allclose(report.fantope_optimum, report.closed_form_lambda_sum, rtol=1e-6)
    assert "SDP optimum" in str(report)
    big = certify(smooth_maps(1, 4, 9, 9, seed=1))  # 81 > 64 points: no Fantope solve
    assert math.isnan(big.fantope_optimum[0]) and big.max_relative_gap() < 1e-6


def test_fantope_optimum_is_lambda1_plus_lambda2():
    x = torch.rand(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    eig = torch.linalg.eigvalsh(x.T @ x)
    assert fantope_optimum(x) == pytest.approx(float(eig.sum()), rel=1e-6)
    with pytest.raises(ValueError, match="n <= 64"):
        fantope_optimum(torch.rand(65, 2))


def eigh_direction(x: torch.Tensor) -> torch.Tensor:
    """Top eigenvector of XᵀX via torch.linalg.eigh, sign as in solve_separation."""
    _, vectors = torch.linalg.eigh(x.mT @ x)
    top = vectors[..., :, 1]
    larger = top.abs().argmax(-1, keepdim=True)
    return top * torch.sign(top.gather(-1, larger))


def test_layer_gradients_match_the_eigenvector_derivative():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 40, 2, dtype=torch.float64, generator=gen) * torch.tensor(
        [1.0, 0.3], dtype=torch.float64
    )
    x.requires_grad_(True)
    upstream = torch.randn(6, 2, dtype=torch.float64, generator=gen)
    direction, _ = ConvexSeparation()(x)
    (direction * upstream).sum().backward()
    ours = x.grad.clone()
    x.grad = None
    reference = eigh_direction(x)
    torch.testing.assert_close(direction, reference.detach(), rtol=0, atol=1e-7)
    (reference * upstream).sum().backward()
    error = (ours - x.grad).norm() / x.grad.norm()
    assert error <= 1e-4


def test_layer_gradcheck_and_learnable_scale():
    x = torch.tensor(
        [[[0.9, 0.05], [0.8, 0.3], [0.6, 0.1], [0.95, 0.02]]],
        dtype=torch.float64,
        requires_grad=True,
    )
    layer = ConvexSeparation(temperature=0.5)
    assert torch.autograd.gradcheck(lambda t: layer(t)[1], (x,), eps=1e-6, atol=1e-4, rtol=1e-3)
    learned = ConvexSeparation(g_scale=0.5, learn_scale=True)
    assert learned.log_scale.requires_grad
    _, responsibilities = learned(x.detach())
    responsibilities[..., 0].sum().backward()
    assert torch.isfinite(learned.log_scale.grad)
    torch.testing.assert_close(responsibilities.sum(-1), torch.ones(1, 4, dtype=torch.float64))


def two_clusters(groups=4, per_cluster=300, seed=0):
    gen = torch.Generator().manual_seed(seed)
    size = (groups, per_cluster)
    c = torch.cat(
        (
            0.95 + 0.01 * torch.randn(size, generator=gen),
            0.5 + 0.05 * torch.randn(size, generator=gen),
        ),
        1,
    ).double()
    s = torch.cat(
        (
            0.01 + 0.003 * torch.randn(size, generator=gen).abs(),
            0.3 + 0.05 * torch.randn(size, generator=gen),
        ),
        1,
    ).double()
    return c, s, torch.ones_like(c, dtype=torch.bool)


def test_max_margin_separates_well_separated_clusters():
    c, s, valid = two_clusters()
    split = split_groups(c, s, valid)
    truth = torch.zeros_like(valid)
    truth[:, :300] = True  # the confident, low-spread half
    reliable = torch.where(split.reliable_is_second[:, None], split.in_second, ~split.in_second)
    assert (reliable == truth).double().mean() > 0.95  # the spectral split finds them, roughly
    result = max_margin_split(c, s, valid, split, max_points=256, seed=3)
    accuracy = ((result.score >= 0) == reliable).double().mean()
    assert accuracy >= 0.99
    assert torch.equal(result.mask, valid & (result.weight == 1))
    again = max_margin_split(c, s, valid, split, max_points=256, seed=3)
    assert torch.equal(again.weight, result.weight)


def test_max_margin_by_name_and_determinism():
    probs = smooth_maps(2, 21, 24, 24, sharpness=6.0, seed=2)
    a = pseudosel.select_reliable(probs, "csl_max_margin")
    b = pseudosel.select_reliable(probs, "csl", boundary="max_margin")
    assert torch.equal(a.weight, b.weight)
    assert torch.equal(a.weight, F.csl(probs, boundary="max_margin", seed=0).weight)
    assert ((a.weight >= 0) & (a.weight <= 1)).all() and 0 < a.ratio() < 1


def test_bad_inputs_raise_named_errors():
    with pytest.raises(ValueError, match=r"M must be symmetric: M\[1\]"):
        solve_separation(torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.5], [0.0, 1.0]]]))
    with pytest.raises(ValueError, match=r"M must be positive semi-definite.*M\[0\]"):
        solve_separation(torch.tensor([[[1.0, 2.0], [2.0, 1.0]]]))
    with pytest.raises(ValueError, match=r"M must have shape \(B, 2, 2\), got \(2, 2\)"):
        solve_separation(torch.eye(2))
    with pytest.raises(TypeError, match="M must be a floating-point"):
        solve_separation(torch.eye(2, dtype=torch.long)[None])
    with pytest.raises(
        ValueError, match=r"solver must be one of .*'CLARABEL'.*got 'MOSEK'.*installed"
    ):
        solve_separation(torch.eye(2)[None], solver="MOSEK")
    with pytest.raises(ValueError, match="solver must be one of 'closed_form', 'cvxpy'"):
        F.csl(torch.full((3, 2), 0.5), solver="eigh")
    with pytest.raises(ValueError, match="boundary must be one of 'paper', 'max_margin'"):
        F.csl(torch.full((3, 2), 0.5), boundary="svm")
    with pytest.raises(ValueError, match=r"features must have shape \(B, n, 2\)"):
        ConvexSeparation()(torch.rand(3, 2))


def test_results_come_back_in_the_input_dtype():
    m = torch.tensor([[[2.0, 0.5], [0.5, 1.0]]])
    result = solve_separation(m)
    assert result.w.dtype == result.direction.dtype == result.value.dtype == torch.float32


def test_warning_filter_is_narrow():
    import warnings

    from pseudosel.convex import _quiet_cvxpylayers

    with pytest.warns(DeprecationWarning, match="something else"), _quiet_cvxpylayers():
        warnings.warn("something else", DeprecationWarning, stacklevel=1)
