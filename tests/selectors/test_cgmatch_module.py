"""CGMatchSelector: buffers, modes, resume, errors; generalized_cross_entropy against the
authors' GCELoss (the maths of the selector: tests/functional/test_cgmatch.py)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as TF

import pseudosel
import pseudosel.functional as F


def _batch(t, n=10, k=4, num_unlabeled=12):
    gen = torch.Generator().manual_seed(t)
    probs = (torch.randn(n, k, generator=gen) * (1 + t)).softmax(1)
    index = torch.randint(0, num_unlabeled, (n,), generator=gen)
    valid = torch.rand(n, generator=gen) < 0.8
    return probs, index, valid


def _make(**options):
    return pseudosel.CGMatchSelector(4, 12, momentum=0.8, **options)


@pytest.mark.parametrize("options", [{}, {"per_class": True, "window": 3}])
def test_state_dict_resume_equals_a_straight_run(options):
    straight, first = _make(**options), _make(**options)
    for t in range(3):
        straight(*_batch(t))
        first(*_batch(t))
    resumed = _make(**options)
    resumed.load_state_dict(copy.deepcopy(first.state_dict()))
    for t in range(3, 6):
        expected, result = straight(*_batch(t)), resumed(*_batch(t))
        for a, b in zip(result, expected, strict=True):
            assert torch.equal(a, b)
    pairs = zip(resumed.state_dict().items(), straight.state_dict().items(), strict=True)
    for (name, a), (_, b) in pairs:
        assert torch.equal(a, b), name
    assert sorted(straight.state_dict()) == ["counts", "gap_mu", "mu", "started", "totals"]


def test_eval_selects_with_frozen_state_and_update_then_eval_equals_training():
    trained, driven = _make(), _make()
    trained(*_batch(0))
    driven.update(*_batch(0))
    before = copy.deepcopy(trained.state_dict())
    trained.eval()
    frozen = trained(*_batch(1))
    for name, value in trained.state_dict().items():
        assert torch.equal(value, before[name]), name
    trained.train()
    training = trained(*_batch(1))
    driven.update(*_batch(1))
    driven.eval()
    for a, b in zip(driven(*_batch(1)), training, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(frozen.score, training.score)  # eval did not record


def test_record_moves_the_counts_only():
    selector = _make()
    selector.record(*_batch(0))
    probs, index, valid = _batch(0)
    assert float(selector.counts.sum()) == int(valid.sum())
    assert float(selector.mu) == pytest.approx(0.25) and float(selector.gap_mu) == 0.0
    assert not selector.started and float(selector.totals[1]) == len(set(index[valid].tolist()))


def test_forward_builds_no_graph_and_the_sets_are_disjoint():
    selector = _make()
    logits = torch.randn(10, 4, requires_grad=True)
    for t in range(3):
        sel = selector(logits.softmax(1), _batch(t)[1])
        ambiguous = selector.ambiguous(sel)
        assert not (sel.mask & ambiguous).any()
        assert not any(field.requires_grad for field in sel)
    assert not any(buffer.requires_grad for buffer in selector.buffers())
    copy.deepcopy(selector)
    assert torch.equal(selector.gap_threshold(), selector.gap_mu)
    assert "num_unlabeled=12" in repr(selector) and "window=None" in repr(selector)


def test_sigmoid_binary_outputs():
    selector = pseudosel.CGMatchSelector(2, 5, activation="sigmoid")
    sel = selector(torch.tensor([[0.9], [0.2], [0.6]]), torch.tensor([0, 1, 2]))
    assert sel.labels.tolist() == [1, 0, 1]
    assert selector.counts.sum(0).tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    ("index", "error", "match"),
    [
        (torch.tensor([0, 1, 12]), ValueError, r"index must lie in \[0, 12\)"),
        (torch.tensor([0, -1, 2]), ValueError, "index must lie"),
        (torch.tensor([0, 1, 2], dtype=torch.int32), TypeError, "index .* torch.long"),
        (torch.tensor([0.0, 1.0, 2.0]), TypeError, "index .* torch.long"),
        (torch.tensor([[0], [1], [2]]), ValueError, r"index must have shape \(3,\)"),
        (torch.tensor([0, 1]), ValueError, r"index must have shape \(3,\)"),
        ([0, 1, 2], TypeError, "index .* torch.long"),
        (None, TypeError, "index"),
    ],
)
def test_bad_index_is_named(index, error, match):
    probs = torch.tensor([[0.9, 0.05, 0.03, 0.02]] * 3)
    selector = _make()
    with pytest.raises(error, match=match):
        selector(probs, index)
    with pytest.raises(error, match=match):
        selector.record(probs, index)
    state = F.cgmatch_init(4, 12)
    with pytest.raises(error, match=match):
        F.cgmatch_update(probs, index, state)
    with pytest.raises(error, match=match):
        F.cgmatch_select(probs, index, state)


def test_bad_inputs_and_options_are_named():
    selector = _make()
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        selector(torch.full((2, 4, 3, 3), 0.25), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        F.cgmatch_update(torch.full((2, 4, 3), 0.25), torch.tensor([0, 1]), F.cgmatch_init(4, 3))
    with pytest.raises(ValueError, match="probs"):
        selector(torch.full((2, 5), 0.2), torch.tensor([0, 1]))  # K = 5, built with 4
    with pytest.raises(ValueError, match="probs"):
        selector(torch.tensor([[2.0, -1.0, 0.0, 0.0]]), torch.tensor([0]))  # not probabilities
    with pytest.raises(ValueError, match="num_unlabeled"):
        pseudosel.CGMatchSelector(4, 0)
    with pytest.raises(ValueError, match="momentum"):
        pseudosel.CGMatchSelector(4, 3, momentum=1.5)
    with pytest.raises(ValueError, match="window"):
        pseudosel.CGMatchSelector(4, 3, window=0.5)
    with pytest.raises(ValueError, match="clamp"):
        pseudosel.CGMatchSelector(4, 3, clamp=(0.95, 0.9))
    with pytest.raises(TypeError, match="clamp"):
        pseudosel.CGMatchSelector(4, 3, clamp=0.9)
    with pytest.raises(TypeError, match="unexpected keyword"):
        pseudosel.CGMatchSelector(4, 3, tau=0.9)


def test_an_empty_batch_and_an_all_ignored_batch():
    selector = _make()
    sel = selector(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert sel.mask.shape == (0,)
    probs, index, _ = _batch(0)
    sel = selector(probs, index, torch.zeros(10, dtype=torch.bool))
    assert not sel.mask.any() and float(selector.counts.sum()) == 0.0
    assert not selector.started


# ----------------------------------------------------------- generalized cross-entropy


class GCELoss(torch.nn.Module):
    """The authors' GCELoss, transcribed (OverfitFlow/CGMatch,
    semilearn/core/criterions/consistency.py; default q = 0.7)."""

    def __init__(self, num_classes, q=0.7):
        super().__init__()
        self.num_classes = num_classes
        self.q = q

    def forward(self, pred, labels, mask):
        pred = TF.softmax(pred, dim=1)
        pred = torch.clamp(pred, min=1e-7, max=1.0)
        label_one_hot = torch.nn.functional.one_hot(labels, self.num_classes).float()
        loss = (1.0 - torch.pow(torch.sum(label_one_hot * pred, dim=1), self.q)) / self.q
        if mask is not None:
            loss = loss * mask
        return loss.mean()


@pytest.mark.parametrize("q", [0.7, 0.3, 1.0])
def test_gce_equals_the_authors_loss_and_gradient(q):
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(32, 6, generator=gen) * 4).requires_grad_()
    theirs_logits = logits.detach().clone().requires_grad_()
    labels = torch.randint(0, 6, (32,), generator=gen)
    mask = torch.rand(32, generator=gen) < 0.5
    logits.detach()[0, labels[0]] = -40.0  # p_y below the 1e-7 clamp
    theirs_logits.detach()[0, labels[0]] = -40.0
    ours = pseudosel.generalized_cross_entropy(logits, labels, mask, q=q)
    theirs = GCELoss(6, q=q)(theirs_logits, labels, mask.float())
    torch.testing.assert_close(ours, theirs)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(logits.grad, theirs_logits.grad)


def test_gce_reads_a_selection_and_a_replacing_weight():
    logits = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 1, 0])
    valid = torch.tensor([True, True, False, True, True])
    weight = torch.tensor([1.0, 0.5, 1.0, 0.0, 1.0], dtype=torch.float64)
    sel = pseudosel.Selection(labels, weight, weight > 0, weight, valid)
    p = logits.detach().softmax(1).gather(1, labels[:, None]).squeeze(1)
    per = (1 - p**0.7) / 0.7 * weight * valid
    expected = {"batch": 5, "valid": 4, "selected": 3, "weight": 2.5}
    for normalize, denominator in expected.items():
        loss = pseudosel.generalized_cross_entropy(logits, sel, normalize=normalize)
        torch.testing.assert_close(loss, per.sum() / denominator)
    ambiguous = torch.tensor([False, True, True, True, False])  # the ambiguous set instead
    loss = pseudosel.generalized_cross_entropy(logits, sel, ambiguous)
    torch.testing.assert_close(loss, ((1 - p**0.7) / 0.7 * torch.tensor([0, 1, 0, 1, 0])).sum() / 5)
    assert loss.dtype == torch.float64


def test_gce_ignored_positions_give_no_nan_and_bad_input_is_named():
    logits = torch.tensor([[1.0, 2.0], [float("nan"), 0.0]], requires_grad=True)
    sel = pseudosel.Selection(
        torch.tensor([1, 0]), torch.ones(2), torch.ones(2, dtype=torch.bool), torch.zeros(2),
        torch.tensor([True, False]),
    )  # fmt: skip
    loss = pseudosel.generalized_cross_entropy(logits, sel)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="q"):
        pseudosel.generalized_cross_entropy(logits, sel, q=0.0)
    with pytest.raises(ValueError, match="normalize"):
        pseudosel.generalized_cross_entropy(logits, sel, normalize="mean")
    with pytest.raises(TypeError, match="weight"):
        pseudosel.generalized_cross_entropy(logits, torch.tensor([1, 0]))
    with pytest.raises(TypeError, match="target"):
        pseudosel.generalized_cross_entropy(logits, torch.tensor([1.0, 0.0]), torch.ones(2))
    with pytest.raises(ValueError, match="weight"):
        pseudosel.generalized_cross_entropy(logits, sel, torch.ones(3))
    with pytest.raises(ValueError, match="labels"):
        pseudosel.generalized_cross_entropy(logits, torch.tensor([1, 0, 1]), torch.ones(3))


def test_easy_loss_recipe_equals_the_authors_consistency_loss():
    """weighted_cross_entropy(..., normalize="batch") is the authors' consistency_loss(
    logits_s, pseudo_label, 'ce', mask=easy_mask) (ce_loss then (loss * mask).mean())."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 5, generator=gen)
    selector = pseudosel.CGMatchSelector(5, 16, momentum=0.5)
    sel = selector(torch.randn(16, 5, generator=gen).softmax(1), torch.arange(16))
    ours = pseudosel.weighted_cross_entropy(logits, sel, normalize="batch")
    log_pred = TF.log_softmax(logits, dim=-1)
    theirs = (TF.nll_loss(log_pred, sel.labels, reduction="none") * sel.mask.float()).mean()
    torch.testing.assert_close(ours, theirs)
