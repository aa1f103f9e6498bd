"""Image classification (Chapters 4, 7, 8 of the course): one task for every zoo classifier."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from tasks._base import ZooTask, _default_optimizer

__all__ = ["ImageClassifier"]


class ImageClassifier(ZooTask):
    """Train, evaluate and fine-tune any zoo classifier on ``(images, labels)`` batches.

    Logs ``{train,val,test}/loss`` and ``/acc`` (top-1), plus ``/acc_top5`` when there are more
    than five classes. Metrics accumulate over the epoch and sync once at its end.

    Args:
        model: registry name (e.g. ``"lenet"``) or an ``nn.Module``.
        num_classes: outputs of the classifier (linked from ``data.num_classes`` by the CLI).
        in_channels: image channels (linked from ``data.in_channels`` by the CLI).
        model_kwargs: further builder arguments, e.g. ``{"activation": "relu"}``.
        label_smoothing: cross-entropy label smoothing (Szegedy et al., 2016); 0 = plain.
        class_names: names of the classes, stored with the checkpoint for :func:`zoo.load`.
        optimizer: optimizer callable (``class_path`` / ``init_args`` in YAML).
        scheduler: learning-rate scheduler callable.
        decay_norm_and_bias: also apply weight decay to biases and norm parameters.
    """

    def __init__(
        self,
        model: str | nn.Module = "lenet",
        num_classes: int = 10,
        in_channels: int = 1,
        model_kwargs: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        class_names: list[str] | None = None,
        optimizer: OptimizerCallable = _default_optimizer,
        scheduler: LRSchedulerCallable | None = None,
        decay_norm_and_bias: bool = False,
    ) -> None:
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} names for num_classes={num_classes}; "
                "give one name per class"
            )
        if isinstance(model, str):
            model_kwargs = {
                "num_classes": num_classes,
                "in_channels": in_channels,
                **(model_kwargs or {}),
            }
        super().__init__(model, model_kwargs, optimizer, scheduler, decay_norm_and_bias)
        # Plain data only, so checkpoints load with torch.load(weights_only=True); the optimizer
        # and scheduler live in the CLI's saved config.yaml.
        self.save_hyperparameters(
            ignore=["optimizer", "scheduler"] + (["model"] if isinstance(model, nn.Module) else [])
        )
        self.num_classes = num_classes
        self.class_names = class_names
        self.label_smoothing = label_smoothing
        # One metric set per stage: their states must not mix (attributes, since a ModuleDict
        # key "train" would clash with nn.Module.train).
        self.train_metrics = self._accuracy_metrics(num_classes)
        self.val_metrics = self._accuracy_metrics(num_classes)
        self.test_metrics = self._accuracy_metrics(num_classes)

    @staticmethod
    def _accuracy_metrics(num_classes: int) -> nn.ModuleDict:
        metrics = {"acc": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
        if num_classes > 5:
            metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
        return nn.ModuleDict(metrics)

    def _shared_step(self, batch, stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        for name, metric in getattr(self, f"{stage}_metrics").items():
            metric.update(logits.detach(), labels)
            self.log(
                f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "acc"
            )
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Class probabilities ``[B, num_classes]``; batches may carry labels or not."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images).softmax(dim=-1)

    def zoo_record(self) -> dict[str, Any]:
        record = super().zoo_record() | {"task": "classification", "class_names": self.class_names}
        # Preprocessing comes from the datamodule that trained the model, when it says.
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        for key in ("mean", "std", "image_size"):
            value = getattr(datamodule, key, None)
            record[key] = list(value) if isinstance(value, tuple) else value
        if record["class_names"] is None and getattr(datamodule, "classes", None):
            record["class_names"] = list(datamodule.classes)
        return record
