"""Run by tests/test_finetune.py: fine-tune on 2 CPU processes with DDP (gloo), the backbone frozen
in epoch 0 and thawed in epoch 1, and save every rank's weights after each epoch.

    python -m tests.ddp_finetune OUT_DIR

Lightning's "ddp" strategy launches the second process by re-running this command, as it does
for a user's script.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from tasks import ImageClassifier
from tests._trainers import cpu_trainer


class SaveWeights(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.saved: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, module) -> None:
        if trainer.is_global_zero:
            torch.save(module.model.state_dict(), self.out / "initial.pt")

    def on_train_epoch_end(self, trainer, module) -> None:
        prefix = f"epoch{trainer.current_epoch}/"
        self.saved |= {prefix + k: v.clone() for k, v in module.model.state_dict().items()}

    def on_train_end(self, trainer, module) -> None:
        state = self.saved | {k: v.clone() for k, v in module.model.state_dict().items()}
        torch.save(state, self.out / f"rank{trainer.global_rank}.pt")


def main(out: Path) -> None:
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    L.seed_everything(0)
    task = ImageClassifier(
        "resnet18",
        num_classes=4,
        in_channels=3,
        freeze="backbone",
        unfreeze_at_epochs=[1],
        head_lr_mult=10,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=1e-3),
        scheduler=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=2),
    )
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(32, 3, 32, 32, generator=generator),
        torch.randint(0, 4, (32,), generator=generator),
    )
    trainer = cpu_trainer(
        out,
        devices=2,
        strategy="ddp",
        max_epochs=2,
        enable_checkpointing=False,
        callbacks=[SaveWeights(out)],
    )
    trainer.fit(task, DataLoader(data, batch_size=8, shuffle=True))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
