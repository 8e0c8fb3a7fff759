"""Recipe: a PyTorch Lightning FixMatch module with a stateful selector, resumed from a
checkpoint (needs the ``lightning`` extra: pip install 'pseudosel[lightning]').

The selector is a submodule, so its state (FlexMatch's per-sample store and class counts)
lives in registered buffers and travels in Lightning's checkpoints with the weights:
resuming continues the curriculum where it stopped. This short demo starts the unlabelled
loss at step 0 so the store fills quickly; a real run starts it after a supervised warm-up
(see ``recipe_fixmatch_loop.py`` and ``pseudosel.linear_rampup``).

    python examples/recipe_lightning.py --steps 40 --out results/lightning
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lightning as L  # noqa: E402
from digits_data import digit_splits  # noqa: E402
from models import DigitCNN  # noqa: E402
from views import strong_digits, weak_digits  # noqa: E402

import pseudosel  # noqa: E402


class StepBatches(Dataset):
    """Batch ``i`` = a labelled batch and an unlabelled batch with its indices, from seed i."""

    def __init__(self, steps: int) -> None:
        splits = digit_splits(4)
        self.labelled, self.unlabelled = splits.labelled, splits.unlabelled[0]
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int):
        gen = torch.Generator().manual_seed(i)
        x_l, y_l = self.labelled
        pick_l = torch.randint(0, len(x_l), (32,), generator=gen)
        index = torch.randint(0, len(self.unlabelled), (64,), generator=gen)
        x_u = self.unlabelled[index]
        return (
            weak_digits(x_l[pick_l], gen),
            y_l[pick_l],
            weak_digits(x_u, gen),
            strong_digits(x_u, gen),
            index,
        )


class FixMatchModule(L.LightningModule):
    def __init__(self, num_unlabelled: int) -> None:
        super().__init__()
        self.model = DigitCNN()
        # stateful selector as a submodule: checkpointed with the model (τ = 0.7 so that a
        # short demo run already records pseudo-labels; FlexMatch's default is 0.95)
        self.selector = pseudosel.FlexMatchSelector(10, num_unlabelled, tau=0.7)

    def training_step(self, batch, batch_idx):
        x_l, y_l, x_weak, x_strong, index = batch
        loss = F.cross_entropy(self.model(x_l), y_l)
        with torch.no_grad():
            probs = self.model(x_weak).softmax(1)
        sel = pseudosel.select_reliable(probs, self.selector, index=index)
        loss = loss + pseudosel.weighted_cross_entropy(self.model(x_strong), sel, normalize="batch")
        self.log("pseudo/ratio", sel.ratio(), prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("results/lightning"))
    args = parser.parse_args(argv)
    L.seed_everything(0, verbose=False)
    data = StepBatches(2 * args.steps)
    options = dict(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=args.out,
    )
    module = FixMatchModule(len(data.unlabelled))
    first = L.Trainer(max_steps=args.steps, enable_checkpointing=False, **options)
    first.fit(module, DataLoader(data, batch_size=None))
    checkpoint = args.out / "half.ckpt"
    first.save_checkpoint(checkpoint)
    saved = {k: v.clone() for k, v in module.selector.state_dict().items()}

    # the checkpoint carries the selector's state exactly
    restored = FixMatchModule.load_from_checkpoint(checkpoint, num_unlabelled=len(data.unlabelled))
    for key, value in restored.selector.state_dict().items():
        assert torch.equal(value, saved[key]), key

    resumed = FixMatchModule(len(data.unlabelled))
    second = L.Trainer(max_steps=2 * args.steps, enable_checkpointing=False, **options)
    second.fit(resumed, DataLoader(data, batch_size=None), ckpt_path=checkpoint)
    before = int((saved["selected_label"] >= 0).sum())
    after = int((resumed.selector.selected_label >= 0).sum())
    print(
        f"resumed at step {args.steps} with {before} stored pseudo-labels; "
        f"after step {second.global_step}: {after}"
    )
    assert second.global_step == 2 * args.steps and after >= before > 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
