"""ShrinkMatchSelector: the running certain share against ``certain_ratio_ema`` of the
published ``train()`` (CIFAR/shrinkmatch.py, transcribed in helpers/shrinkmatch_reference.py)
over several steps, with and without the per-epoch restart; module == functional; eval mode;
checkpoint resume; no graph; bad arguments."""

from __future__ import annotations

import pytest
import torch
from helpers.shrinkmatch_reference import published_certain_ratios, published_shrink_loss

import pseudosel
import pseudosel.functional as F


def batches(steps, n=48, k=10, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for t in range(steps):
        sharp = 2.5 + 0.4 * t  # a non-zero certain share from the first step
        out.append((torch.randn(n, k, generator=gen, dtype=torch.float64) * sharp).softmax(1))
    return [b.to(dtype) for b in out]


def as64(values):
    return torch.tensor(values, dtype=torch.float64)


def test_running_share_equals_the_published_sequence():
    steps = batches(12)
    selector = pseudosel.ShrinkMatchSelector(tau=0.95)
    ours = []
    for probs in steps:
        selector(probs)
        ours.append(selector.certain_ratio.item())
    want = published_certain_ratios(steps, 0.95)
    # the published share is a float32 mean (rounded to 2^-24), ours an exact count ratio
    torch.testing.assert_close(as64(ours), as64(want), rtol=1e-7, atol=0.0)
    assert len(set(want)) > 5 and want[0] > 0.05  # the share moves; its start matters


@pytest.mark.parametrize("how", ["reset_ratio", "reset_every"])
def test_per_epoch_restart_equals_the_published_train_loop(how):
    """CIFAR/ImageNet's train() sets certain_ratio_ema = None at each epoch's start."""
    steps, epoch = batches(10, seed=1), 4
    selector = pseudosel.ShrinkMatchSelector(
        tau=0.9, reset_every=epoch if how == "reset_every" else None
    )
    ours = []
    for i, probs in enumerate(steps):
        if how == "reset_ratio" and i % epoch == 0:
            selector.reset_ratio()
        selector(probs)
        ours.append(selector.certain_ratio.item())
    want = published_certain_ratios(steps, 0.9, epoch_length=epoch)
    # the published share is a float32 mean (rounded to 2^-24), ours an exact count ratio
    torch.testing.assert_close(as64(ours), as64(want), rtol=1e-7, atol=0.0)
    # and without the restart the sequence differs after the first epoch
    assert published_certain_ratios(steps, 0.9)[epoch] != pytest.approx(want[epoch], abs=1e-6)


def test_published_step_loss_with_the_running_share():
    """Steps of the published loop: loss_u_shrink / B · certain_ratio_ema, the EMA updated
    with the step's own batch first — equal to shrink() after forward()."""
    steps = batches(5, n=32, seed=2, dtype=torch.float64)
    gen = torch.Generator().manual_seed(9)
    selector = pseudosel.ShrinkMatchSelector(tau=0.95)
    ratios = published_certain_ratios(steps, 0.95)
    for probs, ratio in zip(steps, ratios, strict=True):
        logits = torch.randn(32, 10, generator=gen, dtype=torch.float64)
        selector(probs)
        loss = pseudosel.shrunk_cross_entropy(logits, selector.shrink(probs))
        total, _ = published_shrink_loss(probs, logits, 0.95)
        want = torch.as_tensor(total, dtype=torch.float64) / 32 * ratio
        torch.testing.assert_close(loss, want, rtol=1e-7, atol=1e-12)


def test_module_equals_functional_and_shrink_reads_the_state():
    probs = batches(1, seed=3)[0].reshape(6, 8, 10).movedim(2, 1)  # (6, 10, 8) dense
    valid = torch.rand(6, 8, generator=torch.Generator().manual_seed(0)) < 0.7
    selector = pseudosel.ShrinkMatchSelector(tau=0.8, momentum=0.9)
    sel = selector(probs, valid)
    want = F.shrinkmatch(probs, 0.8, valid=valid)
    for a, b in zip(sel, want, strict=True):
        assert torch.equal(a, b)
    share = (want.mask.sum() / valid.sum()).double()
    torch.testing.assert_close(selector.certain_ratio, share.reshape(1))
    state = {k: v.clone() for k, v in selector.state_dict().items()}
    shrunk = selector.shrink(probs, valid)
    expected = F.shrink_classes(probs, 0.8, share.item(), valid=valid)
    torch.testing.assert_close(shrunk.weight, expected.weight)
    assert torch.equal(shrunk.classes, expected.classes)
    for key, value in selector.state_dict().items():
        assert torch.equal(value, state[key])  # shrink() changes nothing


def test_eval_mode_and_update():
    first, second = batches(2, seed=4)
    selector = pseudosel.ShrinkMatchSelector(tau=0.9)
    assert selector.certain_ratio.item() == 0.0  # before any update: no shrink loss
    assert not selector.shrink(first).weight.any()
    selector(first)
    frozen = {k: v.clone() for k, v in selector.state_dict().items()}
    selector.eval()
    selector(second)
    for key, value in selector.state_dict().items():
        assert torch.equal(value, frozen[key])
    # update() then an eval call == a training call
    other = pseudosel.ShrinkMatchSelector(tau=0.9)
    other.update(first)
    torch.testing.assert_close(other.certain_ratio, frozen["certain_ratio"])
    assert other.num_updates.item() == 1


def test_a_batch_with_nothing_valid_leaves_the_state():
    selector = pseudosel.ShrinkMatchSelector(tau=0.9)
    probs = batches(1, seed=5)[0]
    selector(probs)
    before = selector.certain_ratio.clone()
    sel = selector(torch.full_like(probs, float("nan")), torch.zeros(48, dtype=torch.bool))
    assert not sel.mask.any() and torch.equal(selector.certain_ratio, before)
    assert selector.num_updates.item() == 1
    selector(torch.zeros(0, 10))  # an empty batch (a DDP rank may get one)
    assert torch.equal(selector.certain_ratio, before)


def test_state_dict_resume_is_exact():
    steps = batches(6, seed=6)
    straight = pseudosel.ShrinkMatchSelector(tau=0.9, momentum=0.8, reset_every=4)
    for probs in steps:
        straight(probs)
    first = pseudosel.ShrinkMatchSelector(tau=0.9, momentum=0.8, reset_every=4)
    for probs in steps[:3]:
        first(probs)
    resumed = pseudosel.ShrinkMatchSelector(tau=0.9, momentum=0.8, reset_every=4)
    resumed.load_state_dict(first.state_dict())
    for probs in steps[3:]:
        resumed(probs)
    assert torch.equal(resumed.certain_ratio, straight.certain_ratio)
    assert torch.equal(resumed.num_updates, straight.num_updates)
    assert sorted(straight.state_dict()) == ["certain_ratio", "num_updates"]


def test_forward_builds_no_graph_and_half_inputs():
    logits = torch.randn(16, 5, requires_grad=True)
    selector = pseudosel.ShrinkMatchSelector(tau=0.5)
    sel = selector(logits.softmax(1))
    shrunk = selector.shrink(logits.softmax(1))
    assert not any(t.requires_grad for t in (*sel, *shrunk))
    assert not selector.certain_ratio.requires_grad
    half = selector.shrink(logits.detach().softmax(1).to(torch.bfloat16))
    assert half.weight.dtype == torch.float32


def test_select_reliable_takes_the_instance_and_refuses_the_name():
    probs = torch.tensor([[0.97, 0.02, 0.01], [0.6, 0.3, 0.1]])
    selector = pseudosel.ShrinkMatchSelector()
    assert pseudosel.select_reliable(probs, selector).mask.tolist() == [True, False]
    with pytest.raises(ValueError, match="keeps state across training steps"):
        pseudosel.select_reliable(probs, "shrinkmatch")
    built = pseudosel.registry.build_selector("shrinkmatch", 3, tau=0.7)
    assert isinstance(built, pseudosel.ShrinkMatchSelector) and built.tau == 0.7


def test_repr_and_bad_arguments():
    assert repr(pseudosel.ShrinkMatchSelector(0.7, reset_every=1024)) == (
        "ShrinkMatchSelector(tau=0.7, momentum=0.999, reset_every=1024)"
    )
    with pytest.raises(ValueError, match=r"tau must be in \[0, 1\], got 1.2"):
        pseudosel.ShrinkMatchSelector(tau=1.2)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got -0.5"):
        pseudosel.ShrinkMatchSelector(momentum=-0.5)
    with pytest.raises(TypeError, match="momentum must be a real number, got NoneType"):
        pseudosel.ShrinkMatchSelector(momentum=None)
    with pytest.raises(ValueError, match="reset_every must be >= 1, got 0"):
        pseudosel.ShrinkMatchSelector(reset_every=0)
    with pytest.raises(TypeError, match="reset_every must be an int, got float"):
        pseudosel.ShrinkMatchSelector(reset_every=2.0)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['threshold'\]"):
        pseudosel.ShrinkMatchSelector(threshold=0.9)
