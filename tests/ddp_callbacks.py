"""Callbacks for the multi-process runs of tests/test_ddp.py: each process saves what it holds, or
one of them fails on purpose. Importable by class path, so the ``zoo`` CLI takes them too:

    zoo fit ... --trainer.callbacks+=tests.ddp_callbacks.SaveWeights \
        --trainer.callbacks.out_dir=OUT
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class SaveWeights(L.Callback):
    """Every process writes ``<out_dir>/<prefix>rank<global rank>.pt`` when training ends: the
    task's weights (``state_dict``), the metrics it saw last (``callback_metrics``, as floats) and
    how many validation batches it ran; global rank 0 also writes ``<prefix>initial.pt``, the
    weights training starts from.

    Args:
        out_dir: the folder to write to (created if missing).
        prefix: the start of the file names, to tell several runs in one folder apart.
    """

    def __init__(self, out_dir: str, prefix: str = "") -> None:
        self.out = Path(out_dir)
        self.prefix = prefix

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.out.mkdir(parents=True, exist_ok=True)
            torch.save(_cloned(module.state_dict()), self.out / f"{self.prefix}initial.pt")

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        saved = {
            "state_dict": _cloned(module.state_dict()),
            "metrics": metrics,
            "val_batches": [int(count) for count in trainer.num_val_batches],
        }
        torch.save(saved, self.out / f"{self.prefix}rank{trainer.global_rank}.pt")


class RaiseAt(L.Callback):
    """Raises in the process of global rank ``rank`` when training step ``step`` starts, as a bug
    or an out-of-memory error on one device would.

    Args:
        rank: the global rank that fails.
        step: the optimizer step (``trainer.global_step``) it fails at.
    """

    def __init__(self, rank: int, step: int = 2) -> None:
        self.rank = rank
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, module, batch, batch_idx: int) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            raise RuntimeError(f"planned failure on rank {self.rank} at step {self.step}")


def _cloned(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in state.items()}
