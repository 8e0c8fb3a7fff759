"""The op floor beside USB's hooks: pseudosel's rule as its torch ops alone, check included.

``pseudosel bench --peers`` times each selector module as a training loop holds it beside
semilearn's own hook. This script times, on the same batches and in the same alternating
rounds, a third side for the rows that ``--peers`` leaves above USB's time (Dash apart: its
rule is computed differently, docs/performance.md): the *floor* — the torch ops the
module's plain lane runs, the value check's three reductions included, written inline,
without the module call, the lane's tests or any other Python layer. Where the floor is
below USB's hook and the module above it, what is left is per-call Python, not arithmetic
or the check.

Each floor is first checked against the module on every batch (masks, labels and the
aligned probabilities equal), so a row times the same result three ways.

Run (semilearn installed, as the README's test command installs it)::

    .venv/bin/python benchmarks/peers_floor.py [--rounds 31] [--sizes 448x10 64x10]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from pseudosel.tools.bench import peers
from pseudosel.tools.bench.sizes import parse_size
from pseudosel.validation import INT_MINIMUM_FROM

#: the rows timed: the selector's name in ``--peers``
ROWS = ("threshold", "adamatch", "distribution alignment (queue)")
#: USB's defaults, as ``--peers`` configures both sides
TAU = 0.95
TOLERANCE = 1e-3
EPS = 1e-6


#: the tolerance as float32 holds it (the batches are float32)
TOL = torch.tensor(TOLERANCE).item()
TINY = torch.finfo(torch.float32).tiny


def values_ok(probs: Tensor) -> bool:
    """The value check as the lane runs it: row sums' extremes and the smallest entry."""
    lowest, highest = torch.aminmax(probs.sum(1))
    if abs(lowest.item() - 1.0) > TOL or abs(highest.item() - 1.0) > TOL:
        return False
    # the smallest entry through int32 from INT_MINIMUM_FROM entries, as the lane reads it
    if probs.numel() >= INT_MINIMUM_FROM and probs.view(torch.int32).min().item() >= 0:
        return True
    return probs.min().item() >= 0


def threshold_floor(num_classes: int) -> Callable[[dict[str, Tensor]], tuple]:
    tau = torch.tensor(TAU)

    def step(batch: dict[str, Tensor]) -> tuple:
        probs = batch["logits"].softmax(-1)
        if not values_ok(probs):
            raise ValueError("not probabilities")
        confidence, labels = probs.max(1)
        mask = confidence >= tau
        return labels, mask.float(), mask, confidence, torch.ones(probs.shape[0], dtype=torch.bool)

    return step


def adamatch_floor(num_classes: int) -> Callable[[dict[str, Tensor]], tuple]:
    """The cutoff as the lane computes it: τ · Σ conf / count, with 0-dim operands."""
    tau, counts = torch.tensor(TAU), {}

    def step(batch: dict[str, Tensor]) -> tuple:
        probs, labelled = batch["logits"].softmax(-1), batch["logits_labeled"].softmax(-1)
        if not values_ok(torch.cat((probs, labelled))):
            raise ValueError("not probabilities")
        size = labelled.shape[0]
        if size not in counts:
            counts[size] = torch.tensor(float(size))
        cutoff = tau * labelled.amax(1).sum() / counts[size]
        confidence, labels = probs.max(1)
        mask = confidence >= cutoff
        return labels, mask.float(), mask, confidence, torch.ones(probs.shape[0], dtype=torch.bool)

    return step


def queue_floor(num_classes: int, queue_length: int = 128) -> Callable[[dict[str, Tensor]], Tensor]:
    """USB's uniform target: its numerator (the target queue's row mean + ε) computed once,
    as the module's lane keeps it."""
    queue, pointer = torch.zeros(queue_length, num_classes), [0]
    eps = torch.tensor(EPS)
    numerator = torch.full((queue_length, num_classes), 1.0 / num_classes).mean(0) + eps

    def step(batch: dict[str, Tensor]) -> Tensor:
        probs = batch["logits"].softmax(-1)
        if not values_ok(probs):
            raise ValueError("not probabilities")
        queue[pointer[0]] = probs.mean(0)
        pointer[0] = (pointer[0] + 1) % queue_length
        aligned = probs * (numerator / (queue.mean(0) + eps))
        return aligned.div_(aligned.sum(1, keepdim=True).clamp_min_(TINY))

    return step


FLOORS = {"threshold": threshold_floor, "adamatch": adamatch_floor,
          "distribution alignment (queue)": queue_floor}  # fmt: skip


def same(module_output: object, floor_output: object) -> bool:
    if isinstance(module_output, Tensor):
        return torch.equal(module_output, floor_output)
    return all(torch.equal(a, b) for a, b in zip(module_output, floor_output, strict=True))


def time_rounds(
    sides: list[Callable], batches: list[dict[str, Tensor]], rounds: int
) -> list[float]:
    """Median µs per step of each side: rounds of ``peers.CALLS_PER_ROUND`` steps, the
    sides in turn, the first round a warm-up (``pseudosel bench --peers``'s protocol)."""
    batch_of = [peers._cycle(batches) for _ in sides]
    times: list[list[float]] = [[] for _ in sides]
    for round_ in range(rounds + 1):
        for index, side in enumerate(sides):
            begin = time.perf_counter()
            for _ in range(peers.CALLS_PER_ROUND):
                side(next(batch_of[index]))
            if round_ > 0:
                times[index].append((time.perf_counter() - begin) / peers.CALLS_PER_ROUND * 1e6)
    return [statistics.median(side) for side in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--sizes", nargs="+", default=list(peers.PEER_SIZES))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of "
          f"{args.rounds} rounds of {peers.CALLS_PER_ROUND} steps, alternated\n")  # fmt: skip
    print("| selector | shape | USB µs | pseudosel µs | floor µs | pseudosel / USB | floor / USB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for size in args.sizes:
        shape = parse_size(size)
        batches = peers._batches(shape, seed=0)
        for pair in peers._pairs(shape[1]):
            if pair.selector not in ROWS:
                continue
            module = pair.ours(peers.TIMED, True).step
            floor = FLOORS[pair.selector](shape[1])
            check = pair.ours(peers.TIMED, True).step
            for batch in batches:  # the floor gives the module's output
                if not same(check(batch), floor(batch)):
                    raise AssertionError(f"{pair.selector} at {size}: the floor differs")
            floor = FLOORS[pair.selector](shape[1])
            usb = pair.usb(peers.TIMED).step
            usb_us, ours_us, floor_us = time_rounds([usb, module, floor], batches, args.rounds)
            print(f"| {pair.selector} | {size} | {usb_us:.0f} | {ours_us:.0f} | {floor_us:.0f} | "
                  f"{ours_us / usb_us:.2f} | {floor_us / usb_us:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
