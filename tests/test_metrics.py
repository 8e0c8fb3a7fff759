"""Selection metrics: by hand, against numpy and scikit-learn over several batches, and
free of host synchronisation (checked on CPU with tests/helpers/host_sync_guard.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.host_sync_guard import forbid_host_sync
from helpers.tolerances import numpy_of
from sklearn.metrics import roc_auc_score

import pseudosel
from pseudosel import Selection
from pseudosel.metrics import SelectionStats, as_log_dict, auroc, selection_quality


def hand_selection(device="cpu"):
    # 6 positions; the last is ignored by the selection, the fifth has no true label
    labels = torch.tensor([0, 1, 1, 0, 2, 1], device=device)
    weight = torch.tensor([1.0, 1.0, 0.5, 0.25, 1.0, 0.0], device=device)
    mask = weight == 1
    score = torch.tensor([3.0, 2.0, -1.0, -2.0, 1.0, 0.0], device=device)
    valid = torch.tensor([True, True, True, True, True, False], device=device)
    target = torch.tensor([0, 0, 1, 0, 255, 1], device=device)
    return Selection(labels, weight, mask, score, valid), target


def test_selection_quality_by_hand(device):
    sel, target = hand_selection(device)
    q = selection_quality(sel, target, num_classes=3)
    # valid: 5; selected: positions 0, 1, 4 → ratio 3/5; weights sum 3.75 → mean 0.75
    assert q["ratio"].item() == pytest.approx(3 / 5)
    assert q["mean_weight"].item() == pytest.approx(3.75 / 5)
    # known (valid, target != 255): 0, 1, 2, 3; correct: 0, 2, 3; selected known: 0, 1
    assert q["precision"].item() == pytest.approx(1 / 2)
    assert q["weighted_precision"].item() == pytest.approx((1 + 0.5 + 0.25) / 2.75)
    assert q["recall"].item() == pytest.approx(1 / 3)
    assert q["accuracy"].item() == pytest.approx(3 / 4)
    # scores: correct {3, -1, -2}, wrong {2}: pairs (3 > 2) only → 1 / 3
    assert q["auroc"].item() == pytest.approx(1 / 3)
    # per class (pseudo-label): class 0 has positions 0, 3 → 1 selected; class 1: 1, 2 → 1;
    # class 2: 4 → 1
    assert q["accepted"].tolist() == [1.0, 1.0, 1.0]
    assert q["acceptance"].tolist() == pytest.approx([0.5, 0.5, 1.0])


def test_ratio_matches_selection_ratio():
    sel = pseudosel.select_reliable(torch.randn(3, 4, 6, 6).softmax(1))
    assert selection_quality(sel)["ratio"].item() == pytest.approx(sel.ratio().item())
    assert "precision" not in selection_quality(sel)


def test_auroc_equals_sklearn_on_random_data():
    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        n = int(torch.randint(5, 300, (1,), generator=gen))
        score = torch.randn(n, generator=gen)
        if trial % 3 == 0:
            score = score.round()  # many ties
        positive = torch.rand(n, generator=gen) < 0.6
        include = torch.rand(n, generator=gen) < 0.8
        keep = include.numpy()
        if positive[include].all() or not positive[include].any():
            continue
        expected = roc_auc_score(positive.numpy()[keep], score.numpy()[keep])
        assert auroc(score, positive, include).item() == pytest.approx(expected, abs=1e-12)


def test_auroc_is_half_when_undefined():
    assert (
        auroc(torch.rand(5), torch.ones(5, dtype=torch.bool), torch.ones(5, dtype=torch.bool))
        == 0.5
    )


# ---------------------------------------------------------------- against numpy

IGNORE = 255


def random_batch(seed, shape, *, target=True, nothing_selected=False, k=4, device="cpu"):
    """A Selection with soft weights, ignored positions and a coarse score grid (drawn on
    the CPU, moved to ``device``).

    Scores are multiples of 0.25 in [-3, 3]: equal scores tie exactly and distinct ones land
    in distinct histogram bins, so the binned AUROC must equal the exact one.
    """
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, shape, generator=gen)
    weight = torch.rand(shape, generator=gen).mul(1.25).clamp(max=1.0)
    valid = torch.rand(shape, generator=gen) > 0.2
    weight = torch.where(valid, weight, 0.0)
    mask = valid & (weight == 1) & (not nothing_selected)
    score = torch.randint(-12, 13, shape, generator=gen).double() / 4
    score = torch.where(valid, score, 0.0)
    truth = torch.where(
        torch.rand(shape, generator=gen) < 0.6, labels, torch.randint(0, k, shape, generator=gen)
    )
    truth = torch.where(torch.rand(shape, generator=gen) < 0.15, IGNORE, truth)
    selection = Selection(*(field.to(device) for field in (labels, weight, mask, score, valid)))
    return selection, (truth.to(device) if target else None)


# (seed, shape, has target, nothing selected): classification and dense, with and without
# true labels, one batch where nothing is selected
BATCHES = [
    (0, (30,), True, False),
    (1, (3, 5, 6), True, False),
    (2, (25,), False, False),
    (3, (40,), True, True),
    (4, (2, 7, 4), False, False),
    (5, (50,), True, False),
]


def numpy_quality(batches, k=4):
    """Literal definitions of the module docstring over a list of (selection, target)."""

    def share(num, den):
        return num / den if den > 0 else 0.0

    rows = []  # one tuple per valid position: (label, weight, selected, score, truth)
    for sel, target in batches:
        fields = [numpy_of(f.flatten()) for f in (sel.labels, sel.weight, sel.mask, sel.score)]
        truth = numpy_of(target.flatten()) if target is not None else None
        for i, ok in enumerate(numpy_of(sel.valid.flatten())):
            if ok:
                rows.append((*(f[i] for f in fields), None if truth is None else truth[i]))
    out = {
        "ratio": share(sum(r[2] for r in rows), len(rows)),
        "mean_weight": share(sum(r[1] for r in rows), len(rows)),
        "accepted": np.array([sum(r[2] for r in rows if r[0] == c) for c in range(k)]),
        "acceptance": np.array(
            [
                share(sum(r[2] for r in rows if r[0] == c), sum(1 for r in rows if r[0] == c))
                for c in range(k)
            ]
        ),
    }
    known = [r for r in rows if r[4] is not None and r[4] != IGNORE]
    if any(target is not None for _, target in batches):
        correct = [r[0] == r[4] for r in known]
        chosen = [r[2] for r in known]
        weights = [r[1] for r in known]
        out["precision"] = share(
            sum(c and s for c, s in zip(correct, chosen, strict=True)), sum(chosen)
        )
        out["weighted_precision"] = share(
            sum(w for c, w in zip(correct, weights, strict=True) if c), sum(weights)
        )
        out["recall"] = share(
            sum(c and s for c, s in zip(correct, chosen, strict=True)), sum(correct)
        )
        out["accuracy"] = share(sum(correct), len(known))
        out["auroc"] = roc_auc_score(correct, [r[3] for r in known])
    return out


def assert_matches_numpy(result, expected):
    assert set(result) == set(expected)
    for key, value in expected.items():
        assert result[key].dtype == torch.float32, key
        np.testing.assert_allclose(
            numpy_of(result[key]),
            np.asarray(value, dtype=np.float64),
            rtol=1e-6,
            atol=1e-7,
            err_msg=key,
        )


def test_stats_over_several_batches_match_numpy(device):
    batches = [
        random_batch(s, shape, target=t, nothing_selected=n, device=device)
        for s, shape, t, n in BATCHES
    ]
    assert not batches[3][0].mask.any() and batches[3][0].weight.sum() > 0
    stats = SelectionStats(num_classes=4).to(device)
    for sel, target in batches:
        stats.update(sel, target)
    assert_matches_numpy(stats.compute(), numpy_quality(batches))
    assert_matches_numpy(stats.compute(sync=False), numpy_quality(batches))
    stats.reset()
    assert stats.counts.sum() == 0 and stats.compute()["ratio"] == 0
    assert "precision" not in stats.compute()  # the target flag is reset too


@pytest.mark.parametrize("seed,shape,has_target,nothing", BATCHES)
def test_each_batch_matches_numpy(seed, shape, has_target, nothing, device):
    sel, target = random_batch(
        seed, shape, target=has_target, nothing_selected=nothing, device=device
    )
    expected = numpy_quality([(sel, target)])
    assert_matches_numpy(selection_quality(sel, target, num_classes=4), expected)
    assert_matches_numpy(SelectionStats(num_classes=4).to(device)(sel, target), expected)


def test_stats_without_any_target_report_no_target_numbers(device):
    batches = [random_batch(s, shape, target=False, device=device) for s, shape, *_ in BATCHES]
    stats = SelectionStats(num_classes=4).to(device)
    for sel, _ in batches:
        stats.update(sel)
    assert_matches_numpy(stats.compute(), numpy_quality(batches))


def test_binned_auroc_is_close_for_continuous_scores():
    gen = torch.Generator().manual_seed(1)
    probs = torch.randn(400, 5, generator=gen).mul(2).softmax(1)
    target = torch.where(
        torch.rand(400, generator=gen) < 0.7,
        probs.argmax(1),
        torch.randint(0, 5, (400,), generator=gen),
    )
    sel = pseudosel.select_reliable(probs, "threshold", tau=0.6)
    stats = SelectionStats(num_classes=5, bins=65536)
    for part in torch.arange(400).chunk(4):
        stats.update(Selection(*(f[part] for f in sel)), target[part])
    expected = roc_auc_score((sel.labels == target).numpy(), sel.score.numpy())
    assert abs(stats.compute()["auroc"].item() - expected) < 1e-3


# ---------------------------------------------------------------- no host synchronisation


def test_stats_run_without_host_synchronisation():
    """validate=False: on a CPU the label check reads its verdict back (elsewhere it is a
    device-side assertion: test_label_check_off_the_cpu_reads_nothing_back)."""
    batches = [random_batch(s, shape, target=t, nothing_selected=n) for s, shape, t, n in BATCHES]
    stats = SelectionStats(num_classes=4, validate=False)
    with forbid_host_sync():
        per_batch = [stats(sel, target) for sel, target in batches[:3]]
        for sel, target in batches[3:]:
            stats.update(sel, target)
        result = stats.compute()
        local = stats.compute(sync=False)
        quality = [selection_quality(sel, t, num_classes=4, validate=False) for sel, t in batches]
        logged = as_log_dict(result)
    # read back only outside the guard
    assert_matches_numpy(result, numpy_quality(batches))
    assert_matches_numpy(local, numpy_quality(batches))
    for (sel, target), got, again in zip(batches, per_batch, quality, strict=False):
        assert_matches_numpy(got, numpy_quality([(sel, target)]))
        assert_matches_numpy(again, numpy_quality([(sel, target)]))
    assert logged["pseudo/precision"] == result["precision"]


def test_update_without_host_synchronisation_with_and_without_bins_and_classes():
    batches = [random_batch(s, shape, target=t) for s, shape, t, _ in BATCHES]
    for options in ({}, {"num_classes": 4, "bins": 0}, {"num_classes": 4, "bins": 128}):
        stats = SelectionStats(**options, validate=False)
        with forbid_host_sync():
            for sel, target in batches:
                stats.update(sel, target)
        assert stats.counts[0] == sum(int(sel.valid.sum()) for sel, _ in batches)


def test_loaded_stats_know_whether_targets_were_seen():
    with_target, without = SelectionStats(num_classes=4), SelectionStats(num_classes=4)
    sel, target = random_batch(0, (30,))
    with_target.update(sel, target)
    without.update(sel)
    for source in (with_target, without):
        fresh = SelectionStats(num_classes=4)
        fresh.load_state_dict(source.state_dict())
        with forbid_host_sync():
            result = fresh.compute()
        assert ("precision" in result) == (source is with_target)
        assert set(result) == set(source.compute())


def test_module_forward_returns_the_batch_and_state_is_checkpointable():
    sel, target = hand_selection()
    stats = SelectionStats(num_classes=3)
    batch = stats(sel, target)
    assert batch["precision"].item() == pytest.approx(0.5)
    fresh = SelectionStats(num_classes=3)
    fresh.load_state_dict(stats.state_dict())
    assert fresh.compute()["recall"].item() == pytest.approx(1 / 3)


def test_as_log_dict_flattens():
    sel, target = hand_selection()
    logged = as_log_dict(selection_quality(sel, target, num_classes=3), prefix="u/")
    assert logged["u/precision"].dim() == 0 and "u/acceptance/2" in logged
    assert all(v.dtype == torch.float32 for v in logged.values())


def test_metric_errors():
    sel, target = hand_selection()
    with pytest.raises(ValueError, match=r"target must have the selection's shape \(6,\)"):
        selection_quality(sel, target[:3])
    with pytest.raises(TypeError, match="target must be an integer tensor"):
        selection_quality(sel, target.float())
    with pytest.raises(TypeError, match="selection must be a pseudosel.Selection"):
        selection_quality(tuple(sel), target)
    assert np.isfinite([v.numpy() for v in selection_quality(sel, target).values()][0])


# ---------------------------------------------------------------- targets out of range


@pytest.mark.parametrize(
    "bad, k, message",
    [
        (7, 2, r"in \[0, 2\) or ignore_index=255 .*First offending position \(1,\): 7"),
        (-1, 2, r"in \[0, 2\) .*: -1"),
        (-1, None, r"in \[0, inf\) .*: -1"),
    ],
)
def test_targets_out_of_range_are_refused(bad, k, message):
    sel = pseudosel.select_reliable(torch.tensor([[0.97, 0.03], [0.6, 0.4]]), "threshold")
    target = torch.tensor([0, bad])
    with pytest.raises(ValueError, match=message):
        selection_quality(sel, target, num_classes=k)
    with pytest.raises(ValueError, match=message):
        SelectionStats(k).update(sel, target)
    # equal to the ignore index, the same value is an unknown label
    assert float(selection_quality(sel, target, num_classes=k, ignore_index=bad)["precision"]) == 1
    # at a position the selection ignored, any value is accepted (it is never counted)
    ignored = sel._replace(valid=torch.tensor([True, False]), mask=torch.tensor([True, False]))
    assert float(selection_quality(ignored, target, num_classes=k)["precision"]) == 1
    SelectionStats(k, validate=False).update(sel, target)  # the switch turns it off


def test_label_check_off_the_cpu_reads_nothing_back(monkeypatch):
    """Where the check is a device-side assertion (CUDA, torch.compile: here simulated with
    is_compiling), it reads nothing back and fails through the assertion."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    sel, target = random_batch(0, (30,))
    with forbid_host_sync():
        selection_quality(sel, target, num_classes=4)
    with pytest.raises(RuntimeError):
        selection_quality(sel, torch.full_like(target, 9), num_classes=4)
