"""Augmentation presets for file-backed datamodules, chosen by name in configs.

Image augmentation as the course teaches it (Section 14.1): a random left-right flip, a
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
                      (Section 14.2)
``"course"``          ``"crop_flip"``, then colour jitter: brightness, contrast and saturation
                      each times 0.5-1.5, hue shifted by up to half the colour circle
                      (Section 14.1's combined example)
====================  =========================================================================

Detection pipelines (:func:`detection_train_transform`, :func:`detection_eval_transform`)
move ``pascal_voc`` boxes (pixel-edge ``x1, y1, x2, y2``) and instance masks with the image.
``image_size`` None keeps every image's own size; an int resizes to a square
``image_size`` x ``image_size`` with no crop, boxes scaled with it, as SSD and TinySSD
expect. Evaluation is that resize alone. The presets that crop need an int ``image_size``:

====================  =========================================================================
detection preset      training pipeline
====================  =========================================================================
``"none"``            the evaluation pipeline: no augmentation
``"flip"``            the evaluation pipeline, then a left-right flip with probability 1/2
``"crop"``            SSD's zoom (Liu et al. 2016, sections 2.2 and 3.6; SSD is d2l's 14.7): half
                      the time zoom out onto a canvas of the mean colour up to 3 times the
                      image's sides, then zoom in on a random crop that contains every object
                      (bar up to 15% of the spread of several), resized to ``image_size``
``"crop_colour"``     colour jitter (SSD's: brightness times 0.75-1.25, contrast and saturation
                      times 0.5-1.5, hue shifted by up to 18 degrees), then ``"crop"``; no flip,
                      for digits and text, whose mirror image is no longer one
``"crop_flip"``       ``"crop"``, then a flip
``"ssd"``             colour jitter, ``"crop"``, then a flip: the SSD paper's recipe
====================  =========================================================================

In training, a box less than 30% of which is still in view after a crop is dropped with
its label and mask, since the object it names is mostly gone; so is any box thinner than a
pixel of the output. Evaluation drops none, bar those with nothing in the image: a box of
zero or negative width or height once clipped to the image (wholly outside it, inverted, NaN),
which both kinds of pipeline drop with its id rather than fail on.

Segmentation pipelines (:func:`segmentation_train_transform`,
:func:`segmentation_eval_transform`) move a class-index mask with the image, resampled
nearest-neighbour so it keeps its values. Evaluation keeps each image whole, at its own size,
so that the metrics cover every labelled pixel. The presets that crop need ``crop_size``
(height, width); where an image is smaller than the crop it is padded at the bottom and right
first, the image with the mean colour (0 after standardisation) and the mask with 255, which
the loss and the metrics ignore:

=====================  ========================================================================
segmentation preset    training pipeline
=====================  ========================================================================
``"none"``             the evaluation pipeline: no augmentation
``"flip"``             a left-right flip with probability 1/2
``"crop"``             a random ``crop_size`` crop, the same window of image and mask: the
                       course's ``voc_rand_crop`` (Section 14.9.2)
``"crop_flip"``        ``"crop"``, then a flip
``"scale_crop"``       a random rescale by 0.5-2.0 (both sides by one factor), then ``"crop"``;
                       no flip, for digits and text, whose mirror image is no longer one
``"scale_crop_flip"``  ``"scale_crop"``, then a flip: torchvision's segmentation reference recipe
=====================  ========================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

__all__ = [
    "BOX_IDS",
    "DETECTION_PRESETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SEGMENTATION_PRESETS",
    "SMALL_IMAGES",
    "TRAIN_PRESETS",
    "check_detection_preset",
    "check_preset",
    "check_segmentation_preset",
    "crop_height_width",
    "standardisation",
    "detection_eval_transform",
    "detection_train_transform",
    "eval_transform",
    "segmentation_eval_transform",
    "segmentation_preset_crops",
    "segmentation_train_transform",
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


# -- detection: box- and mask-aware pipelines ------------------------------------------------

# name -> its steps, applied in this order: colour on the whole photo first, as in SSD, so the
# zoom-out canvas stays the mean colour (0 after standardisation); the flip last, on the
# smallest image.
_DETECTION_STEPS: dict[str, tuple[str, ...]] = {
    "none": (),
    "flip": ("flip",),
    "crop": ("crop",),
    "crop_colour": ("colour", "crop"),
    "crop_flip": ("crop", "flip"),
    "ssd": ("colour", "crop", "flip"),
}
DETECTION_PRESETS: tuple[str, ...] = tuple(_DETECTION_STEPS)

# The label field that travels with the boxes: each box's position in the input, so the
# caller can pick the labels, crowd flags and masks of the boxes a crop keeps.
BOX_IDS = "box_ids"


def check_detection_preset(
    preset: str, image_size: int | None, owner: str = "detection_train_transform"
) -> None:
    """Raise a ``ValueError`` naming the fix if ``preset`` is unknown or crops without a size."""
    if preset not in _DETECTION_STEPS:
        raise ValueError(
            f"{owner}: unknown detection preset train_transforms={preset!r}; choose one of "
            f"{', '.join(map(repr, DETECTION_PRESETS))} (see datamodules.transforms)"
        )
    if "crop" in _DETECTION_STEPS[preset] and image_size is None:
        raise ValueError(
            f"{owner}: train_transforms={preset!r} crops and resizes to image_size, which is "
            "None; set image_size (e.g. --data.image_size 300 for SSD), or use 'none' or "
            "'flip' to keep each image's own size"
        )


def _box_params(train: bool) -> A.BboxParams:
    # clip: a box a pixel over the edge (float rounding, a zoom-out) is trimmed, never an
    # error. filter_invalid_bboxes: a box with nothing left in view once clipped (empty,
    # inverted, wholly outside, NaN) is dropped with its id; without it albumentations raises
    # on it in its own normalised coordinates, which name neither the box nor the fix.
    # Training drops the boxes a crop leaves mostly out of view or thinner than a pixel;
    # evaluation only resizes, so it keeps every box that has an area.
    return A.BboxParams(
        format="pascal_voc",
        label_fields=[BOX_IDS],
        clip=True,
        filter_invalid_bboxes=True,
        min_visibility=0.3 if train else 0.0,
        min_width=1.0 if train else 0.0,
        min_height=1.0 if train else 0.0,
    )


def _detection_resize(image_size: int | None) -> list[A.BasicTransform]:
    if image_size is None:
        # A no-op that takes boxes: albumentations warns about a pipeline that has none.
        return [A.NoOp()]
    return [A.Resize(image_size, image_size, area_for_downscale=_AREA)]


def _ssd_colour() -> A.BasicTransform:
    # SSD's photometric distortion: brightness +-32 of 255 (about +-25% of a mid grey),
    # contrast and saturation 0.5-1.5, hue +-18 degrees (0.05 of the colour circle).
    return A.ColorJitter(brightness=0.25, contrast=0.5, saturation=0.5, hue=0.05, p=1.0)


def _ssd_zoom(image_size: int, mean: Sequence[float]) -> list[A.BasicTransform]:
    fill = tuple(255 * value for value in mean)
    return [
        # Zoom out: pad each side by up to its own length, so small objects are seen as
        # large ones are (SSD's "expansion"); the canvas takes the mean colour.
        A.CropAndPad(
            percent=(0.0, 1.0),
            sample_independently=True,
            keep_size=False,
            fill=fill,
            fill_mask=0,
            p=0.5,
        ),
        # Zoom in: a random crop that still contains every box (erosion lets a crop of
        # several objects trim up to 15% of their spread on each side), resized.
        A.RandomSizedBBoxSafeCrop(height=image_size, width=image_size, erosion_rate=0.3),
    ]


def detection_train_transform(
    preset: str,
    image_size: int | None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    masks: bool = False,
) -> A.Compose:
    """The training pipeline of a detection preset (see the module's second table).

    Args:
        preset: one of :data:`DETECTION_PRESETS`.
        image_size: side of the square output; None keeps each image's size (only for
            ``"none"`` and ``"flip"``).
        mean, std: per-channel standardisation, in [0, 1] units; the zoom-out canvas is
            filled with ``mean``.
        masks: the caller passes instance masks too; they are resampled nearest-neighbour
            so they stay binary.

    Returns:
        ``Compose`` called as ``pipeline(image=[H, W, C] uint8, bboxes=[N, 4] float xyxy
        pixels, box_ids=[N] int[, masks=[N, H, W] uint8])``, returning the image as a
        ``[C, H', W']`` float32 tensor, the kept ``bboxes`` and their ``box_ids`` (the
        positions of the kept boxes in the input), and ``masks`` as an ``[N, H', W']``
        tensor for all N input boxes.

    Raises:
        ValueError: for an unknown preset, or one that crops with ``image_size=None``.
    """
    check_detection_preset(preset, image_size)
    steps = _DETECTION_STEPS[preset]
    pipeline: list[A.BasicTransform] = [_ssd_colour()] if "colour" in steps else []
    if "crop" in steps:
        pipeline += _ssd_zoom(image_size, mean)
    else:
        pipeline += _detection_resize(image_size)
    if "flip" in steps:
        pipeline.append(A.HorizontalFlip(p=0.5))
    return _finish(pipeline, mean, std, _detection_compose_kwargs(train=True, masks=masks))


def detection_eval_transform(
    image_size: int | None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    masks: bool = False,
) -> A.Compose:
    """The detection evaluation pipeline: resize to ``image_size`` squared (none if None),
    standardisation, tensor; boxes scaled with the image, none dropped but those with nothing
    in view (see the module docstring). Arguments and call as in
    :func:`detection_train_transform`."""
    return _finish(
        _detection_resize(image_size), mean, std, _detection_compose_kwargs(False, masks)
    )


def _detection_compose_kwargs(train: bool, masks: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"bbox_params": _box_params(train)}
    if masks:
        kwargs["mask_interpolation"] = cv2.INTER_NEAREST
    return kwargs


# -- segmentation: mask-aware pipelines ------------------------------------------------------

# name -> its steps, in this order: the rescale before the crop, so the crop takes a window of
# the rescaled image (torchvision's reference); the flip last, on the smallest image.
_SEGMENTATION_STEPS: dict[str, tuple[str, ...]] = {
    "none": (),
    "flip": ("flip",),
    "crop": ("crop",),
    "crop_flip": ("crop", "flip"),
    "scale_crop": ("scale", "crop"),
    "scale_crop_flip": ("scale", "crop", "flip"),
}
SEGMENTATION_PRESETS: tuple[str, ...] = tuple(_SEGMENTATION_STEPS)
# What training does with an image smaller than the crop: pad it, or leave it out at setup.
SMALL_IMAGES: tuple[str, ...] = ("pad", "drop")
_IGNORE = 255  # the mask value of pixels the loss and the metrics skip (VOC's "void")


def crop_height_width(crop_size: int | Sequence[int] | None, owner: str) -> tuple[int, int] | None:
    """``crop_size`` as a checked ``(height, width)``: an int is a square; None stays None."""
    if crop_size is None:
        return None
    sides = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    if len(sides) != 2 or not all(isinstance(s, int) and s >= 1 for s in sides):
        raise ValueError(
            f"{owner}: crop_size={crop_size!r} must be a positive int (a square) or a (height, "
            "width) pair, e.g. [320, 480] as in the course; or None to keep each image's size"
        )
    return int(sides[0]), int(sides[1])


def check_segmentation_preset(
    preset: str,
    crop_size: int | Sequence[int] | None,
    owner: str = "segmentation_train_transform",
) -> None:
    """Raise a ``ValueError`` naming the fix if ``preset`` is unknown or crops without a size."""
    if preset not in _SEGMENTATION_STEPS:
        raise ValueError(
            f"{owner}: unknown segmentation preset train_transforms={preset!r}; choose one of "
            f"{', '.join(map(repr, SEGMENTATION_PRESETS))} (see datamodules.transforms)"
        )
    if segmentation_preset_crops(preset) and crop_size is None:
        raise ValueError(
            f"{owner}: train_transforms={preset!r} crops to crop_size, which is None; set "
            "crop_size (e.g. --data.crop_size '[320, 480]' as in the course), or use 'none' or "
            "'flip' to train on whole images"
        )


def segmentation_preset_crops(preset: str) -> bool:
    """Whether the (checked) segmentation ``preset`` crops to ``crop_size``."""
    return "crop" in _SEGMENTATION_STEPS[preset]


def segmentation_train_transform(
    preset: str,
    crop_size: int | Sequence[int] | None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    small_images: str = "pad",
) -> A.Compose:
    """The training pipeline of a segmentation preset (see the module's third table).

    Args:
        preset: one of :data:`SEGMENTATION_PRESETS`.
        crop_size: ``(height, width)`` of the crops, an int for a square; the presets
            without a crop ignore it.
        mean, std: per-channel standardisation, in [0, 1] units; padding takes the colour
            ``mean``.
        small_images: ``"pad"`` pads an image smaller than the crop up to it; ``"drop"``
            means the caller has left such images out, so there is no padding step, except
            after a rescale, which can shrink any image below the crop.

    Returns:
        ``Compose`` called as ``pipeline(image=[H, W, C] uint8, mask=[H, W] uint8)``,
        returning the image as a ``[C, H', W']`` float32 tensor and the mask as an
        ``[H', W']`` uint8 tensor, ``(H', W') = crop_size`` for the cropping presets.

    Raises:
        ValueError: for an unknown preset or ``small_images``, or a crop without a size.
    """
    check_segmentation_preset(preset, crop_size)
    if small_images not in SMALL_IMAGES:
        raise ValueError(
            f"segmentation_train_transform: small_images={small_images!r} must be 'pad' or 'drop'"
        )
    steps = _SEGMENTATION_STEPS[preset]
    pipeline: list[A.BasicTransform] = []
    if "scale" in steps:
        # One factor for both sides, 1 + U(-0.5, 1.0): torchvision's reference draws the
        # shorter side between 0.5 and 2 times its base size.
        pipeline.append(A.RandomScale(scale_limit=(-0.5, 1.0), area_for_downscale=_AREA, p=1.0))
    if "crop" in steps:
        height, width = crop_height_width(crop_size, "segmentation_train_transform")
        if small_images == "pad" or "scale" in steps:
            # Bottom and right, as torchvision's reference and collate_segmentation pad; the
            # mean colour rounded to whole pixel values, so it standardises to about 0.
            fill = tuple(float(round(255 * value)) for value in mean)
            pipeline.append(
                A.PadIfNeeded(
                    min_height=height,
                    min_width=width,
                    position="top_left",
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=fill,
                    fill_mask=_IGNORE,
                )
            )
        pipeline.append(A.RandomCrop(height, width))
    if "flip" in steps:
        pipeline.append(A.HorizontalFlip(p=0.5))
    return _finish(pipeline, mean, std, {"mask_interpolation": cv2.INTER_NEAREST})


def segmentation_eval_transform(
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """The segmentation evaluation pipeline: standardisation and a tensor, nothing else, so
    the model sees the whole image at its own size. Called as in
    :func:`segmentation_train_transform`."""
    return _finish([], mean, std, {"mask_interpolation": cv2.INTER_NEAREST})


def standardisation(
    owner: str,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    in_channels: int,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Checked mean and std, ImageNet's by default (their channel mean for grey images)."""
    grey = in_channels == 1
    if mean is None:
        mean = (sum(IMAGENET_MEAN) / 3,) if grey else IMAGENET_MEAN
    if std is None:
        std = (sum(IMAGENET_STD) / 3,) if grey else IMAGENET_STD
    for argument, values in (("mean", mean), ("std", std)):
        if len(values) != in_channels:
            raise ValueError(
                f"{owner}: {argument}={list(values)} has {len(values)} values for "
                f"in_channels={in_channels}; give one per channel"
            )
    if min(std) <= 0:
        raise ValueError(f"{owner}: std={list(std)} must be positive")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
