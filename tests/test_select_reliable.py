"""select_reliable: names, modules, logits, ignore conventions, and its errors."""

from __future__ import annotations

import pytest
import torch
from helpers.probability_maps import classifier_outputs, smooth_maps

import pseudosel
import pseudosel.functional as F


def assert_same(a: pseudosel.Selection, b: pseudosel.Selection) -> None:
    for name, x, y in zip(a._fields, a, b, strict=True):
        assert torch.equal(x, y), name


def test_default_is_csl_and_names_dispatch_to_functionals():
    probs = smooth_maps(2, 6, 8, 8, seed=0)
    assert_same(pseudosel.select_reliable(probs), F.csl(probs))
    assert_same(pseudosel.select_reliable(probs, "threshold", tau=0.8), F.threshold(probs, 0.8))
    assert_same(pseudosel.select_reliable(probs, "csl", alpha=8.0), F.csl(probs, alpha=8.0))


def test_module_instances_are_accepted():
    probs = classifier_outputs(64, 10, seed=0)
    assert_same(
        pseudosel.select_reliable(probs, pseudosel.CSLSelector(cluster_rule="linear")),
        F.csl(probs, cluster_rule="linear"),
    )
    assert_same(
        pseudosel.select_reliable(probs, pseudosel.ThresholdSelector(0.7)),
        F.threshold(probs, 0.7),
    )


def test_from_logits_applies_softmax_over_dim_1():
    logits = torch.randn(3, 5, 4, 4, generator=torch.Generator().manual_seed(0)) * 3
    assert_same(pseudosel.select_reliable(logits, from_logits=True), F.csl(logits.softmax(1)))
    half = pseudosel.select_reliable(logits.half(), "threshold", from_logits=True, tau=0.5)
    assert half.score.dtype == torch.float32
    torch.testing.assert_close(half.score, logits.half().float().softmax(1).amax(1))


def test_ignore_mask_uses_unimatch_convention():
    probs = smooth_maps(2, 4, 6, 6, seed=1)
    ignore = torch.zeros(2, 6, 6, dtype=torch.long)
    ignore[:, :, 4:] = 255
    sel = pseudosel.select_reliable(probs, ignore_mask=ignore)
    assert torch.equal(sel.valid, ignore != 255)
    assert_same(sel, F.csl(probs, valid=ignore != 255))
    other = pseudosel.select_reliable(
        probs, ignore_mask=ignore.masked_fill(ignore == 255, 7), ignore_index=7
    )
    assert_same(other, sel)


def test_input_that_requires_grad_gives_detached_results():
    logits = torch.randn(8, 3, requires_grad=True)
    sel = pseudosel.select_reliable(logits, from_logits=True)
    assert not any(t.requires_grad for t in sel)


def test_errors_name_the_argument():
    probs = classifier_outputs(4, 3, seed=0)
    with pytest.raises(
        ValueError,
        match="unknown selector 'fixmatch'; registered: 'csl', 'csl_covar', 'csl_max_margin', "
        "'threshold', .*register_selector",
    ):
        pseudosel.select_reliable(probs, "fixmatch")
    with pytest.raises(TypeError, match="method must be a selector name.*int"):
        pseudosel.select_reliable(probs, 3)
    with pytest.raises(TypeError, match=r"\['alpha'\] are not per-call inputs of CSLSelector"):
        pseudosel.select_reliable(probs, pseudosel.CSLSelector(), alpha=3.0)
    with pytest.raises(ValueError, match=r"'flexmatch' keeps state.*FlexMatchSelector"):
        pseudosel.select_reliable(probs, "flexmatch")
    with pytest.raises(
        TypeError, match=r"select_reliable\('csl'\): unknown option\(s\) tau; 'csl' takes alpha,"
    ):
        pseudosel.select_reliable(probs, "csl", tau=0.9)
    with pytest.raises(
        TypeError, match=r"unknown option\(s\) threshold; 'threshold' takes backend, tau$"
    ):
        pseudosel.select_reliable(probs, "threshold", threshold=0.9)
    with pytest.raises(ValueError, match="either valid .* or ignore_mask"):
        pseudosel.select_reliable(
            probs,
            valid=torch.ones(4, dtype=torch.bool),
            ignore_mask=torch.zeros(4, dtype=torch.long),
        )
    with pytest.raises(TypeError, match="ignore_mask must be an integer tensor.*torch.bool"):
        pseudosel.select_reliable(probs, ignore_mask=torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"ignore_mask must have shape \(4,\).*got \(4, 1\)"):
        pseudosel.select_reliable(probs, ignore_mask=torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="logits must have a class dimension"):
        pseudosel.select_reliable(torch.randn(5), from_logits=True)


def test_logits_passed_as_probabilities_get_a_hint():
    with pytest.raises(ValueError, match="from_logits=True"):
        pseudosel.select_reliable(torch.randn(6, 4) * 3)
    # and the check can be switched off
    sel = pseudosel.select_reliable(torch.rand(6, 4), "threshold", validate=False, tau=0.5)
    assert sel.mask.shape == (6,)


def test_ratio_is_a_tensor():
    sel = pseudosel.select_reliable(
        torch.tensor([[0.99, 0.01], [0.6, 0.4], [0.2, 0.8]]),
        "threshold",
        valid=torch.tensor([True, True, False]),
    )
    ratio = sel.ratio()
    assert isinstance(ratio, torch.Tensor) and ratio.dim() == 0
    assert ratio.item() == 0.5


@pytest.mark.parametrize(
    "alignment",
    [pseudosel.DistributionAlignment(4), pseudosel.DistributionAlignmentQueue(4)],
    ids=lambda m: type(m).__name__,
)
def test_an_alignment_module_is_refused_with_the_composition(alignment):
    probs = classifier_outputs(16, 4, seed=0)
    before = {k: v.clone() for k, v in alignment.state_dict().items()}
    with pytest.raises(TypeError, match=r"not a selector.*Apply it first.*docs/choosing\.md"):
        pseudosel.select_reliable(probs, alignment)
    after = alignment.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # refused before any update
    # the documented composition works
    aligned = alignment(probs)
    sel = pseudosel.select_reliable(aligned, pseudosel.FreeMatchSelector(4))
    assert isinstance(sel, pseudosel.Selection)


def test_a_module_that_returns_no_selection_is_refused():
    class Probabilities(torch.nn.Module):
        def forward(self, probs, valid=None):
            return probs

    with pytest.raises(TypeError, match=r"method=Probabilities returned Tensor, not a"):
        pseudosel.select_reliable(classifier_outputs(4, 3, seed=0), Probabilities())
