"""Run by tests/test_ddp.py: data-parallel training on 2 CPU processes (gloo), each process saving
what it ends with (tests.ddp_callbacks.SaveWeights), for the test to compare with one process.

    python -m tests.ddp_train OUT_DIR SCENES_ROOT

1. ``sgd_``: LeNet, SGD with momentum, per-process batch ``SGD_BATCH`` from a shuffled loader
   (Lightning's ``DistributedSampler``): synchronous SGD (d2l Section 12.5).
2. ``classifier_``, ``detector_``, ``segmenter_``: a few training steps through the zoo's
   datamodules, then the validation epoch, on evaluation sets of ``NUM_VAL`` samples (odd) in
   batches of 2, so rank 0 runs 2 batches and rank 1 one.

The four trainers share one process group: Lightning's "ddp" strategy launches rank 1 by re-running
this command, and later trainers find the group already there. The tasks and data are built by the
functions below, which the test calls too, so both sides run the same settings.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

import datamodules
from tasks import ImageClassifier, ObjectDetector, SemanticSegmenter, ZooTask
from tests._trainers import cpu_trainer
from tests.ddp_callbacks import SaveWeights

SEED = 0
SGD_SAMPLES, SGD_BATCH, SGD_EPOCHS = 32, 4, 2  # 2 processes: 4 steps an epoch, 8 in all
NUM_VAL = 5  # odd: 3 samples (2 batches) on rank 0, 2 (1 batch) on rank 1
SCENES = {"num_train": 8, "num_val": NUM_VAL, "scene_size": 48}
EVAL_KINDS = ("classifier", "detector", "segmenter")


def quiet() -> None:
    for message in (
        ".*does not have many workers.*",
        ".*log_every_n_steps.*",
        ".*cannot stratify.*",
        ".*sync_dist=True.*",
        ".*no `val_dataloader`.*",
    ):
        warnings.filterwarnings("ignore", message)


def sgd_data() -> TensorDataset:
    generator = torch.Generator().manual_seed(SEED)
    images = torch.randn(SGD_SAMPLES, 1, 28, 28, generator=generator)
    return TensorDataset(images, torch.randint(0, 10, (SGD_SAMPLES,), generator=generator))


def sgd_task() -> ZooTask:
    """LeNet has no BatchNorm, so one process on the union of the batches is the same sum."""
    torch.manual_seed(SEED)
    return ImageClassifier(
        "lenet",
        num_classes=10,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
    )


def eval_data(kind: str, scenes: Path) -> datamodules.SplitDataModule:
    """Tiny real-format data: scikit-learn's digits (NUM_VAL held out), or DigitScenes."""
    if kind == "classifier":
        # train_test_split rounds the held-out count up: ceil(4.5) = 5 of the 1,437.
        return datamodules.Digits(batch_size=2, val_fraction=(NUM_VAL - 0.5) / 1437)
    data = datamodules.DigitScenes if kind == "detector" else datamodules.DigitScenesSegmentation
    return data(root=str(scenes), batch_size=2, **SCENES)


def eval_task(kind: str) -> ZooTask:
    torch.manual_seed(SEED)
    sgd = {"optimizer": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)}
    if kind == "classifier":  # BatchNorm: DDP broadcasts its buffers at the first forward
        return ImageClassifier("lenet_bn", num_classes=10, **sgd)
    if kind == "detector":
        return ObjectDetector("tinyssd", num_classes=10, log_images=0, **sgd)
    return SemanticSegmenter("fcn_resnet18", num_classes=11, log_images=0, **sgd)


def main(out: Path, scenes: Path) -> None:
    quiet()
    # Also the seed of Lightning's DistributedSampler (PL_GLOBAL_SEED), whatever the caller's.
    L.seed_everything(SEED, verbose=False)
    ddp = {"devices": 2, "strategy": "ddp", "enable_checkpointing": False}
    sgd = cpu_trainer(out, max_epochs=SGD_EPOCHS, callbacks=[SaveWeights(out, "sgd_")], **ddp)
    # Lightning replaces the loader's sampler by a DistributedSampler(shuffle=True, seed=SEED).
    sgd.fit(sgd_task(), DataLoader(sgd_data(), batch_size=SGD_BATCH, shuffle=True))
    for kind in EVAL_KINDS:
        trainer = cpu_trainer(
            out,
            max_epochs=1,
            limit_train_batches=2,
            num_sanity_val_steps=0,
            callbacks=[SaveWeights(out, f"{kind}_")],
            **ddp,
        )
        trainer.fit(eval_task(kind), eval_data(kind, scenes))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
