"""DigitScenes as a datamodule: the embedded default for detection, read by the real COCO loader.

The scenes (scikit-learn's handwritten digits composed onto 64 x 64 canvases; see
:func:`datamodules.scenes.write_digit_scenes`) are written on first use under ``root`` as a COCO
tree and a VOCdevkit tree. :class:`DigitScenes` reads the COCO tree with
:class:`~datamodules.COCO`, so the embedded default runs the same code as real COCO data;
``VOCDetection(root + "/VOCdevkit/VOC2012", classes="found")`` reads the other tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .coco import COCO
from .scenes import write_digit_scenes

__all__ = ["DIGIT_CLASSES", "DigitScenes"]

# COCO category id d + 1 names the digit d (write_digit_scenes' categories).
DIGIT_CLASSES = [str(digit) for digit in range(10)]


class DigitScenes(COCO):
    """Handwritten digits in scenes, 2-6 per image, as a COCO detection dataset (no download).

    ``prepare_data`` writes the scenes under ``root`` unless a tree of the same arguments is
    there already (a few seconds for the default 4,000 + 500 images); a tree of other arguments
    is an error that names them. Train and val scenes draw on disjoint digit samples, so
    validation digits were never seen in training. Labels ``1..10`` are the digits ``0..9``.

    Args:
        root: where the scenes live (``root/coco``, ``root/VOCdevkit``, ``root/scenes.json``).
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
        root: str = "data/digit_scenes",
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
        self.scenes_root = Path(root)
        self.scene_arguments = {
            "num_train": num_train,
            "num_val": num_val,
            "image_size": scene_size,
            "digits_per_image": tuple(digits_per_image),
            "digit_scale": tuple(digit_scale),
            "seed": scene_seed,
        }
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

    def prepare_data(self) -> None:
        """Write the scenes, or check that the tree there has the same arguments."""
        write_digit_scenes(self.scenes_root, **self.scene_arguments)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # a no-op once written; lets setup() alone work outside a Trainer
        super().setup(stage)
