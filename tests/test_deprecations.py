"""Public names that changed keep a deprecated alias: it warns once (FutureWarning, naming
the replacement) and gives what the new name gives."""

from __future__ import annotations

import warnings

import pytest
import torch

import pseudosel
import pseudosel.functional as F
from pseudosel import _deprecation


@pytest.fixture(autouse=True)
def fresh_warnings():
    """Each test sees the aliases as never used, and the pytest config's error filter for
    these FutureWarnings is lifted so that they can be caught."""
    _deprecation._warned.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        yield
    _deprecation._warned.clear()


def warns_once(call, match):
    """``call()`` twice: the first warns (matching ``match``), the second does not."""
    with pytest.warns(FutureWarning, match=match):
        first = call()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = call()
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    return first, second


def same(a, b):
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


PROBS = torch.tensor([[0.9, 0.1], [0.55, 0.45], [0.2, 0.8]])
VALID = torch.tensor([True, True, False])


def test_state_before_input_and_positional_valid():
    new = F.freematch_update(PROBS, F.freematch_init(2), valid=VALID, momentum=0.5)
    old, _ = warns_once(
        lambda: F.freematch_update(F.freematch_init(2), PROBS, VALID, momentum=0.5),
        r"freematch_update\(state, probs, valid\) is deprecated.*freematch_update\(probs, state",
    )
    same(old, new)
    selected, _ = warns_once(
        lambda: F.freematch_select(PROBS, new, VALID), "passing valid positionally"
    )
    same(selected, F.freematch_select(PROBS, new, valid=VALID))


@pytest.mark.parametrize(
    "old, new",
    [
        (lambda: F.entropy_split(PROBS, 0.5, group=None), lambda: F.entropy_split(PROBS, 0.5)),
        (lambda: F.csl(PROBS, group="batch"), lambda: F.csl(PROBS, scope="batch")),
        (lambda: F.masked_quantile(PROBS[:, 0], VALID, 0.5, group=None),
         lambda: F.masked_quantile(PROBS[:, 0], VALID, 0.5)),
    ],
    ids=["entropy_split", "csl", "masked_quantile"],
)  # fmt: skip
def test_renamed_keywords(old, new):
    got, _ = warns_once(old, r"\((group)=\.\.\.\) is deprecated.*use (process_group|scope)=")
    expected = new()
    if isinstance(expected, torch.Tensor):
        assert torch.equal(got, expected)
    else:
        same(got, expected)


def test_renamed_keyword_and_new_keyword_together_is_an_error():
    with pytest.raises(TypeError, match="both group= .*and scope="):
        F.csl(PROBS, group="batch", scope="batch")


def test_renamed_functions():
    confidence, labels = torch.tensor([0.99, 0.9, 0.7]), torch.tensor([0, 0, 1])
    old, _ = warns_once(
        lambda: F.adsh_recompute(F.adsh_init(2), confidence, labels), "use adsh_calibrate"
    )
    same(old, F.adsh_calibrate(confidence, labels, F.adsh_init(2)))
    state = F.precision_target_init(2, window=8)
    labels2 = torch.tensor([0, 1, 1])
    old, _ = warns_once(
        lambda: F.precision_target_observe(state, PROBS, labels2, VALID),
        "use precision_target_update",
    )
    same(old, F.precision_target_update(PROBS, labels2, state, valid=VALID, validate=False))
    split, _ = warns_once(lambda: F.split_by_entropy(PROBS, VALID, 0.5), "use entropy_split")
    same(split, F.entropy_split(PROBS, 0.5, valid=VALID, validate=False))
    store, counts = torch.full((4,), -1), torch.tensor([0, 0, 4])
    old, _ = warns_once(
        lambda: F.flexmatch_record_samples(
            store, counts, torch.tensor([1, 0]), torch.tensor([True, True]), torch.tensor([3, 0])
        ),
        "use flexmatch_update",
    )
    assert old[0].tolist() == [0, -1, -1, 1] and old[1].tolist() == [1, 1, 2]


def test_renamed_module_methods():
    adsh = pseudosel.AdshSelector(2, 3)
    warns_once(lambda: adsh.record(PROBS, torch.arange(3)), "AdshSelector.record.*use update")
    warns_once(lambda: adsh.recompute(reset=False), "AdshSelector.recompute.*use calibrate")
    precision = pseudosel.PrecisionTargetSelector(2)
    warns_once(
        lambda: precision.observe_heldout(PROBS, torch.tensor([0, 1, 1])),
        "observe_heldout.*use update_heldout",
    )
    assert int(precision.filled) == 6  # both calls pushed their three positions


def test_flexmatch_select_with_the_old_beta_argument():
    state = F.flexmatch_init(2)._replace(classwise_acc=torch.tensor([1.0, 0.0]))
    old, _ = warns_once(
        lambda: F.flexmatch_select(PROBS, torch.tensor([1.0, 0.0]), valid=VALID),
        "flexmatch_select\\(probs, classwise_acc",
    )
    same(old, F.flexmatch_select(PROBS, state, valid=VALID))


def test_the_old_name_lists_of_select():
    from pseudosel import select

    names, _ = warns_once(lambda: select.SELECTORS, "SELECTORS is deprecated")
    assert set(names) == set(pseudosel.available_selectors(stateful=False))
    stateful, _ = warns_once(lambda: select.STATEFUL, "STATEFUL is deprecated")
    assert stateful["flexmatch"] == "FlexMatchSelector"
