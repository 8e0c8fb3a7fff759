"""Pseudo-label selection on real data: scikit-learn's handwritten digits.

A tiny classifier is fitted on a few labelled digits per class; its predictions on all the
other digits are the "unlabeled" batch. Each selector then chooses pseudo-labels, and since
the true labels of those digits are known (and hidden from training), we can say how many
each selector keeps (coverage) and how many of the kept ones are right (precision).

    python examples/digits_demo.py [--labels-per-class 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch
from sklearn.datasets import load_digits

import pseudosel
from pseudosel.metrics import selection_quality

# (name shown, method, options): the paper's comparison, threshold vs CSL.
SELECTORS = [
    ("threshold 0.95 (FixMatch)", "threshold", {"tau": 0.95}),
    ("threshold 0.80", "threshold", {"tau": 0.80}),
    ("CSL (batch boundary)", "csl", {}),
    ("CSL, alpha = 8", "csl", {"alpha": 8.0}),
    ("CSL, CoVar neglog rule", "csl", {"cluster_rule": "neglog"}),
]


def split_digits(labels_per_class: int, seed: int):
    """Real digits (1,797 x 64 pixels), split into a small labelled set and the rest."""
    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    targets = torch.tensor(digits.target, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(targets), generator=gen)
    labelled = torch.cat([order[targets[order] == k][:labels_per_class] for k in range(10)])
    unlabelled = order[~torch.isin(order, labelled)]
    return images, targets, labelled, unlabelled


def fit_classifier(images: torch.Tensor, targets: torch.Tensor, *, steps: int, seed: int):
    """A two-layer perceptron trained full-batch on the labelled digits."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(images), targets).backward()
        optimiser.step()
    return model.eval()


def quality(sel: pseudosel.Selection, truth: torch.Tensor) -> dict[str, float]:
    """Coverage, precision, weighted precision and mean weight against the true labels."""
    measured = selection_quality(sel, truth)
    return {
        "coverage": float(measured["ratio"]),
        "precision": float(measured["precision"]),
        "weighted_precision": float(measured["weighted_precision"]),
        "mean_weight": float(measured["mean_weight"]),
    }


def run(labels_per_class: int = 4, seed: int = 0, steps: int = 300) -> dict[str, dict[str, float]]:
    images, targets, labelled, unlabelled = split_digits(labels_per_class, seed)
    model = fit_classifier(images[labelled], targets[labelled], steps=steps, seed=seed)
    with torch.no_grad():
        probs = model(images[unlabelled]).softmax(1)
    truth = targets[unlabelled]
    results = {
        "all predictions": {
            "coverage": 1.0,
            "precision": (probs.argmax(1) == truth).float().mean().item(),
            "weighted_precision": (probs.argmax(1) == truth).float().mean().item(),
            "mean_weight": 1.0,
        }
    }
    for name, method, options in SELECTORS:
        results[name] = quality(pseudosel.select_reliable(probs, method, **options), truth)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels-per-class", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    args = parser.parse_args(argv)
    results = run(args.labels_per_class, args.seed, args.steps)
    n_labelled = 10 * args.labels_per_class
    print(f"digits: {n_labelled} labelled, {1797 - n_labelled} unlabelled (labels hidden)")
    header = f"{'selector':<28}{'coverage':>10}{'precision':>11}{'w. prec.':>10}{'mean w':>9}"
    print(header)
    print("-" * len(header))
    for name, row in results.items():
        print(
            f"{name:<28}{row['coverage']:>10.3f}{row['precision']:>11.3f}"
            f"{row['weighted_precision']:>10.3f}{row['mean_weight']:>9.3f}"
        )
    print("coverage = selected / unlabelled; precision = accuracy of the selected pseudo-labels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
