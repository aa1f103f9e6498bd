"""The contract every zoo detector keeps, so one task, one metric and one ``predict`` serve them all.

A detector follows torchvision's convention: ``model(images, targets)`` in training mode returns a
dict of named loss terms; ``model(images)`` in eval mode returns one dict per image,
``{"boxes": [K, 4] xyxy pixels, "scores": [K], "labels": [K]}``, with labels in ``1..num_classes``
(0 is background); instance segmenters (Mask R-CNN) add ``"masks"``, ``[K, 1, H, W]``
probabilities over the image (torchvision's layout). Images are a ``[B, C, H, W]`` tensor or a
list of ``[C, H, W]`` tensors, already normalised; boxes are in pixels of the images as given.
:meth:`Detector.predict` adds the preprocessing of ``pretrained_cfg`` and maps boxes (and masks)
back to the caller's pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from zoo.detection.boxes import scale_boxes

__all__ = ["Detector", "Detections", "ResizeTransform", "Targets", "image_list", "stack_images"]

Targets = Sequence[Mapping[str, Tensor]]
Detections = list[dict[str, Tensor]]


def image_list(images: Tensor | Sequence[Tensor], owner: str) -> list[Tensor]:
    """``images`` as a list of ``[C, H, W]`` tensors (sizes may differ), for detectors that
    resize and batch inside, as torchvision's do."""
    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise ValueError(
                f"{owner}: images must be [B, C, H, W] or a list of [C, H, W], got "
                f"{tuple(images.shape)}"
            )
        return list(images.unbind(0))
    return list(images)


def stack_images(images: Tensor | Sequence[Tensor], owner: str) -> Tensor:
    """``images`` as one ``[B, C, H, W]`` tensor; a list must share one size (for detectors
    whose anchors are laid out for a fixed input, like SSD's)."""
    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise ValueError(f"{owner}: images must be [B, C, H, W], got {tuple(images.shape)}")
        return images
    sizes = {tuple(image.shape) for image in images}
    if len(sizes) > 1:
        raise ValueError(
            f"{owner} needs images of one size, got {sorted(sizes)}: set the data module's "
            "image_size (--data.init_args.image_size 64) so that every image is resized to it"
        )
    return torch.stack(list(images))


class ResizeTransform(GeneralizedRCNNTransform):
    """torchvision's detection input step (resize, batch with padding, boxes and masks scaled
    along, detections scaled back) without its normalisation.

    Zoo detectors take images the data module (or ``pretrained_cfg.transforms()``) has already
    normalised, like every zoo model, so the families composed from torchvision's (SSD, Faster
    and Mask R-CNN) resize with this and normalise nothing. Its outputs equal torchvision's on
    the same images normalised outside.

    Args:
        min_size, max_size: the shorter side is resized to ``min_size`` unless the longer would
            pass ``max_size`` (the R-CNN family's 800 / 1333); ignored with ``fixed_size``.
        in_channels: image channels.
        fixed_size: ``(W, H)`` every image is resized to (SSD's 300 x 300); torchvision's order.
        size_divisible: padded batches are a multiple of this (32 for FPN's strides).
    """

    def __init__(
        self,
        min_size: int,
        max_size: int,
        in_channels: int = 3,
        fixed_size: tuple[int, int] | None = None,
        size_divisible: int = 32,
    ) -> None:
        super().__init__(
            min_size,
            max_size,
            image_mean=[0.0] * in_channels,
            image_std=[1.0] * in_channels,
            size_divisible=size_divisible,
            fixed_size=fixed_size,
        )

    def normalize(self, image: Tensor) -> Tensor:
        return image


class Detector(nn.Module):
    """Base of the zoo's detectors: the output convention above and :meth:`predict`.

    Attributes:
        num_classes: object classes, background excluded (labels are ``1..num_classes``).
        in_channels: image channels the detector takes.
    """

    num_classes: int
    in_channels: int

    def check_targets(self, targets: Targets | None) -> Targets:
        """The training targets, or a ``ValueError`` saying what is missing or out of range.

        Refused: a target without ``"boxes"`` ``[N, 4]`` and ``"labels"`` ``[N]``, a label
        outside ``1..num_classes``, and a box that is not finite or has ``x2 < x1`` or
        ``y2 < y1`` (not xyxy): either would reach the loss as NaN or as a meaningless target.
        Empty boxes (``x2 == x1``) pass: no anchor or cell overlaps them, so they train nothing.
        """
        name = type(self).__name__
        if targets is None:
            raise ValueError(
                f"{name} in training mode needs targets (a list of {{'boxes', 'labels'}} dicts); "
                "call model.eval() to detect"
            )
        for i, target in enumerate(targets):
            if "boxes" not in target or "labels" not in target:
                raise ValueError(
                    f"{name}: targets[{i}] has keys {sorted(target)}; each target needs 'boxes' "
                    "[N, 4] xyxy pixels and 'labels' [N] (the data modules' batch format)"
                )
            boxes, labels = target["boxes"], target["labels"]
            if boxes.dim() != 2 or boxes.shape[1] != 4 or labels.shape != boxes.shape[:1]:
                raise ValueError(
                    f"{name}: targets[{i}] has boxes of shape {tuple(boxes.shape)} and labels "
                    f"of shape {tuple(labels.shape)}; give boxes as [N, 4] and one label per box"
                )
        if not targets:
            return targets
        # One check over the whole batch: a single host-device sync per step on a GPU.
        labels = torch.cat([target["labels"] for target in targets])
        boxes = torch.cat([target["boxes"] for target in targets])
        bad_labels = (labels < 1) | (labels > self.num_classes)
        bad_boxes = ~torch.isfinite(boxes).all(dim=1) | (boxes[:, 2:] < boxes[:, :2]).any(dim=1)
        if not bool(bad_labels.any() | bad_boxes.any()):
            return targets
        if bool(bad_labels.any()):
            raise ValueError(
                f"{name}: target labels {labels.unique().tolist()} include some outside "
                f"1..{self.num_classes} (0 is background and never a target): set num_classes "
                "to the data module's number of classes"
            )
        raise ValueError(_bad_box_message(name, targets, int(bad_boxes.nonzero()[0, 0])))

    def num_classes_in(self, state: Mapping[str, Tensor]) -> int:
        """The ``num_classes`` a state dict of this family (zoo keys) was trained with, read from
        the shape of its class predictor: how a bare weights file is loaded at its own shape
        before :func:`zoo.adapt` fits it to the classes asked for."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot read its number of classes from a state dict; load "
            "a checkpoint a zoo task wrote (it records num_classes) instead of a bare state dict"
        )

    @torch.no_grad()
    def predict(self, images: Any | Sequence[Any]) -> Detections:
        """Detect objects in images as they come from a file: boxes in their own pixels.

        Each image (a PIL image, or a ``[C, H, W]`` uint8 tensor) goes through
        ``pretrained_cfg.transforms()`` (resize and normalise as in training); the boxes found
        are scaled back to the image's own size. Without a ``pretrained_cfg``, images are taken
        as ``[C, H, W]`` tensors ready for the model. The model is switched to eval mode.

        Returns:
            One ``{"boxes", "scores", "labels"}`` dict per image (a list even for one image).
        """
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        cfg = getattr(self, "pretrained_cfg", None)
        transform = cfg.transforms() if cfg is not None else None
        device = next(self.parameters()).device
        inputs, sizes = [], []
        for image in images:
            x = transform(image) if transform is not None else image
            inputs.append(x.to(device))
            sizes.append(_image_size(image))
        self.eval()
        detections = self(inputs)
        for detection, x, size in zip(detections, inputs, sizes, strict=True):
            detection["boxes"] = scale_boxes(detection["boxes"], tuple(x.shape[-2:]), size)
            if "masks" in detection and tuple(x.shape[-2:]) != size:
                # Instance masks ([K, 1, H, W] probabilities) follow their boxes to that size.
                masks = detection["masks"]
                detection["masks"] = F.interpolate(masks, size=size, mode="bilinear")
        return detections


def _bad_box_message(name: str, targets: Targets, position: int) -> str:
    """What is wrong with the box at ``position`` of the batch's concatenated boxes."""
    image = 0
    while position >= len(targets[image]["boxes"]):
        position -= len(targets[image]["boxes"])
        image += 1
    box = targets[image]["boxes"][position]
    where = f"{name}: targets[{image}]['boxes'][{position}] = {box.tolist()}"
    if not bool(torch.isfinite(box).all()):
        return (
            f"{where} is not finite; fix or drop that box in the annotations (the zoo's data "
            "modules drop such boxes when they load them)"
        )
    return (
        f"{where} has x2 < x1 or y2 < y1; boxes must be xyxy pixels with x1 <= x2 and y1 <= y2: "
        "convert xywh or cxcywh boxes with zoo.detection.boxes.convert_boxes"
    )


def _image_size(image: Any) -> tuple[int, int]:
    """``(H, W)`` of a PIL image or a ``[..., H, W]`` tensor."""
    if isinstance(image, Tensor):
        return int(image.shape[-2]), int(image.shape[-1])
    width, height = image.size  # PIL
    return int(height), int(width)
