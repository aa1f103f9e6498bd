"""Semantic segmentation (Sections 14.9-14.11 of the course): one task for every zoo segmenter,
pixel-wise cross-entropy, mean IoU and pixel accuracy.

The segmenter returns ``{"out": [B, K, H, W]}`` logits at the input's size (``"aux"`` too when it
has an auxiliary head; see :mod:`zoo.segmentation._base`); batches are ``(images [B, C, H, W],
masks [B, H, W] int64)`` with ``255`` marking pixels to ignore (VOC's object borders, padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from tasks._base import ZooTask
from tasks._figures import log_png, segmentation_figure
from tasks.finetune import Freeze

__all__ = ["SemanticSegmenter", "segmentation_loss"]


def segmentation_loss(logits: Tensor, masks: Tensor, ignore_index: int = 255) -> Tensor:
    """Cross-entropy averaged over the pixels that are not ``ignore_index`` (Section 14.11.4 sums
    it per pixel). A batch without such pixels gives 0 with zero gradients, where PyTorch's mean
    would divide by zero and train on NaN."""
    summed = F.cross_entropy(logits, masks, ignore_index=ignore_index, reduction="sum")
    return summed / (masks != ignore_index).sum().clamp(min=1)


class SemanticSegmenter(ZooTask):
    """Train and evaluate any zoo segmenter on ``(images, masks)`` batches.

    The loss is the pixel-wise cross-entropy over the labelled pixels, plus ``aux_weight`` times
    that of the auxiliary head for models that have one (torchvision's recipe: 0.5). Validation and
    test log ``<stage>/loss`` (the cross-entropy over all labelled pixels of the set), ``<stage>/miou`` (IoU per class from the confusion matrix of the whole set, averaged
    over the classes present in the truth or the predictions, background included) and
    ``<stage>/pixel_acc`` (labelled pixels classified right), both without the ignored pixels,
    and with ``class_metrics`` each class's IoU as ``<stage>/iou/<class name>``. The first
    ``log_images`` validation images of each epoch are logged with their true and predicted masks.
    ``predict`` returns each image's predicted class map ``[B, H, W]``.

    Args:
        model: registry name of a segmenter (``zoo models --task segmentation``) or an
            ``nn.Module`` keeping the segmenter contract.
        num_classes: classes, background included (linked from ``data.num_classes``).
        in_channels: image channels (linked from ``data.in_channels``).
        model_kwargs: further builder arguments, e.g. ``{"output_stride": 8}``.
        class_names: names of classes ``0..num_classes - 1``; stored with the checkpoint.
        optimizer, scheduler, decay_norm_and_bias, weights, freeze, unfreeze_at_epochs,
            head_lr_mult, layer_lr_decay: as in :class:`tasks.ImageClassifier`.
        aux_weight: weight of the auxiliary head's loss (0 ignores the head).
        ignore_index: the mask value of pixels that count nowhere.
        class_metrics: also log the IoU of every class.
        log_images: validation images drawn into the logs each epoch (0: none).
    """

    def __init__(
        self,
        model: str | nn.Module = "fcn_resnet18",
        num_classes: int = 21,
        in_channels: int = 3,
        model_kwargs: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        decay_norm_and_bias: bool = False,
        weights: str | None = None,
        freeze: Freeze = 0,
        unfreeze_at_epochs: Sequence[int] = (),
        head_lr_mult: float = 1.0,
        layer_lr_decay: float = 1.0,
        aux_weight: float = 0.5,
        ignore_index: int = 255,
        class_metrics: bool = True,
        log_images: int = 4,
    ) -> None:
        super().__init__(
            model,
            self.labelled_kwargs(num_classes, in_channels, model_kwargs, class_names),
            optimizer,
            scheduler,
            decay_norm_and_bias,
            weights=weights,
            freeze=freeze,
            unfreeze_at_epochs=unfreeze_at_epochs,
            head_lr_mult=head_lr_mult,
            layer_lr_decay=layer_lr_decay,
        )
        self.save_hyperparameters(
            ignore=["optimizer", "scheduler"] + (["model"] if isinstance(model, nn.Module) else [])
        )
        if 0 <= ignore_index < num_classes:
            raise ValueError(
                f"ignore_index={ignore_index} is a class index (num_classes={num_classes}); use "
                "a value outside 0..num_classes - 1, such as VOC's 255"
            )
        self.num_classes = num_classes
        self.class_names = class_names
        self.aux_weight = aux_weight
        self.ignore_index = ignore_index
        self.class_metrics = class_metrics
        self.log_images = log_images
        for stage in ("val", "test"):
            setattr(self, f"{stage}_loss", MeanMetric())
            setattr(self, f"{stage}_miou", self._metric(MulticlassJaccardIndex, "macro"))
            setattr(self, f"{stage}_pixel_acc", self._metric(MulticlassAccuracy, "micro"))
            # Per class, NaN for a class neither true nor predicted anywhere: not logged.
            iou = self._metric(MulticlassJaccardIndex, "none", zero_division=float("nan"))
            setattr(self, f"{stage}_iou", iou)

    def _metric(self, kind: type, average: str, **kwargs: Any):
        return kind(self.num_classes, average=average, ignore_index=self.ignore_index, **kwargs)

    def _metrics(self, stage: str) -> list:
        names = ("miou", "pixel_acc", "iou") if self.class_metrics else ("miou", "pixel_acc")
        return [getattr(self, f"{stage}_{name}") for name in names]

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return self.model(images)

    def _loss(self, outputs: dict[str, Tensor], masks: Tensor) -> dict[str, Tensor]:
        losses = {"loss_out": segmentation_loss(outputs["out"], masks, self.ignore_index)}
        if "aux" in outputs and self.aux_weight:
            losses["loss_aux"] = segmentation_loss(outputs["aux"], masks, self.ignore_index)
        losses["loss"] = losses["loss_out"] + self.aux_weight * losses.get("loss_aux", 0.0)
        return losses

    def _shared_step(self, batch, stage: str) -> Tensor:
        """Training: the loss, every term logged. Evaluation: the predicted class maps, scored."""
        images, masks = batch
        if masks.shape[-2:] != images.shape[-2:]:
            raise ValueError(
                f"masks of size {tuple(masks.shape[-2:])} for images of size "
                f"{tuple(images.shape[-2:])}; a segmentation batch is (images [B, C, H, W], "
                "masks [B, H, W]) of the same height and width"
            )
        outputs = self.model(images)
        losses = self._loss(outputs, masks)
        if stage == "train":
            for name, value in losses.items():
                # Synced once, at the epoch's end: the mean over every process's batches.
                self.log(
                    f"train/{name}",
                    value,
                    on_step=False,
                    on_epoch=True,
                    batch_size=len(images),
                    sync_dist=True,
                )
            if self._is_logging_step():
                self.log(
                    "train/loss_step", losses["loss"], on_step=True, on_epoch=False, prog_bar=True
                )
            return losses["loss"]
        # Weighted by labelled pixels: the loss over all of the set's labelled pixels, whatever
        # the batches (under DDP each process batches its share), synced at the epoch's end.
        # Lightning's sync_dist mean would floor the summed batch sizes when processes ran
        # different numbers of samples (Lightning issue #21859).
        labelled = (masks != self.ignore_index).sum()
        getattr(self, f"{stage}_loss").update(losses["loss"].detach(), weight=labelled)
        predicted = outputs["out"].argmax(dim=1)
        for metric in self._metrics(stage):
            metric.update(predicted, masks)
        return predicted

    def validation_step(self, batch, batch_idx: int) -> None:
        predicted = self._shared_step(batch, "val")
        if self._draws(batch_idx):
            images, masks = batch
            count = min(self.log_images, len(images))
            datamodule = getattr(self.trainer, "datamodule", None)
            figure = segmentation_figure(
                images[:count],
                predicted[:count],
                masks[:count],
                self.class_names or getattr(datamodule, "classes", None),
                getattr(datamodule, "mean", None),
                getattr(datamodule, "std", None),
                self.ignore_index,
            )
            log_png(self, "val/segmentation", figure)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def _log_metrics(self, stage: str) -> None:
        miou = getattr(self, f"{stage}_miou")
        if not miou.update_count:  # an empty stage (limit_val_batches=0) logs nothing
            return
        loss = getattr(self, f"{stage}_loss")
        self.log(f"{stage}/loss", loss.compute())  # synced across devices, as the others
        loss.reset()
        self.log(f"{stage}/miou", miou.compute(), prog_bar=True)  # synced across devices
        self.log(f"{stage}/pixel_acc", getattr(self, f"{stage}_pixel_acc").compute())
        if self.class_metrics:
            names = self.class_names or getattr(self.trainer.datamodule, "classes", None)
            for index, iou in enumerate(getattr(self, f"{stage}_iou").compute()):
                if not iou.isnan():
                    name = names[index] if names and index < len(names) else str(index)
                    self.log(f"{stage}/iou/{name}", iou)
        for metric in self._metrics(stage):
            metric.reset()

    def predict_step(self, batch, batch_idx: int) -> Tensor:
        """The class of every pixel, ``[B, H, W]`` int64."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.model(images)["out"].argmax(dim=1)

    def zoo_record(self) -> dict[str, Any]:
        return super().zoo_record() | {"task": "segmentation"} | self.data_record(self.class_names)
