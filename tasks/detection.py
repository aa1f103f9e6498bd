"""Object detection (Sections 14.3-14.8 of the course): one task for every zoo detector, COCO mAP
for all of them, and COCO results files from ``zoo predict``.

The detector owns everything family-specific: in training mode it returns its named loss terms,
in eval mode one ``{"boxes", "scores", "labels"}`` dict per image (see :mod:`zoo.detection._base`).
The task sums and logs the terms, scores the detections with torchmetrics'
``MeanAveragePrecision`` (COCO's protocol; mask mAP too for detectors that report instance
masks) and draws a few of them into the logs.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.detection import MeanAveragePrecision

from tasks._base import ZooTask
from tasks._figures import detections_figure, log_png
from tasks.finetune import Freeze
from zoo.detection.boxes import convert_boxes, scale_boxes

__all__ = ["COCOResultsWriter", "ObjectDetector"]

# COCOeval's own thresholds, in float64. torchmetrics' defaults come from a float32 torch.linspace
# (0.6 becomes 0.60000002), which moves recall points that fall exactly on the grid (3 of 5
# objects found) and gives mAPs a few 1e-4 off COCOeval's on the same detections.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10).tolist()
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101).tolist()
# faster-coco-eval gives pycocotools' numbers several times faster; use it when installed.
_MAP_BACKEND = "faster_coco_eval" if importlib.util.find_spec("faster_coco_eval") else "pycocotools"


class ObjectDetector(ZooTask):
    """Train and evaluate any zoo detector on ``(images, targets)`` batches.

    Logs the sum of the model's loss terms as ``train/loss`` and every term as ``train/<term>``
    (per epoch; ``train/loss_step`` every ``trainer.log_every_n_steps``). Validation and test log
    COCO's ``map`` (mAP over IoU 0.5:0.95), ``map_50``, ``map_75``, ``mar_100`` and, with
    ``class_metrics``, the AP of every class as ``<stage>/ap/<class name>``; detectors that report
    instance masks (Mask R-CNN), on data with masks, also log mask mAP as ``<stage>/segm_map``,
    ``segm_map_50``, ``segm_map_75`` and ``segm_mar_100``. Objects the data marks
    ``iscrowd`` (COCO's crowds, VOC's difficult objects) are ignored, as COCOeval does. The first
    ``log_images`` validation images of each epoch are logged with true and predicted boxes drawn.

    Args:
        model: registry name of a detector (``zoo models --task detection``) or an ``nn.Module``
            keeping the detector contract.
        num_classes: object classes, background excluded (linked from ``data.num_classes``).
        in_channels: image channels (linked from ``data.in_channels``).
        model_kwargs: further builder arguments, e.g. ``{"backbone": "resnet18"}``.
        class_names: names of classes ``1..num_classes``, in order; stored with the checkpoint.
        optimizer, scheduler, decay_norm_and_bias, weights, freeze, unfreeze_at_epochs,
            head_lr_mult, layer_lr_decay: as in :class:`tasks.ImageClassifier`.
        class_metrics: also compute and log the AP of every class.
        log_images: validation images drawn into the logs each epoch (0: none).
    """

    def __init__(
        self,
        model: str | nn.Module = "tinyssd",
        num_classes: int = 1,
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
        self.num_classes = num_classes
        self.class_names = class_names
        self.class_metrics = class_metrics
        self.log_images = log_images
        self.val_map = self._map_metric("bbox")
        self.test_map = self._map_metric("bbox")
        # Mask mAP, for detectors that report instance masks (Mask R-CNN) on data that has them.
        self.val_segm_map = self._map_metric("segm")
        self.test_segm_map = self._map_metric("segm")

    def _map_metric(self, iou_type: str) -> MeanAveragePrecision:
        metric = MeanAveragePrecision(
            box_format="xyxy",
            iou_type=iou_type,
            iou_thresholds=COCO_IOU_THRESHOLDS,
            rec_thresholds=COCO_RECALL_THRESHOLDS,
            class_metrics=self.class_metrics and iou_type == "bbox",
            backend=_MAP_BACKEND,
        )
        # COCO's protocol scores each image's 100 best detections; detectors that keep more
        # (SSD's 200) are evaluated that way, which needs no warning every epoch.
        metric.warn_on_many_detections = False
        return metric

    def forward(self, images: Tensor | list[Tensor], targets=None):
        return self.model(images, targets)

    def _shared_step(self, batch, stage: str) -> Tensor | list[dict[str, Tensor]]:
        """Training: the summed loss, every term logged. Evaluation: the detections, scored."""
        images, targets = batch
        if stage == "train":
            losses = self.model(images, targets)
            loss = torch.stack(list(losses.values())).sum()
            for name, value in {"loss": loss, **losses}.items():
                # Synced once, at the epoch's end: the mean over every process's batches.
                self.log(
                    f"train/{name}",
                    value,
                    on_step=False,
                    on_epoch=True,
                    batch_size=len(targets),
                    sync_dist=True,
                )
            if self._is_logging_step():
                self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
            return loss
        detections = self.model(images)
        getattr(self, f"{stage}_map").update(_detached(detections), _eval_targets(targets))
        if all("masks" in d for d in detections) and all("masks" in t for t in targets):
            getattr(self, f"{stage}_segm_map").update(
                _detached(detections, masks=True), _eval_targets(targets, masks=True)
            )
        return detections

    def validation_step(self, batch, batch_idx: int) -> None:
        detections = self._shared_step(batch, "val")
        if self._draws(batch_idx):
            self._log_drawings(*batch, detections)

    def _log_drawings(self, images, targets, detections) -> None:
        count = min(self.log_images, len(targets))
        datamodule = getattr(self.trainer, "datamodule", None)
        figure = detections_figure(
            [images[i] for i in range(count)],
            detections[:count],
            targets[:count],
            self.class_names or getattr(datamodule, "classes", None),
            getattr(datamodule, "mean", None),
            getattr(datamodule, "std", None),
        )
        log_png(self, "val/detections", figure)

    def on_validation_epoch_end(self) -> None:
        self._log_map("val")

    def on_test_epoch_end(self) -> None:
        self._log_map("test")

    def _log_map(self, stage: str) -> None:
        segm = getattr(self, f"{stage}_segm_map")
        if segm.update_count:
            self._pad_to_most_images(segm, masks=True)
            results = segm.compute()
            for key in ("map", "map_50", "map_75", "mar_100"):
                self.log(f"{stage}/segm_{key}", results[key])
            segm.reset()
        metric = getattr(self, f"{stage}_map")
        if not metric.update_count:  # an empty stage (limit_val_batches=0) logs nothing
            return
        self._pad_to_most_images(metric)
        results = metric.compute()  # synced across devices
        for key in ("map", "map_50", "map_75", "mar_100"):
            self.log(f"{stage}/{key}", results[key], prog_bar=key in ("map", "map_50"))
        if self.class_metrics:
            names = self.class_names or getattr(self.trainer.datamodule, "classes", None)
            classes = results["classes"].reshape(-1).tolist()
            for label, ap in zip(classes, results["map_per_class"].reshape(-1), strict=True):
                known = names is not None and 0 < label <= len(names)
                self.log(f"{stage}/ap/{names[label - 1] if known else label}", ap)
        metric.reset()

    def _pad_to_most_images(self, metric: MeanAveragePrecision, masks: bool = False) -> None:
        """Under DDP, add images with neither objects nor detections until this process holds as
        many as the process with the most; COCOeval skips such images, so the mAP is unchanged.

        The zoo's datamodules split an evaluation set without repeating images, so processes may
        hold different numbers of them; ``MeanAveragePrecision`` syncs its states one image at a
        time, and processes holding different numbers would wait in different collectives
        (Lightning issue #10508).
        """
        held = len(metric.groundtruth_labels)
        most = self.trainer.strategy.reduce(torch.tensor(held, device=self.device), reduce_op="max")
        missing = int(most) - held
        if missing <= 0:
            return
        # Empty tensors of this process's own dtypes (held >= 1): the gathers exchange raw bytes.
        target = {
            "labels": metric.groundtruth_labels[0][:0],
            "iscrowd": metric.groundtruth_crowds[0][:0],
        }
        detections = {
            "labels": metric.detection_labels[0][:0],
            "scores": metric.detection_scores[0][:0],
        }
        if masks:
            no_masks = torch.zeros(0, 1, 1, dtype=torch.bool, device=self.device)
            target["masks"] = detections["masks"] = no_masks
        else:
            target["boxes"] = metric.groundtruth_box[0][:0]
            detections["boxes"] = metric.detection_box[0][:0]
        metric.update([detections] * missing, [target] * missing)

    def predict_step(self, batch, batch_idx: int) -> list[dict[str, Tensor]]:
        """Detections in the pixels of each image *file*: boxes are scaled from the model's input
        back to the target's ``orig_size``; each dict carries the target's ``image_id``."""
        images, targets = batch if isinstance(batch, (list, tuple)) else (batch, None)
        detections = self.model(images)
        if targets is None:
            return detections
        for detection, image, target in zip(detections, images, targets, strict=True):
            if "orig_size" in target:
                size = tuple(int(v) for v in target["orig_size"])
                detection["boxes"] = scale_boxes(detection["boxes"], tuple(image.shape[-2:]), size)
            if "image_id" in target:
                detection["image_id"] = target["image_id"]
        return detections

    def zoo_record(self) -> dict[str, Any]:
        return super().zoo_record() | {"task": "detection"} | self.data_record(self.class_names)


def _detached(detections: list[dict[str, Tensor]], masks: bool = False) -> list[dict[str, Tensor]]:
    """What MeanAveragePrecision reads from a detection: boxes, or binary masks (the model's
    ``[K, 1, H, W]`` probabilities at 0.5, as torchvision's COCO evaluation does)."""
    kept = []
    for detection in detections:
        entry = {k: detection[k].detach() for k in ("scores", "labels")}
        if masks:
            entry["masks"] = detection["masks"].detach().squeeze(1) > 0.5
        else:
            entry["boxes"] = detection["boxes"].detach()
        kept.append(entry)
    return kept


def _eval_targets(
    targets: Sequence[dict[str, Tensor]], masks: bool = False
) -> list[dict[str, Tensor]]:
    """What MeanAveragePrecision reads from a target: boxes (or masks), labels, and crowds to
    ignore."""
    kept = []
    for target in targets:
        entry = {"labels": target["labels"]}
        if masks:
            entry["masks"] = target["masks"].bool()
        else:
            entry["boxes"] = target["boxes"]
        if "iscrowd" in target:
            entry["iscrowd"] = target["iscrowd"]
        kept.append(entry)
    return kept


class COCOResultsWriter(BasePredictionWriter):
    """Writes ``zoo predict``'s detections as a COCO results file, which
    ``pycocotools.coco.COCO.loadRes`` reads and ``COCOeval`` scores.

    Each detection becomes ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` in the
    pixels of the image file. Labels map back to the data module's ``category_ids`` (COCO's own
    ids) when it has them. Under DDP every rank writes its own file (``.rank<N>`` before the
    suffix).

    Args:
        output_file: the JSON file; relative paths are under the trainer's ``default_root_dir``.
    """

    def __init__(self, output_file: str = "predictions.json") -> None:
        super().__init__(write_interval="epoch")
        self.output_file = output_file

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices,
    ) -> None:
        category_ids = getattr(trainer.datamodule, "category_ids", None)
        results = []
        for batch in predictions:
            for detection in batch:
                if "image_id" not in detection:
                    raise ValueError(
                        "COCOResultsWriter needs each target's image_id; the detection data "
                        "modules (COCO, VOCDetection, DigitScenes) provide it"
                    )
                image_id = int(detection["image_id"])
                boxes = convert_boxes(detection["boxes"].float().cpu(), "xyxy", "xywh")
                labels = detection["labels"].tolist()
                for box, label, score in zip(
                    boxes.tolist(), labels, detection["scores"].tolist(), strict=True
                ):
                    category = category_ids[label - 1] if category_ids else label
                    results.append(
                        {
                            "image_id": image_id,
                            "category_id": int(category),
                            "bbox": box,
                            "score": float(score),
                        }
                    )
        path = Path(self.output_file)
        if not path.is_absolute():
            path = Path(trainer.default_root_dir) / path
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results))
        print(f"wrote {len(results)} detections to {path}")
