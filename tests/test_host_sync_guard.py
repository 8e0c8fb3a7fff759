"""The host-synchronisation guard itself: what it catches, what it lets through, and undo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.host_sync_guard import GUARDED, HostSyncError, forbid_host_sync

T = torch.tensor([0.5, 0.0, 2.0])

SYNCS = {
    "bool(t)": lambda: bool(T[0]),
    "if t:": lambda: 1 if T.any() else 0,
    "t.item()": lambda: T.sum().item(),
    "t.tolist()": lambda: T.tolist(),
    "int(t)": lambda: int(T[2]),
    "float(t)": lambda: float(T[0]),
    "complex(t)": lambda: complex(T[0]),
    "range(t)": lambda: range(torch.tensor(3)),
    "t.cpu()": lambda: T.cpu(),
    "t.numpy()": lambda: T.numpy(),
    "np.asarray(t)": lambda: np.asarray(T),
    "print(t)": lambda: repr(T),
    "f-string of a 0-dim t": lambda: f"{T[0]:.2f}",
    "t[mask]": lambda: T[T > 0],
    "t[:, mask]": lambda: T[None][:, T > 0],
    "t.nonzero()": lambda: T.nonzero(),
    "torch.nonzero(t)": lambda: torch.nonzero(T),
    "torch.where(cond)": lambda: torch.where(T > 0),
    "torch.argwhere": lambda: torch.argwhere(T),
    "t.masked_select": lambda: T.masked_select(T > 0),
    "torch.unique": lambda: torch.unique(T),
    "t.unique()": lambda: T.unique(),
    "torch.bincount": lambda: torch.bincount(T.long(), minlength=5),
    "t.repeat_interleave(tensor)": lambda: T.repeat_interleave(torch.tensor([1, 0, 2])),
    "torch.repeat_interleave(repeats)": lambda: torch.repeat_interleave(torch.tensor([1, 2])),
    "torch.equal": lambda: torch.equal(T, T),
    "t.equal": lambda: T.equal(T),
    "torch.allclose": lambda: torch.allclose(T, T),
    "torch.is_nonzero": lambda: torch.is_nonzero(T[0]),
    "x in t": lambda: 2.0 in T,
}


@pytest.mark.parametrize("name", list(SYNCS))
def test_guard_catches(name):
    with pytest.raises(HostSyncError, match=r"host synchronisation: (Tensor|torch)\.\w+"):
        with forbid_host_sync():
            SYNCS[name]()


def test_guard_names_the_call():
    with pytest.raises(HostSyncError, match=r"Tensor\.__bool__"), forbid_host_sync():
        bool(T[0])
    with pytest.raises(HostSyncError, match=r"Tensor\.item"), forbid_host_sync():
        T.sum().item()
    assert issubclass(HostSyncError, AssertionError)


def test_guard_lets_device_work_through():
    index = torch.tensor([2, 0])
    with forbid_host_sync():
        out = torch.where(T > 0, T.log(), 0.0).sum(0, keepdim=True)
        picked = T[index] + T[1:].sum() + T[0] + T[..., None].squeeze(1)[-1]
        grown = T.repeat_interleave(2) + 0
        sized = T.repeat_interleave(torch.tensor([1, 0, 2]), output_size=3)
        hist = torch.zeros(4).index_add_(0, index, T[:2])
        flags = (T > 0) & torch.isfinite(T)
        shape = (T.shape[0], len(T), T.dim(), T.numel(), T.dtype, T.device)
        stacked = torch.stack([T.max(), T.min()]).to(torch.float64)
    assert out.item() == pytest.approx(np.log(0.5) + np.log(2.0))
    assert picked.tolist() == [6.5, 5.0]
    assert grown.shape == (6,) and sized.tolist() == [0.5, 2.0, 2.0]
    assert hist.tolist() == [0.0, 0.0, 0.5, 0.0] and flags.tolist() == [True, False, True]
    assert shape[:4] == (3, 3, 1, 3) and stacked.dtype == torch.float64


def test_guard_restores_everything_even_after_an_error():
    before = {(owner, name): vars(owner).get(name) for owner, name in GUARDED}
    with pytest.raises(HostSyncError), forbid_host_sync():
        T.item()
    with pytest.raises(KeyError), forbid_host_sync():
        raise KeyError("unrelated")
    after = {(owner, name): vars(owner).get(name) for owner, name in GUARDED}
    assert after == before
    for call in SYNCS.values():  # every one of them works again
        call()


def test_guard_allow_and_nesting():
    with forbid_host_sync(allow={"Tensor.item"}):
        assert T.sum().item() == 2.5
        with pytest.raises(HostSyncError, match="Tensor.tolist"):
            T.tolist()
        with forbid_host_sync():  # an inner guard forbids again, and restores the outer one
            with pytest.raises(HostSyncError, match="Tensor.item"):
                T.sum().item()
        assert T.sum().item() == 2.5
    with pytest.raises(ValueError, match="does not know"), forbid_host_sync(allow={"Tensor.nope"}):
        pass
