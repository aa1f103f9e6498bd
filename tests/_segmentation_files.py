"""Tiny semantic-segmentation trees in the real format, shared by the tests: a VOCdevkit folder
of JPEG photos (``tests._image_files``) and palette PNG masks in VOC's colour map, each object
a rectangle of its class inside a 255 ("void") ring, as VOC draws its object borders.

COCO trees for segmentation come from ``tests._detection_files.write_coco``, whose objects
already overlap, include a crowd region and a category outside any chosen subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.scenes import voc_palette
from tests._image_files import photos, save_image

# (height, width) of the images of a split, in order: the second and fourth are smaller than
# the (32, 40) crop the tests use, in one side or both.
SIZES = ((40, 48), (36, 32), (48, 44), (28, 36), (44, 56))
VOID = 255


def voc_mask(size: tuple[int, int], rng: np.random.Generator, num_classes: int) -> np.ndarray:
    """A ``[H, W]`` uint8 mask: 2-3 rectangles of classes ``1..num_classes - 1``, later ones on
    top, each in a one-pixel 255 ring (kept where a later rectangle covers it), on 0."""
    height, width = size
    mask = np.zeros(size, dtype=np.uint8)
    for _ in range(int(rng.integers(2, 4))):
        y1, x1 = int(rng.integers(1, height - 8)), int(rng.integers(1, width - 8))
        y2 = int(rng.integers(y1 + 4, height))
        x2 = int(rng.integers(x1 + 4, width))
        mask[y1 - 1 : y2 + 1, x1 - 1 : x2 + 1] = VOID
        mask[y1:y2, x1:x2] = rng.integers(1, num_classes)
    return mask


def save_palette_png(path: Path, mask: np.ndarray) -> Path:
    """``mask`` as a palette PNG in VOC's colour map, as VOC's ``SegmentationClass`` files."""
    image = Image.fromarray(mask, mode="P")
    image.putpalette(voc_palette())
    return save_image(path, image)


def write_voc_segmentation(
    root: Path,
    sizes: Sequence[tuple[int, int]] = SIZES,
    num_classes: int = 21,
    split_names: Sequence[str] = ("train", "val"),
    seed: int = 0,
) -> Path:
    """``root/VOCdevkit/VOC2012`` with one split file per name in ``ImageSets/Segmentation``.

    Every split holds ``len(sizes)`` images, ids ``2012_<split>_000`` on, each a JPEG photo of
    its size (quality 95) and a palette PNG mask (:func:`voc_mask`) with class indices below
    ``num_classes`` (21: VOC's background and 20 classes) and 255 rings. Returns the VOC2012
    folder, the ``root`` of ``VOCSegmentation``; torchvision's ``VOCSegmentation`` takes
    ``root`` itself with ``year="2012"``.
    """
    voc = root / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(seed)
    for split in split_names:
        ids = []
        for position, size in enumerate(sizes):
            voc_id = f"2012_{split}_{position:03d}"
            photo = photos()[position % len(photos())]
            picture = Image.fromarray(photo).resize((size[1], size[0]))
            save_image(voc / "JPEGImages" / f"{voc_id}.jpg", picture, quality=95)
            save_palette_png(
                voc / "SegmentationClass" / f"{voc_id}.png", voc_mask(size, rng, num_classes)
            )
            ids.append(voc_id)
        split_file = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
        split_file.parent.mkdir(parents=True, exist_ok=True)
        split_file.write_text("\n".join(ids) + "\n")
    return voc
