"""Image classification (Chapters 4, 7, 8 of the course): one task for every zoo classifier."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from tasks._base import ZooTask

__all__ = ["ImageClassifier"]


class ImageClassifier(ZooTask):
    """Train, evaluate and fine-tune any zoo classifier on ``(images, labels)`` batches.

    Logs ``{train,val,test}/loss`` and ``/acc`` (top-1) per epoch, ``val`` and ``test`` also
    ``/acc_top5`` when there are more than five classes, and ``train/loss_step`` every
    ``trainer.log_every_n_steps``. Metrics accumulate over the epoch and sync once at its end.

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
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        decay_norm_and_bias: bool = False,
    ) -> None:
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} names for num_classes={num_classes}; "
                "give one name per class"
            )
        # A new name: save_hyperparameters reads this frame's locals, and must see the
        # arguments as given.
        builder_kwargs = {"num_classes": num_classes, "in_channels": in_channels}
        builder_kwargs |= model_kwargs or {}
        super().__init__(model, builder_kwargs, optimizer, scheduler, decay_norm_and_bias)
        # Plain data only, so checkpoints load with torch.load(weights_only=True); the optimizer
        # and scheduler live in the CLI's saved config.yaml.
        self.save_hyperparameters(
            ignore=["optimizer", "scheduler"] + (["model"] if isinstance(model, nn.Module) else [])
        )
        self.num_classes = num_classes
        self.class_names = class_names
        self.label_smoothing = label_smoothing
        # One metric set per stage, so their states never mix (attributes, not a ModuleDict: a
        # key "train" would clash with nn.Module.train). Top-5 is for evaluation only.
        self.train_metrics = self._stage_metrics(num_classes, top5=False)
        self.val_metrics = self._stage_metrics(num_classes, top5=num_classes > 5)
        self.test_metrics = self._stage_metrics(num_classes, top5=num_classes > 5)

    @staticmethod
    def _stage_metrics(num_classes: int, top5: bool) -> nn.ModuleDict:
        metrics = {
            "loss": MeanMetric(),
            "acc": MulticlassAccuracy(num_classes, top_k=1, average="micro", validate_args=False),
        }
        if top5:
            metrics["acc_top5"] = MulticlassAccuracy(
                num_classes, top_k=5, average="micro", validate_args=False
            )
        return nn.ModuleDict(metrics)

    def _shared_step(self, batch, stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        # Metrics only accumulate here; they are computed, synced across devices and logged
        # once per epoch (_log_epoch). Logging them every step cost ~1 ms a call.
        metrics = getattr(self, f"{stage}_metrics")
        metrics["loss"].update(loss.detach(), weight=labels.numel())
        for name, metric in metrics.items():
            if name != "loss":
                metric.update(logits.detach(), labels)
        if stage == "train" and self._is_logging_step():
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def _is_logging_step(self) -> bool:
        every = self.trainer.log_every_n_steps if self._trainer else 1
        return every > 0 and self.global_step % every == 0

    def _log_epoch(self, stage: str) -> None:
        metrics = getattr(self, f"{stage}_metrics")
        for name, metric in metrics.items():
            if metric.update_count:  # an empty stage (limit_*_batches=0) logs nothing
                self.log(f"{stage}/{name}", metric.compute(), prog_bar=name in ("loss", "acc"))
            metric.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

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
