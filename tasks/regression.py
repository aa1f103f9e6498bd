"""Regression with the course's three losses: L2, L1 and Huber (Sections 3.1 and 3.3)."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanSquaredError

from tasks._base import ZooTask

__all__ = ["Regressor", "course_sgd", "regression_loss"]

RegressionLoss = Literal["l2", "l1", "huber"]


def regression_loss(
    prediction: torch.Tensor, target: torch.Tensor, loss: RegressionLoss = "l2", delta: float = 1.0
) -> torch.Tensor:
    """Mean of the course's per-example losses, with ``r = prediction - target``:

    - ``"l2"``: ``r**2 / 2`` (the squared loss of Section 3.1.1; the 1/2 makes its gradient ``r``);
    - ``"l1"``: ``|r|`` (robust to outliers, Section 3.3 exercises);
    - ``"huber"``: ``r**2 / 2`` for ``|r| <= delta``, else ``delta * (|r| - delta / 2)`` (Huber, 1964).
    """
    target = target.view_as(prediction)
    if loss == "l2":
        return F.mse_loss(prediction, target) / 2
    if loss == "l1":
        return F.l1_loss(prediction, target)
    if loss == "huber":
        return F.huber_loss(prediction, target, delta=delta)
    raise ValueError(f"unknown regression loss {loss!r}; choose 'l2', 'l1' or 'huber'")


def course_sgd(params) -> torch.optim.Optimizer:
    """Minibatch SGD with the course's linear-regression step size, 0.03 (Section 3.4)."""
    return torch.optim.SGD(params, lr=0.03)


class Regressor(ZooTask):
    """Fit a regression model (``linear_regression``, or ``mlp`` with ``num_classes`` outputs) to
    ``(features[B, D], targets[B] or [B, K])`` batches. Logs ``{stage}/loss`` and ``{stage}/mse``.

    Args:
        model: registry name or an ``nn.Module``.
        model_kwargs: builder arguments, e.g. ``{"in_features": 2}``.
        loss: ``"l2"``, ``"l1"`` or ``"huber"`` (see :func:`regression_loss`).
        huber_delta: where the Huber loss turns from quadratic to linear.
        optimizer: optimizer callable; minibatch SGD with ``lr=0.03`` by default.
        scheduler: learning-rate scheduler callable.
        decay_norm_and_bias: also apply weight decay to biases and norm parameters.
    """

    def __init__(
        self,
        model: str | nn.Module = "linear_regression",
        model_kwargs: dict[str, Any] | None = None,
        loss: RegressionLoss = "l2",
        huber_delta: float = 1.0,
        optimizer: OptimizerCallable = course_sgd,
        scheduler: LRSchedulerCallable | None = None,
        decay_norm_and_bias: bool = False,
    ) -> None:
        super().__init__(model, model_kwargs, optimizer, scheduler, decay_norm_and_bias)
        if loss not in ("l2", "l1", "huber"):
            raise ValueError(f"unknown regression loss {loss!r}; choose 'l2', 'l1' or 'huber'")
        self.save_hyperparameters(
            ignore=["optimizer", "scheduler"] + (["model"] if isinstance(model, nn.Module) else [])
        )
        self.loss = loss
        self.huber_delta = huber_delta
        self.train_mse, self.val_mse, self.test_mse = (MeanSquaredError() for _ in range(3))

    def _shared_step(self, batch, stage: str) -> torch.Tensor:
        features, targets = batch
        prediction = self(features)
        loss = regression_loss(prediction, targets, self.loss, self.huber_delta)
        train = stage == "train"
        # Evaluation losses sync across processes once, at the epoch's end.
        self.log(
            f"{stage}/loss", loss, on_step=train, on_epoch=True, prog_bar=True, sync_dist=not train
        )
        mse = getattr(self, f"{stage}_mse")
        mse.update(prediction.detach(), targets.view_as(prediction))
        self.log(f"{stage}/mse", mse, on_step=False, on_epoch=True)
        return loss

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self(batch[0] if isinstance(batch, (list, tuple)) else batch)

    def zoo_record(self) -> dict[str, Any]:
        return super().zoo_record() | {"task": "regression"}
