"""Run by tests/test_ddp.py: data-parallel training on 2 CPU processes (gloo) in which the process
of global rank RANK raises at training step 2 (tests.ddp_callbacks.RaiseAt), as a bug or an
out-of-memory error on one device would; it writes the time it raises to ``OUT_DIR/raised``.

    python -m tests.ddp_fault OUT_DIR RANK
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from tasks import ImageClassifier
from tests._trainers import cpu_trainer
from tests.ddp_callbacks import RaiseAt


class RecordRaise(L.Callback):
    def __init__(self, out: Path, failing: RaiseAt) -> None:
        self.out = out
        self.failing = failing

    def on_train_batch_start(self, trainer: L.Trainer, module, batch, batch_idx: int) -> None:
        failing = self.failing
        if trainer.global_rank == failing.rank and trainer.global_step == failing.step:
            (self.out / "raised").write_text(repr(time.time()))


def main(out: Path, failing_rank: int) -> None:
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    L.seed_everything(0, verbose=False)
    task = ImageClassifier("lenet", num_classes=10, optimizer=torch.optim.SGD)
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(64, 1, 28, 28, generator=generator),
        torch.randint(0, 10, (64,), generator=generator),
    )
    failing = RaiseAt(failing_rank, step=2)
    trainer = cpu_trainer(
        out,
        devices=2,
        strategy="ddp",
        max_steps=6,
        enable_checkpointing=False,
        callbacks=[RecordRaise(out, failing), failing],  # in this order
    )
    trainer.fit(task, DataLoader(data, batch_size=4))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
