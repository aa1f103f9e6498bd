"""DigitScenes as datamodules: the embedded default for detection and segmentation, read by the
real COCO and VOC loaders.

The scenes (scikit-learn's handwritten digits composed onto 64 x 64 canvases; see
:func:`datamodules.scenes.write_digit_scenes`) are written on first use under ``root`` as a COCO
tree and a VOCdevkit tree. :class:`DigitScenes` reads the COCO tree with
:class:`~datamodules.COCO`, and :class:`DigitScenesSegmentation` the VOC tree's class masks
with :class:`~datamodules.VOCSegmentation`, so the embedded defaults run the same code as real
data; ``VOCDetection(root + "/VOCdevkit/VOC2012", classes="found")`` reads the VOC boxes. With
the same scene arguments the two datamodules share one tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._paths import data_root
from .coco import COCO
from .scenes import write_digit_scenes
from .voc import VOCSegmentation

__all__ = ["DIGIT_CLASSES", "DigitScenes", "DigitScenesSegmentation"]

# COCO category id d + 1 names the digit d (write_digit_scenes' categories); in the class
# masks, value d + 1 is the digit d and 0 the background.
DIGIT_CLASSES = [str(digit) for digit in range(10)]


def _scene_arguments(
    num_train: int,
    num_val: int,
    scene_size: int,
    digits_per_image: tuple[int, int],
    digit_scale: tuple[float, float],
    scene_seed: int,
) -> dict[str, Any]:
    """The datamodules' scene arguments in :func:`write_digit_scenes`' names."""
    return {
        "num_train": num_train,
        "num_val": num_val,
        "image_size": scene_size,
        "digits_per_image": tuple(digits_per_image),
        "digit_scale": tuple(digit_scale),
        "seed": scene_seed,
    }


class _WritesScenes:
    """``prepare_data`` writes the scenes (once); ``setup`` makes sure it ran, so that
    ``setup()`` alone works outside a Trainer."""

    scenes_root: Path
    scene_arguments: dict[str, Any]

    def prepare_data(self) -> None:
        """Write the scenes, or check that the tree there has the same arguments."""
        write_digit_scenes(self.scenes_root, **self.scene_arguments)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # a no-op once written
        super().setup(stage)  # type: ignore[misc]  # the datamodule's, next in the MRO


class DigitScenes(_WritesScenes, COCO):
    """Handwritten digits in scenes, 2-6 per image, as a COCO detection dataset (no download).

    ``prepare_data`` writes the scenes under ``root`` unless a tree of the same arguments is
    there already (a few seconds for the default 4,000 + 500 images); a tree of other arguments
    is an error that names them. Train and val scenes draw on disjoint digit samples, so
    validation digits were never seen in training. Labels ``1..10`` are the digits ``0..9``.

    Args:
        root: where the scenes live (``root/coco``, ``root/VOCdevkit``, ``root/scenes.json``);
            None: ``$ZOO_DATA/digit_scenes`` (``data/digit_scenes`` without ``ZOO_DATA``).
        num_train, num_val: scenes per split.
        scene_size: side of the written images, in pixels.
        digits_per_image: (min, max) digits per scene.
        digit_scale: (min, max) side of a digit as a share of ``scene_size``.
        scene_seed: seed of the scenes (the data); ``seed`` seeds the training run's split.
        image_size: side the images are resized to for the model; None keeps ``scene_size``.
        train_transforms: detection augmentation preset; the default crops and jitters colour
            but never flips (a mirrored digit is no digit).
        **kwargs: masks, normalisation, channels, batch size, workers; see
            :class:`~datamodules.DetectionDataModule`.
    """

    def __init__(
        self,
        root: str | None = None,
        num_train: int = 4000,
        num_val: int = 500,
        scene_size: int = 64,
        digits_per_image: tuple[int, int] = (2, 6),
        digit_scale: tuple[float, float] = (0.2, 0.5),
        scene_seed: int = 0,
        image_size: int | None = 64,
        train_transforms: str = "crop_colour",
        **kwargs: Any,
    ) -> None:
        self.scenes_root = Path(root) if root is not None else data_root("digit_scenes")
        self.scene_arguments = _scene_arguments(
            num_train, num_val, scene_size, digits_per_image, digit_scale, scene_seed
        )
        super().__init__(
            root=str(self.scenes_root / "coco"),
            train_split="train",
            val_split="val",
            image_size=image_size,
            train_transforms=train_transforms,
            **kwargs,
        )

    def _categories(self) -> dict[int, str]:
        # Known without the files, which prepare_data writes later.
        return {digit + 1: name for digit, name in enumerate(DIGIT_CLASSES)}


class DigitScenesSegmentation(_WritesScenes, VOCSegmentation):
    """Handwritten digits in scenes as a semantic-segmentation dataset (no download).

    The scenes of :class:`DigitScenes` (same arguments, same defaults, so both read one tree
    under ``root``), read from the VOC tree's ``SegmentationClass`` masks by
    :class:`~datamodules.VOCSegmentation`: 11 classes, ``"background"`` then the digits
    ``"0"`` to ``"9"`` (mask value ``d + 1`` is the digit ``d``), and 255 on a one-pixel
    ring around each digit, as VOC marks its object borders. ``prepare_data`` writes the
    scenes on first use; the classes are known before.

    Args:
        root: where the scenes live (``root/coco``, ``root/VOCdevkit``, ``root/scenes.json``);
            None: ``$ZOO_DATA/digit_scenes`` (``data/digit_scenes`` without ``ZOO_DATA``).
        num_train, num_val: scenes per split.
        scene_size: side of the written images, in pixels.
        digits_per_image: (min, max) digits per scene.
        digit_scale: (min, max) side of a digit as a share of ``scene_size``.
        scene_seed: seed of the scenes (the data); ``seed`` seeds the training run's split.
        crop_size: ``(height, width)`` of the training crops, for the presets that crop
            (e.g. 64 with ``"scale_crop"``); None trains on the whole scenes.
        train_transforms: segmentation augmentation preset; the default trains on the scenes
            as written. Presets with a flip mirror the digits, which are then no digits.
        **kwargs: small images, normalisation, channels, batch size, workers; see
            :class:`~datamodules.SegmentationDataModule`.
    """

    def __init__(
        self,
        root: str | None = None,
        num_train: int = 4000,
        num_val: int = 500,
        scene_size: int = 64,
        digits_per_image: tuple[int, int] = (2, 6),
        digit_scale: tuple[float, float] = (0.2, 0.5),
        scene_seed: int = 0,
        crop_size: int | tuple[int, int] | None = None,
        train_transforms: str = "none",
        **kwargs: Any,
    ) -> None:
        self.scenes_root = Path(root) if root is not None else data_root("digit_scenes")
        self.scene_arguments = _scene_arguments(
            num_train, num_val, scene_size, digits_per_image, digit_scale, scene_seed
        )
        super().__init__(
            root=str(self.scenes_root / "VOCdevkit" / "VOC2012"),
            train_split="train",
            val_split="val",
            classes=["background", *DIGIT_CLASSES],
            crop_size=crop_size,
            train_transforms=train_transforms,
            **kwargs,
        )

    def _check_layout(self) -> None:
        # prepare_data writes the files later, before setup lists them.
        pass
