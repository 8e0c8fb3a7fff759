"""The front door (pseudosel.inputs.prepare): what every selector accepts and refuses —
channels-last input, ambiguous sigmoid shapes, masks, logits — with one message each."""

from __future__ import annotations

import pytest
import torch

import pseudosel
import pseudosel.functional as F
from pseudosel.inputs import prepare

GEN = torch.Generator().manual_seed(0)


def logits(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=GEN) * 3


# ---------------------------------------------------------------- channels-last input


def test_channels_last_probabilities_get_the_movedim_fix_not_the_logits_hint():
    """(N, H, W, K) probabilities: dim 1 does not sum to 1, the last dim does."""
    probs = logits(2, 8, 5, 5).softmax(-1)  # the 8 x 5 map with K = 5
    for call in (
        lambda: pseudosel.select_reliable(probs, "threshold"),
        lambda: pseudosel.select_reliable(probs),
        lambda: F.csl(probs),
        lambda: pseudosel.FreeMatchSelector(8)(probs),  # K = 8 would even match dim 1
    ):
        with pytest.raises(ValueError, match=r"channels-last.*probs\.movedim\(-1, 1\)") as info:
            call()
        assert "from_logits" not in str(info.value)


def test_channels_last_logits_are_refused_when_the_class_count_is_known():
    """Logits carry no sum to check: the class count names the layout — a module's K,
    select_reliable's num_classes=, or a mask shaped like the input without its last dim."""
    raw = logits(2, 8, 5, 5)  # (N, H, W, K) with K = 5
    with pytest.raises(ValueError, match=r"classes in the last dim.*logits\.movedim\(-1, 1\)"):
        pseudosel.select_reliable(raw, "threshold", from_logits=True, num_classes=5)
    with pytest.raises(ValueError, match=r"last dim.*movedim\(-1, 1\)"):
        pseudosel.select_reliable(
            raw, pseudosel.FlexMatchSelector(5), from_logits=True
        )  # the module's num_classes
    ignore = torch.zeros(2, 8, 5, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"looks channels-last.*movedim\(-1, 1\)"):
        pseudosel.select_reliable(raw, from_logits=True, ignore_mask=ignore)
    # the fix works: the same logits moved to dim 1 give labels in [0, K)
    sel = pseudosel.select_reliable(raw.movedim(-1, 1), "threshold", from_logits=True,
                                    num_classes=5)  # fmt: skip
    assert sel.labels.shape == (2, 8, 5) and int(sel.labels.max()) < 5


def test_without_a_class_count_channels_last_logits_cannot_be_told():
    """Documented limit: logits with neither a class count nor a mask are read as they
    come (the issue's silent case); num_classes= is the way to have them checked."""
    raw = logits(2, 8, 5, 5)
    sel = pseudosel.select_reliable(raw, "threshold", from_logits=True)
    assert sel.labels.shape == (2, 5, 5)  # dim 1 (H = 8) read as the classes


def test_a_class_count_at_both_ends_is_read_as_channels_first():
    """Ambiguous shapes (dim 1 and the last dim both equal K) are channels-first."""
    raw = logits(2, 4, 6, 4)
    sel = pseudosel.select_reliable(raw, "threshold", from_logits=True, num_classes=4)
    assert sel.labels.shape == (2, 6, 4)


def test_a_wrong_class_count_is_named():
    with pytest.raises(ValueError, match=r"6 classes at dim 1.*num_classes=4"):
        pseudosel.select_reliable(logits(3, 6).softmax(1), "threshold", num_classes=4)


# ---------------------------------------------------------------- sigmoid shapes


def test_a_squeezed_binary_map_must_say_what_it_is():
    """(N, H, W) with activation="sigmoid": a binary map without its channel dim, or H
    labels over W positions — refused until told, naming both choices."""
    p = torch.rand(2, 8, 8, generator=GEN)
    for call in (
        lambda: pseudosel.select_reliable(p, "csl", activation="sigmoid"),
        lambda: F.threshold(p, activation="sigmoid"),
        lambda: pseudosel.CSLSelector(activation="sigmoid")(p),
        lambda: F.class_probs(p, "sigmoid"),
    ):
        with pytest.raises(ValueError, match=r"ambiguous.*unsqueeze\(1\).*multilabel=True"):
            call()
    # each choice, said, gives its own result: the binary map equals its (N, 1, H, W) form
    binary = pseudosel.select_reliable(p.unsqueeze(1), "csl", activation="sigmoid")
    assert binary.mask.shape == (2, 8, 8)
    explicit = pseudosel.select_reliable(torch.stack((1 - p, p), 1), "csl")  # its two classes
    assert torch.equal(binary.mask, explicit.mask)
    labels = pseudosel.select_reliable(p, "csl", activation="sigmoid", multilabel=True)
    assert labels.mask.shape == (2, 8, 8)
    assert not torch.equal(labels.weight, binary.weight)  # one boundary per label differs


def test_multilabel_contradictions_are_refused():
    with pytest.raises(ValueError, match="multilabel=True, but .* one channel"):
        F.threshold(torch.rand(4, 1), activation="sigmoid", multilabel=True)
    with pytest.raises(ValueError, match="multilabel=False, but .* 3 channels"):
        F.threshold(torch.rand(4, 3), activation="sigmoid", multilabel=False)
    with pytest.raises(TypeError, match="multilabel must be None, True or False"):
        F.threshold(torch.rand(4, 3), activation="sigmoid", multilabel="yes")


def test_per_class_selectors_point_a_squeezed_map_to_its_channel_dim():
    p = torch.rand(2, 8, 8, generator=GEN)
    with pytest.raises(ValueError, match=r"does not support multi-label.*unsqueeze\(1\)"):
        pseudosel.FreeMatchSelector(2, activation="sigmoid")(p)
    sel = pseudosel.FreeMatchSelector(2, activation="sigmoid")(p.unsqueeze(1))
    assert sel.mask.shape == (2, 8, 8)


# ---------------------------------------------------------------- the rest of the door


def test_prepare_detaches_converts_and_builds_the_mask():
    raw = logits(2, 1, 4, 4).requires_grad_()
    ignore = torch.zeros(2, 4, 4, dtype=torch.long)
    ignore[0, 0, 0] = 255
    probs, valid, all_valid = prepare(
        raw, ignore_mask=ignore, from_logits=True, activation="sigmoid"
    )
    assert not probs.requires_grad and probs.shape == (2, 2, 4, 4) and not all_valid
    torch.testing.assert_close(probs[:, 1], raw.detach().sigmoid()[:, 0])
    assert not bool(valid[0, 0, 0]) and int(valid.sum()) == 31
    assert prepare(torch.full((3, 2), 0.5)).all_valid
    # a tensor that needs no detaching passes as itself (the shared arg-max finds it)
    plain = torch.full((3, 2), 0.5)
    assert prepare(plain).probs is plain


def test_to_classes_false_stops_before_the_values():
    bad = torch.full((2, 3), 2.0)
    probs, valid, _ = prepare(bad, to_classes=False)
    assert probs is bad and valid.shape == (2,)
    with pytest.raises(ValueError, match="probabilities along dim 1"):
        prepare(bad)
