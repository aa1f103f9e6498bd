"""The contract every zoo detector keeps, so one task, one metric and one ``predict`` serve them all.

A detector follows torchvision's convention: ``model(images, targets)`` in training mode returns a
dict of named loss terms; ``model(images)`` in eval mode returns one dict per image,
``{"boxes": [K, 4] xyxy pixels, "scores": [K], "labels": [K]}``, with labels in ``1..num_classes``
(0 is background). Images are a ``[B, C, H, W]`` tensor or a list of ``[C, H, W]`` tensors, already
normalised; boxes are in pixels of the images as given. :meth:`Detector.predict` adds the
preprocessing of ``pretrained_cfg`` and maps boxes back to the caller's pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from zoo.detection.boxes import scale_boxes

__all__ = ["Detector", "Detections", "Targets", "stack_images"]

Targets = Sequence[Mapping[str, Tensor]]
Detections = list[dict[str, Tensor]]


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


class Detector(nn.Module):
    """Base of the zoo's detectors: the output convention above and :meth:`predict`.

    Attributes:
        num_classes: object classes, background excluded (labels are ``1..num_classes``).
        in_channels: image channels the detector takes.
    """

    num_classes: int
    in_channels: int

    def check_targets(self, targets: Targets | None) -> Targets:
        """The training targets, or a ``ValueError`` saying what is missing or out of range."""
        name = type(self).__name__
        if targets is None:
            raise ValueError(
                f"{name} in training mode needs targets (a list of {{'boxes', 'labels'}} dicts); "
                "call model.eval() to detect"
            )
        # One check over the whole batch: a single host-device sync per step on a GPU.
        labels = torch.cat([target["labels"].reshape(-1) for target in targets])
        if labels.numel() and bool(((labels < 1) | (labels > self.num_classes)).any()):
            raise ValueError(
                f"{name}: target labels {labels.unique().tolist()} include some outside "
                f"1..{self.num_classes} (0 is background and never a target): set num_classes "
                "to the data module's number of classes"
            )
        return targets

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
        return detections


def _image_size(image: Any) -> tuple[int, int]:
    """``(H, W)`` of a PIL image or a ``[..., H, W]`` tensor."""
    if isinstance(image, Tensor):
        return int(image.shape[-2]), int(image.shape[-1])
    width, height = image.size  # PIL
    return int(height), int(width)
