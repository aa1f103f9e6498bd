"""Fine-tuning beats training from scratch (Section 14.2), on real data, through the zoo's own path.

For each seed: pretrain a zoo ResNet-18 on the handwritten digits 0-4 (scikit-learn's, 8x8 grey
upsampled to 32x32), save the checkpoint with the Trainer, then train on the digits 5-9 with only
``--shots`` labelled images per class, twice with the same seed and number of steps:

- fine-tuned: ``ImageClassifier("resnet18", weights=<checkpoint>, head_lr_mult=...)`` (a new head
  for the new classes; the course's recipe is a small base learning rate and the head at x10);
- from scratch: the same model and steps, randomly initialised (see ``RECIPES``).

Every run uses Adam with a cosine schedule to zero over its epochs, and is scored at its end.

Both are scored on every digit 5-9 image that is not one of the labelled shots.

    python -m tests.benchmarks.finetune_digits [--seeds 0 1 2] [--shots 10] [--epochs 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from datamodules import Digits
from tasks import ImageClassifier

SOURCE, TARGET = list(range(5)), list(range(5, 10))
# The course's recipe (a small base learning rate, the new head at x10) and scratch at ten times
# that base rate, as the course compares them.
COURSE, SCRATCH = "fine-tuned (lr 1e-4, head x10)", "scratch (lr 1e-3)"
# (name, from the digits 0-4 checkpoint?, Adam learning rate, head multiplier): the course's
# recipe, the same with scratch's base rate, without the head's x10, and scratch at two rates.
RECIPES = [
    (COURSE, True, 1e-4, 10.0),
    ("fine-tuned (lr 1e-3, head x10)", True, 1e-3, 10.0),
    ("fine-tuned (lr 1e-3)", True, 1e-3, 1.0),
    (SCRATCH, False, 1e-3, 1.0),
    ("scratch (lr 1e-2)", False, 1e-2, 1.0),
]


def _images(digits, positions: np.ndarray) -> torch.Tensor:
    images = torch.from_numpy(digits.images[positions].astype(np.float32) / 16)[:, None]
    images = (images - Digits.mean[0]) / Digits.std[0]
    return F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)


def _loader(digits, positions, classes, batch_size: int, shuffle: bool) -> DataLoader:
    labels = torch.tensor([classes.index(t) for t in digits.target[positions]])
    data = TensorDataset(_images(digits, positions), labels)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle)


def _trainer(root: Path, epochs: int, limit_batches: int | float) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_train_batches=limit_batches,
        limit_test_batches=limit_batches,
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def run_seed(
    seed: int,
    shots: int,
    epochs: int,
    pretrain_epochs: int,
    root: Path,
    recipes: list[str] | None = None,
    limit_batches: int | float = 1.0,
) -> dict[str, float]:
    """Pretrain on the digits 0-4, then fit each of ``recipes`` (names in ``RECIPES``; default:
    all) on ``shots`` images per digit 5-9. Returns each recipe's test accuracy under its name
    and its fit's wall seconds under ``"<name> s"``, with ``"pretrain s"``, ``"steps"`` (of each
    fit) and ``"test_images"``. ``limit_batches`` caps every loader (a smoke run's setting)."""
    digits = load_digits()
    rng = np.random.default_rng(seed)
    source = np.flatnonzero(np.isin(digits.target, SOURCE))
    target = np.flatnonzero(np.isin(digits.target, TARGET))
    labelled = np.concatenate(
        [rng.choice(target[digits.target[target] == c], shots, replace=False) for c in TARGET]
    )
    held_out = np.setdiff1d(target, labelled)
    names = [str(c) for c in TARGET]

    L.seed_everything(seed)
    pretrained = ImageClassifier(
        "resnet18",
        num_classes=5,
        in_channels=1,
        class_names=[str(c) for c in SOURCE],
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-3),
    )
    trainer = _trainer(root, pretrain_epochs, limit_batches)
    start = time.perf_counter()
    trainer.fit(pretrained, _loader(digits, source, SOURCE, 64, shuffle=True))
    scores = {"pretrain s": time.perf_counter() - start}
    checkpoint = root / f"digits0-4_seed{seed}.ckpt"
    trainer.save_checkpoint(checkpoint)

    for mode, weights, lr, head_lr_mult in RECIPES:
        if recipes is not None and mode not in recipes:
            continue
        L.seed_everything(seed)
        task = ImageClassifier(
            "resnet18", num_classes=5, in_channels=1, class_names=names,
            weights=str(checkpoint) if weights else None, head_lr_mult=head_lr_mult,
            optimizer=lambda p, lr=lr: torch.optim.Adam(p, lr=lr),
            scheduler=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=epochs),
        )  # fmt: skip
        trainer = _trainer(root, epochs, limit_batches)
        start = time.perf_counter()
        trainer.fit(task, _loader(digits, labelled, TARGET, 10, shuffle=True))
        scores[f"{mode} s"] = time.perf_counter() - start
        test = _loader(digits, held_out, TARGET, 256, shuffle=False)
        scores[mode] = trainer.test(task, test, verbose=False)[0]["test/acc"]
    scores["steps"] = trainer.global_step
    scores["test_images"] = len(held_out)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*log_every_n_steps.*")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            start = time.perf_counter()
            scores = run_seed(seed, args.shots, args.epochs, args.pretrain_epochs, Path(tmp))
            results.append(scores)
            accuracies = ", ".join(f"{mode} {scores[mode]:.4f}" for mode, *_ in RECIPES)
            print(
                f"seed {seed}: {accuracies} ({scores['steps']} steps each, "
                f"{scores['test_images']} test images, {time.perf_counter() - start:.0f} s)"
            )
    for mode, *_ in RECIPES:
        values = [r[mode] for r in results]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{mode}: mean {statistics.fmean(values):.4f} std {spread:.4f}")


if __name__ == "__main__":
    main()
