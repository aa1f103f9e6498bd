"""What every zoo task shares: building the network from the registry, optimizer and scheduler
from LightningCLI callables (with weight decay kept off biases and norm parameters), and the plain
``checkpoint["zoo"]`` record that lets :func:`zoo.load` rebuild the network without Lightning."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

import zoo

__all__ = ["ZooTask"]


class ZooTask(LightningModule):
    """Base of the zoo's LightningModules.

    Args:
        model: a registry name (``zoo models`` lists them) or a ready ``nn.Module``. A module is
            not saved in the hyper-parameters: pass it again to ``load_from_checkpoint``.
        model_kwargs: keyword arguments for the registry builder (``hidden_sizes``, ``dropout``...).
        optimizer: a callable taking parameter groups, e.g. ``torch.optim.SGD`` with its
            ``init_args`` in YAML (default: Adam, lr 1e-3). Its ``weight_decay`` is the L2
            penalty of Section 5.5.
        scheduler: optional learning-rate scheduler callable, stepped once per epoch.
        decay_norm_and_bias: apply weight decay to biases and norm parameters too. Off by default
            (as in timm and torchvision's references): decaying them only hurts.
    """

    def __init__(
        self,
        model: str | nn.Module,
        model_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        decay_norm_and_bias: bool = False,
    ) -> None:
        super().__init__()
        self.model_kwargs = dict(model_kwargs or {})
        if isinstance(model, nn.Module):
            self.model_name = None
            self.model = model
        else:
            self.model_name = model
            self.model = zoo.create_model(model, **self.model_kwargs)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.decay_norm_and_bias = decay_norm_and_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        """Loss of one batch, with the stage's metrics updated; each task defines it."""
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters in two groups: decayed weights, and biases / norm scales with
        ``weight_decay=0`` (every parameter of one dimension or fewer)."""
        params = [p for p in self.parameters() if p.requires_grad]
        if self.decay_norm_and_bias:
            return [{"params": params}]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        return [
            g for g in ({"params": decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]
        ]

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameter_groups())
        if self.scheduler is None:
            return optimizer
        scheduler = self.scheduler(optimizer)
        # ReduceLROnPlateau needs a metric; every other scheduler ignores "monitor".
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss"},
        }

    def zoo_record(self) -> dict[str, Any]:
        """The plain-data description :func:`zoo.load` rebuilds the network from."""
        return {"model": self.model_name, "model_kwargs": self.model_kwargs}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.model_name is not None:
            checkpoint["zoo"] = self.zoo_record()
