"""ClassPriorSelector: the running cuts against a float64 step-by-step reference, the
learned prior, module == functional, eval mode, checkpoints, DDP and argument errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from helpers.class_prior_ddp import run as ddp_run
from helpers.class_prior_ddp import worker as ddp_worker
from helpers.class_prior_reference import ReferenceClassPrior, rows
from helpers.probability_maps import classifier_outputs, smooth_maps

import pseudosel
import pseudosel.functional as F
from pseudosel import ClassPriorSelector

LAYOUTS = {"NK": (48, 6), "NKHW": (2, 6, 7, 5)}


def batch(layout: str, seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    shape = LAYOUTS[layout]
    if len(shape) == 2:
        probs = classifier_outputs(*shape, sharpness=2.0 + seed % 3, seed=seed)
    else:
        n, k, h, w = shape
        probs = smooth_maps(n, k, h, w, sharpness=2.0 + seed % 3, seed=seed)
    valid_shape = (shape[0], *shape[2:])
    valid = torch.rand(valid_shape, generator=torch.Generator().manual_seed(50 + seed)) < 0.8
    return probs.to(dtype), valid


LABELLED = torch.tensor([0] * 20 + [1] * 12 + [2] * 8 + [3] * 5 + [4] * 3 + [5] * 2)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "options",
    [
        {"kept_share": 0.4, "momentum": 0.7},
        {"tau": 0.6, "momentum": 0.9},
        {"prior": [0.3, 0.3, 0.1, 0.1, 0.1, 0.1], "kept_share": 0.5, "momentum": 0.5},
    ],
    ids=["share", "tau", "fixed_prior"],
)
def test_steps_match_reference(layout, dtype, options):
    selector = ClassPriorSelector(6, **options)
    reference = ReferenceClassPrior(6, **options)
    if "prior" not in options:
        selector.update_labeled(LABELLED)
        reference.update_labeled(LABELLED.tolist())
    np_dtype = np.dtype(np.float64 if dtype == torch.float64 else np.float32)
    for t in range(6):
        probs, valid = batch(layout, t, dtype)
        training = t != 4  # one eval step in between
        selector.train(training)
        sel = selector(probs, valid)
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        confidence, labels, flags = rows(probs.to(compute).numpy(), valid.numpy())
        expected = reference.step(confidence, labels, flags, training=training, dtype=np_dtype)
        assert sel.mask.reshape(-1).tolist() == expected
        assert selector.thresholds.tolist() == reference.thresholds
        assert selector.initialized.tolist() == reference.initialized
    assert selector.effective_prior().tolist() == pytest.approx(reference.prior(), abs=1e-15)
    assert sum(reference.initialized) >= 4  # the cuts did move


def test_momentum_zero_equals_the_functional_selector():
    """momentum=0 is the stateless selector on each batch (a class the batch does not
    predict keeps its cut, and has no position to select)."""
    selector = ClassPriorSelector(6, kept_share=0.6, momentum=0.0)
    selector.update_labeled(torch.arange(6).repeat(5))
    for t in range(3):
        probs, valid = batch("NKHW", t)
        sel = selector(probs, valid)
        expected = F.class_prior(probs, [1 / 6] * 6, 0.6, valid=valid)
        assert selector.initialized.all()
        assert torch.equal(sel.mask, expected.mask)
        cuts = F.class_prior_thresholds(probs, None, 0.6, valid=valid)
        kept = cuts <= 1  # the classes that keep something in this batch move to its cut
        assert kept.sum() >= 3
        assert torch.equal(selector.thresholds[kept], cuts[kept])


def test_a_class_with_nothing_to_keep_keeps_its_cut_and_prior_zero_keeps_nothing():
    selector = ClassPriorSelector(3, prior=[0.6, 0.4, 0.0], kept_share=1.0, momentum=0.0)
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    sel = selector(probs)
    assert sel.mask.tolist() == [True, True, True, False]  # class 2: prior 0
    first = selector.thresholds.clone()
    # next batch predicts no class 1: its cut stays
    sel = selector(torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]]))
    assert selector.thresholds[1] == first[1]
    assert selector.thresholds[0] == pytest.approx(0.7)  # ⌊1 · 2 · 0.6⌋ = 1: the top one
    assert selector.thresholds[2] == 0.95  # never set: tau


def test_learned_prior_uniform_before_labels_and_counts():
    selector = ClassPriorSelector(4)
    assert selector.effective_prior().tolist() == [0.25] * 4
    selector.update_labeled(torch.tensor([[0, 1, 255], [1, 3, 255]]), ignore_index=255)
    assert selector.label_counts.tolist() == [1, 2, 0, 1]
    valid = torch.tensor([True, False, True])
    selector.update_labeled(torch.tensor([2, 9, 2]), valid)  # the 9 is not counted
    assert selector.effective_prior().tolist() == [1 / 6, 2 / 6, 2 / 6, 1 / 6]


def test_update_labeled_errors():
    selector = ClassPriorSelector(3)
    with pytest.raises(ValueError, match=r"labels must hold classes in \[0, 3\)"):
        selector.update_labeled(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="labels"):
        selector.update_labeled(torch.tensor([0, -1]))
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        selector.update_labeled(torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="valid must be a bool tensor"):
        selector.update_labeled(torch.tensor([0, 1]), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="valid must have the shape of labels"):
        selector.update_labeled(torch.tensor([0, 1]), torch.ones(3, dtype=torch.bool))
    assert selector.label_counts.sum() == 0
    fixed = ClassPriorSelector(3, prior="uniform")
    with pytest.raises(RuntimeError, match="fixed prior"):
        fixed.update_labeled(torch.tensor([0, 1]))


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"prior": [0.5, 0.5]}, ValueError, r"shape \(3,\)"),
        ({"prior": [0.5, 0.6, -0.1]}, ValueError, "finite values >= 0"),
        ({"prior": [2.0, 1.0, 1.0]}, ValueError, "sum to 1"),
        ({"kept_share": 1.2}, ValueError, "kept_share"),
        ({"kept_share": torch.tensor(0.5)}, TypeError, "kept_share"),
        ({"tau": -0.1}, ValueError, "tau"),
        ({"momentum": 1.5}, ValueError, "momentum"),
        ({"min_threshold": -0.5}, ValueError, "min_threshold"),
        ({"unknown": 1}, TypeError, "unknown"),
    ],
)
def test_constructor_errors(options, error, match):
    with pytest.raises(error, match=match):
        ClassPriorSelector(3, **options)


def test_forward_errors_name_the_argument():
    selector = ClassPriorSelector(3)
    with pytest.raises(ValueError, match="probs"):
        selector(torch.rand(4, 5).softmax(1))
    with pytest.raises(ValueError, match="valid"):
        selector(torch.rand(4, 3).softmax(1), torch.ones(5, dtype=torch.bool))


def test_eval_leaves_state_unchanged_and_update_then_eval_equals_training():
    trained = ClassPriorSelector(6, kept_share=0.4)
    driven = ClassPriorSelector(6, kept_share=0.4)
    for module in (trained, driven):
        module.update_labeled(LABELLED)
    for t in range(3):
        probs, valid = batch("NK", t)
        expected = trained(probs, valid)
        driven.update(probs, valid)
        driven.eval()
        before = {k: v.clone() for k, v in driven.state_dict().items()}
        got = driven(probs, valid)
        for key, value in driven.state_dict().items():
            assert torch.equal(value, before[key]), key
        driven.train()
        assert torch.equal(got.mask, expected.mask)


def test_state_dict_round_trip():
    straight = ClassPriorSelector(6, kept_share=0.4, momentum=0.8)
    straight.update_labeled(LABELLED)
    for t in range(3):
        straight(*batch("NKHW", t))
    buffer = io.BytesIO()
    torch.save(straight.state_dict(), buffer)
    resumed = ClassPriorSelector(6, kept_share=0.4, momentum=0.8)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    assert set(resumed.state_dict()) == {"prior", "label_counts", "thresholds", "initialized"}
    for t in range(3, 6):
        a, b = straight(*batch("NKHW", t)), resumed(*batch("NKHW", t))
        assert torch.equal(a.mask, b.mask) and torch.equal(a.score, b.score)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_reset_running_stats_keeps_the_prior():
    selector = ClassPriorSelector(6, kept_share=0.4)
    selector.update_labeled(LABELLED)
    selector(*batch("NK", 0))
    selector.reset_running_stats()
    assert selector.thresholds.tolist() == [0.95] * 6 and not selector.initialized.any()
    assert selector.label_counts.sum() == len(LABELLED)


def test_forward_builds_no_graph():
    selector = ClassPriorSelector(6, kept_share=0.4)
    probs = batch("NK", 0)[0].requires_grad_()
    sel = selector(probs)
    assert not any(t.requires_grad for t in sel)
    assert all(b.grad_fn is None for b in selector.buffers())


def test_long_tailed_selection_follows_the_learned_prior():
    """Digits-like: the labelled set is long-tailed, the unlabelled predictions over-predict
    the head. Over a run the kept pseudo-labels follow the labelled proportions."""
    k = 5
    prior = torch.tensor([0.45, 0.25, 0.15, 0.1, 0.05])
    selector = ClassPriorSelector(k, kept_share=0.4, momentum=0.5)
    gen = torch.Generator().manual_seed(0)
    selector.update_labeled(torch.multinomial(prior, 2000, True, generator=gen))
    kept = torch.zeros(k)
    for _ in range(20):
        predicted = torch.multinomial(torch.tensor([0.7, 0.15, 0.08, 0.05, 0.02]), 512, True,
                                      generator=gen)  # fmt: skip
        confidence = 0.3 + 0.65 * torch.rand(512, generator=gen) ** (1 + predicted.float())
        probs = ((1 - confidence) / (k - 1)).unsqueeze(1).repeat(1, k)
        probs[torch.arange(512), predicted] = confidence
        sel = selector(probs)
        kept += torch.bincount(sel.labels[sel.mask], minlength=k)
    proportions = kept / kept.sum()
    learned = selector.effective_prior().float()
    assert (proportions - learned).abs().max() < 0.03
    # a plain threshold at the same overall count keeps mostly the head class
    assert proportions[0] < 0.5


def test_ddp_two_ranks_equal_one_process(tmp_path):
    mp.spawn(ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    single = ddp_run()
    for key, value in single["state"].items():
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), key
        assert torch.equal(ranks[0]["state"][key], value), key
    for t, mask in enumerate(single["masks"]):
        assert torch.equal(torch.cat([r["masks"][t] for r in ranks]), mask)


def test_registry_and_repr():
    spec = pseudosel.registry.selector_spec("class_prior")
    assert spec.module is ClassPriorSelector and spec.stateful and spec.process_group
    assert "kept_share=0.3" in repr(ClassPriorSelector(3, kept_share=0.3))
