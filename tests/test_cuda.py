"""CUDA: same results as on the CPU, and no host synchronisation in a selection call.

Skipped without a CUDA device (see conftest.py); the same code paths run on the CPU above.
"""

from __future__ import annotations

import functools

import pytest
import torch
from helpers.probability_maps import classifier_outputs, smooth_maps
from helpers.selector_zoo import declared_options

import pseudosel
import pseudosel.functional as F
from pseudosel.registry import selector_spec

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("select", [F.csl, F.threshold])
def test_cuda_matches_cpu(select, dtype):
    probs = smooth_maps(2, 21, 40, 40, sharpness=6.0, seed=0).to(dtype)
    on_cpu = select(probs)
    on_gpu = select(probs.cuda())
    torch.testing.assert_close(on_gpu.weight.cpu(), on_cpu.weight, rtol=1e-4, atol=1e-5)
    assert torch.equal(on_gpu.labels.cpu(), on_cpu.labels)


@pytest.mark.parametrize("select", [F.csl, F.threshold])
def test_no_host_sync_with_value_checks_on(select):
    probs = classifier_outputs(512, 10, seed=1).cuda()
    dense = smooth_maps(4, 21, 64, 64, seed=2).cuda()
    select(probs)  # warm-up: lazy initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sel = select(dense)
        sel.ratio()
        pseudosel.select_reliable(probs, from_logits=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _adaptive() -> dict:
    """Every selector of the registry whose selection depends on more than the batch
    (state, or per-call inputs), with each option set of its declaration; and the
    distribution alignment (a transform, built from its class)."""
    found = {}
    for name in pseudosel.available_selectors():
        spec = selector_spec(name)
        if spec.stateful or spec.needs:
            for example, options in declared_options(spec, 1000):
                found[f"{name}/{example}"] = functools.partial(_Registered, spec, options)
    found["DistributionAlignment/target=model"] = _Alignment
    return found


class _Registered:
    """A registered selector's module, stepped as declared, with the inputs it needs."""

    def __init__(self, spec, options):
        self.spec, self.module = spec, spec.build(10, **options)
        self.per_sample = options["num_unlabeled"] is not None

    def cuda(self):
        self.module.cuda()
        return self

    def __call__(self, probs, labeled, index):
        inputs = {"index": index} if self.per_sample else {}
        if "labeled" in self.spec.needs:
            inputs["probs_labeled"] = labeled
        return self.spec.step(self.module, probs, None, **inputs)


class _Alignment(_Registered):
    def __init__(self):
        self.module = pseudosel.DistributionAlignment(10, target="model")

    def __call__(self, probs, labeled, index):
        return self.module(probs, labeled)


ADAPTIVE = _adaptive()


@pytest.mark.parametrize("name", sorted(ADAPTIVE))
def test_adaptive_steps_do_not_synchronise_and_match_cpu(name):
    probs = classifier_outputs(256, 10, seed=3)
    labeled = classifier_outputs(32, 10, seed=4)
    index = torch.randperm(1000)[:256]
    on_cpu, on_gpu = ADAPTIVE[name](), ADAPTIVE[name]().cuda()
    args_gpu = (probs.cuda(), labeled.cuda(), index.cuda())
    on_gpu(*args_gpu)  # warm-up
    on_cpu(probs, labeled, index)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out_gpu = on_gpu(*args_gpu)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    out_cpu = on_cpu(probs, labeled, index)
    first_gpu = out_gpu if isinstance(out_gpu, torch.Tensor) else out_gpu.weight
    first_cpu = out_cpu if isinstance(out_cpu, torch.Tensor) else out_cpu.weight
    torch.testing.assert_close(first_gpu.cpu(), first_cpu, rtol=1e-4, atol=1e-5)


def test_whole_csl_selection_is_capturable_in_a_cuda_graph():
    probs = smooth_maps(4, 21, 64, 64, seed=5).cuda()
    static = probs.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up outside the graph
            F.csl(static, validate=False)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = F.csl(static, validate=False)
    static.copy_(smooth_maps(4, 21, 64, 64, seed=6).cuda())
    graph.replay()
    expected = F.csl(static, validate=False)
    torch.testing.assert_close(captured.weight, expected.weight)
