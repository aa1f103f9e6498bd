"""Image classification (Chapters 4, 7, 8 of the course) and fine-tuning (Section 14.2): one task
for every zoo classifier."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

import zoo
from tasks._base import ZooTask
from tasks._figures import confusion_matrix_figure, log_png, predictions_figure
from tasks.finetune import Freeze

__all__ = ["ImageClassifier"]


def _build_classifier(
    name: str, kwargs: dict[str, Any], weights: str | None, class_names: list[str] | None
) -> nn.Module:
    """Build; with weights, load them at their own shape, then adapt to the data's classes and
    channels (``zoo.adapt`` reuses the head rows of class names the two share)."""
    if weights is None:
        return zoo.create_model(name, **kwargs)
    native = {k: v for k, v in kwargs.items() if k not in ("num_classes", "in_channels")}
    model = zoo.create_model(name, weights=weights, **native)
    return zoo.adapt(
        model,
        num_classes=kwargs.get("num_classes"),
        in_channels=kwargs.get("in_channels"),
        class_names=class_names,
    )


class ImageClassifier(ZooTask):
    """Train, evaluate and fine-tune any zoo classifier on ``(images, labels)`` batches.

    Logs ``{train,val,test}/loss`` and ``/acc`` (top-1) per epoch, ``val`` and ``test`` also
    ``/acc_top5`` when there are more than five classes, and ``train/loss_step`` every
    ``trainer.log_every_n_steps``. Metrics accumulate over the epoch and sync once at its end.
    At the end of ``test`` the confusion matrix is logged as an image (``test/confusion_matrix``,
    also written as a PNG next to the logs). The first ``log_images`` images of each validation
    epoch's first batch are logged titled "predicted (true)", green when right and red when wrong
    (``val/predictions``, also ``val_predictions.png``).

    Fine-tuning (Section 14.2): ``weights`` loads a pretrained network, which is then adapted to
    ``num_classes``, ``in_channels`` and ``class_names`` (:func:`zoo.adapt`); ``head_lr_mult``,
    ``layer_lr_decay``, ``freeze`` and ``unfreeze_at_epochs`` shape its training
    (:class:`tasks.finetune.FineTuning`). The course's recipe is ``head_lr_mult: 10`` with a small
    base learning rate.

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
        weights: ``"torchvision"`` (ImageNet weights), a ``.pth`` / ``.safetensors`` file, a zoo
            checkpoint or a URL with a hash in its name; None trains from scratch.
        freeze: bottom stages to freeze (``0``: none), or ``"backbone"`` for all but the head.
        unfreeze_at_epochs: epochs at which frozen stages thaw, top first; the last thaws all.
        head_lr_mult: learning-rate multiplier of the head (the course: 10).
        layer_lr_decay: learning-rate multiplier per stage below the head (1: none).
        log_images: validation images drawn into the logs each epoch (0: none).
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
        weights: str | None = None,
        freeze: Freeze = 0,
        unfreeze_at_epochs: Sequence[int] = (),
        head_lr_mult: float = 1.0,
        layer_lr_decay: float = 1.0,
        log_images: int = 16,
    ) -> None:
        super().__init__(
            model,
            self.labelled_kwargs(num_classes, in_channels, model_kwargs, class_names),
            optimizer,
            scheduler,
            decay_norm_and_bias,
            weights=weights,
            build=partial(_build_classifier, class_names=class_names),
            freeze=freeze,
            unfreeze_at_epochs=unfreeze_at_epochs,
            head_lr_mult=head_lr_mult,
            layer_lr_decay=layer_lr_decay,
        )
        # Plain data only, so checkpoints load with torch.load(weights_only=True); the optimizer
        # and scheduler live in the CLI's saved config.yaml.
        self.save_hyperparameters(
            ignore=["optimizer", "scheduler"] + (["model"] if isinstance(model, nn.Module) else [])
        )
        self.num_classes = num_classes
        self.class_names = class_names
        self.label_smoothing = label_smoothing
        self.log_images = log_images
        # One metric set per stage, so their states never mix (attributes, not a ModuleDict: a
        # key "train" would clash with nn.Module.train). Top-5 is for evaluation only.
        self.train_metrics = self._stage_metrics(num_classes, top5=False)
        self.val_metrics = self._stage_metrics(num_classes, top5=num_classes > 5)
        self.test_metrics = self._stage_metrics(num_classes, top5=num_classes > 5)
        self.test_confusion = MulticlassConfusionMatrix(num_classes, validate_args=False)

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
        return self._loss_and_logits(batch, stage)[0]

    def _loss_and_logits(self, batch, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
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
        if stage == "test":
            self.test_confusion.update(logits.detach(), labels)
        if stage == "train" and self._is_logging_step():
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss, logits

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        _, logits = self._loss_and_logits(batch, "val")
        if self._draws(batch_idx):
            count = min(self.log_images, len(images))
            datamodule = getattr(self.trainer, "datamodule", None)
            figure = predictions_figure(
                images[:count],
                logits[:count].argmax(dim=-1),
                labels[:count],
                self.class_names or getattr(datamodule, "classes", None),
                getattr(datamodule, "mean", None),
                getattr(datamodule, "std", None),
            )
            log_png(self, "val/predictions", figure)

    def _log_epoch(self, stage: str) -> None:
        metrics = getattr(self, f"{stage}_metrics")
        for name, metric in metrics.items():
            if metric.update_count:  # an empty stage (limit_*_batches=0) logs nothing
                self.log(f"{stage}/{name}", metric.compute(), prog_bar=name in ("loss", "acc"))
            metric.reset()

    def on_fit_start(self) -> None:
        self._check_normalisation()

    def _check_normalisation(self) -> None:
        """Pretrained weights expect inputs normalised as in their training: say so if the data
        module normalises otherwise (a silent few points of accuracy lost)."""
        cfg = getattr(self.model, "pretrained_cfg", None)
        datamodule = getattr(self.trainer, "datamodule", None)
        data_mean, data_std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        if cfg is None or cfg.mean is None or cfg.std is None or data_mean is None:
            return
        pairs = list(zip(cfg.mean + cfg.std, list(data_mean) + list(data_std), strict=False))
        if len(cfg.mean) == len(data_mean) and all(abs(a - b) < 1e-3 for a, b in pairs):
            return
        rank_zero_warn(
            f"the weights ({cfg.source}) expect inputs normalised with mean {cfg.mean} and std "
            f"{cfg.std}, but {type(datamodule).__name__} normalises with mean {list(data_mean)} "
            f"and std {list(data_std)}: set the data module's mean and std to the weights' "
            "(--data.mean, --data.std) unless the difference is intended"
        )

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        if self.test_confusion.update_count:
            matrix = self.test_confusion.compute()  # synced across devices
            names = self.class_names or getattr(self.trainer.datamodule, "classes", None)
            log_png(self, "test/confusion_matrix", confusion_matrix_figure(matrix, names))
            self.test_confusion.reset()

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Class probabilities ``[B, num_classes]``; batches may carry labels or not."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images).softmax(dim=-1)

    def zoo_record(self) -> dict[str, Any]:
        return (
            super().zoo_record() | {"task": "classification"} | self.data_record(self.class_names)
        )
