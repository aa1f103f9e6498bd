"""Augmentation presets for file-backed datamodules, chosen by name in configs.

Image augmentation as the course teaches it (Section 13.1): a random left-right flip, a
random crop of random area and aspect ratio resized to the model's input size, and a
random change of brightness, contrast, saturation and hue. Evaluation resizes the shorter
side to ``resize_size`` and takes the centre ``image_size`` square, as torchvision's
ImageNet evaluation transform does (256 then 224).

Each pipeline is an ``albumentations.Compose`` that takes an ``[H, W, C]`` uint8 array and
ends by standardising with ``mean`` / ``std`` and converting to a ``[C, H, W]`` float32
tensor. Extra keyword arguments go to ``Compose``, so detection and segmentation pass
``bbox_params`` or masks through the same presets: flip and crop move boxes and masks with
the image, colour jitter leaves them alone.

====================  =========================================================================
preset                training pipeline
====================  =========================================================================
``"none"``            the evaluation pipeline: no augmentation
``"flip"``            the evaluation pipeline, then a left-right flip with probability 1/2
``"crop_flip"``       random-resized crop (scale 0.08-1, ratio 3/4-4/3) to ``image_size``, then
                      a flip: torchvision's ImageNet recipe and the course's fine-tuning one
                      (Section 13.2)
``"course"``          ``"crop_flip"``, then colour jitter: brightness, contrast and saturation
                      each times 0.5-1.5, hue shifted by up to half the colour circle
                      (Section 13.1's combined example)
====================  =========================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
from albumentations.pytorch import ToTensorV2

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TRAIN_PRESETS",
    "check_preset",
    "eval_transform",
    "train_transform",
]

# torchvision's ImageNet statistics, which every ImageNet-pretrained model expects.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Shrinking with plain bilinear interpolation aliases (a 500-pixel photo cropped to 224
# skips pixels); OpenCV's area interpolation averages them, as PIL's antialiased resize
# in torchvision's transforms does.
_AREA = "image"


def _resize_center_crop(image_size: int, resize_size: int) -> list[A.BasicTransform]:
    return [
        A.SmallestMaxSize(max_size=resize_size, area_for_downscale=_AREA),
        A.CenterCrop(image_size, image_size),
    ]


def _none(image_size: int, resize_size: int) -> list[A.BasicTransform]:
    return _resize_center_crop(image_size, resize_size)


def _flip(image_size: int, resize_size: int) -> list[A.BasicTransform]:
    # After the crop, so that a flipped output is exactly the mirror of the unflipped one.
    return [*_resize_center_crop(image_size, resize_size), A.HorizontalFlip(p=0.5)]


def _crop_flip(image_size: int, resize_size: int) -> list[A.BasicTransform]:
    return [
        A.RandomResizedCrop(
            size=(image_size, image_size),
            scale=(0.08, 1.0),
            ratio=(3 / 4, 4 / 3),
            area_for_downscale=_AREA,
        ),
        A.HorizontalFlip(p=0.5),
    ]


def _course(image_size: int, resize_size: int) -> list[A.BasicTransform]:
    # Colour jitter last: on the image_size crop it costs a fraction of the full photo's.
    # p=1 as in torchvision's ColorJitter (albumentations applies it half the time by
    # default); each factor is drawn from [1 - 0.5, 1 + 0.5], hue from [-0.5, 0.5].
    jitter = A.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.5, p=1.0)
    return [*_crop_flip(image_size, resize_size), jitter]


# name -> the preset's geometric and colour transforms (normalisation is added for all).
TRAIN_PRESETS: dict[str, Callable[[int, int], list[A.BasicTransform]]] = {
    "none": _none,
    "flip": _flip,
    "crop_flip": _crop_flip,
    "course": _course,
}


def check_preset(preset: str, owner: str = "train_transform") -> None:
    """Raise a ``ValueError`` naming the presets if ``preset`` is not one of them."""
    if preset not in TRAIN_PRESETS:
        raise ValueError(
            f"{owner}: unknown augmentation preset train_transforms={preset!r}; choose one "
            f"of {', '.join(map(repr, TRAIN_PRESETS))} (see datamodules.transforms)"
        )


def _finish(
    transforms: list[A.BasicTransform],
    mean: Sequence[float],
    std: Sequence[float],
    compose_kwargs: dict[str, Any],
) -> A.Compose:
    normalize = A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0)
    return A.Compose([*transforms, normalize, ToTensorV2()], **compose_kwargs)


def train_transform(
    preset: str,
    image_size: int = 224,
    resize_size: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    **compose_kwargs: Any,
) -> A.Compose:
    """The training pipeline of a named preset (see the module's table).

    Args:
        preset: one of :data:`TRAIN_PRESETS`.
        image_size: side of the square output.
        resize_size: shorter side before the centre crop, for the presets without a
            random crop.
        mean, std: per-channel standardisation, in [0, 1] units.
        **compose_kwargs: passed to ``albumentations.Compose`` (``bbox_params``,
            ``additional_targets``, ``seed``).

    Returns:
        ``Compose`` taking ``image=`` an ``[H, W, C]`` uint8 array and returning
        ``{"image": [C, image_size, image_size] float32 tensor, ...}``.
    """
    check_preset(preset)
    return _finish(TRAIN_PRESETS[preset](image_size, resize_size), mean, std, compose_kwargs)


def eval_transform(
    image_size: int = 224,
    resize_size: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    **compose_kwargs: Any,
) -> A.Compose:
    """The evaluation pipeline: shorter side to ``resize_size``, centre ``image_size`` crop,
    standardisation, tensor. Arguments as in :func:`train_transform`."""
    return _finish(_resize_center_crop(image_size, resize_size), mean, std, compose_kwargs)
