"""The base of the semantic-segmentation datamodules: a class index for every pixel, read from
mask files or painted from annotations, augmented with the image (d2l section 14.9, "Semantic
Segmentation and the Dataset").

Batch format, the only contract with ``tasks``: ``(images, masks)``.

- ``images``: ``[B, C, H, W]`` float32, standardised with the datamodule's ``mean`` and
  ``std``;
- ``masks``: ``[B, H, W]`` int64, the class index ``0..num_classes - 1`` of each pixel
  (0 is the background, a class like the others: ``classes[0] == "background"``) or
  :data:`IGNORE_INDEX` (255) where the pixel counts for neither loss nor metrics: VOC's void
  borders, padding, COCO's crowd regions and overlaps of two classes.

Training crops (``crop_size``) give batches of one size. Validation, test and prediction use
whole images, never cropped, so the metrics see every labelled pixel; images of different
sizes are padded at the bottom and right to the largest of the batch
(:func:`collate_segmentation`), with 0 (the mean colour) and mask 255, so batches are
always stacked tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import albumentations as A
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch import Tensor

from . import transforms
from ._files import FileDataModule, ImageFileDataset, header_size
from .scenes import voc_palette

__all__ = [
    "IGNORE_INDEX",
    "SegmentationDataModule",
    "SegmentationFileDataset",
    "collate_segmentation",
    "mask_problem",
    "read_mask",
]

IGNORE_INDEX = 255  # VOC's "void": the value the loss (ignore_index) and the metrics skip


def _palette_lookup() -> dict[int, int]:
    colours = np.asarray(voc_palette(), dtype=np.int64).reshape(256, 3)
    return {int(r) << 16 | int(g) << 8 | int(b): index for index, (r, g, b) in enumerate(colours)}


def read_mask(path: str | Path) -> np.ndarray:
    """A mask PNG as ``[H, W]`` uint8 class indices.

    A palette PNG (mode ``"P"``, as VOC's ``SegmentationClass``) holds the indices themselves;
    so does a grey PNG (mode ``"L"``). An RGB mask, as some tools save VOC's, is mapped back
    through VOC's colour map (:func:`datamodules.scenes.voc_palette`).

    Raises:
        ValueError: naming the file, when it cannot be decoded, is of another mode, or holds
            colours outside VOC's colour map.
    """
    try:
        with Image.open(path) as image:
            mode = image.mode
            array = np.array(image)  # a writable copy: torch warns about read-only arrays
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError...
        raise ValueError(
            f"cannot decode mask {path} ({type(error).__name__}: {error}); replace the file, "
            "or remove its id from the split file"
        ) from error
    if mode in ("P", "L"):
        return array
    if mode == "RGB":
        codes = array.astype(np.int64)
        codes = codes[..., 0] << 16 | codes[..., 1] << 8 | codes[..., 2]
        lookup = _palette_lookup()
        found = np.unique(codes)
        unknown = [int(code) for code in found if int(code) not in lookup]
        if not unknown:
            table = np.array([lookup[int(code)] for code in found], dtype=np.uint8)
            return table[np.searchsorted(found, codes)]
        colours = [(c >> 16, c >> 8 & 255, c & 255) for c in unknown[:3]]
        raise ValueError(
            f"mask {path} is an RGB image with colours outside VOC's colour map, e.g. "
            f"{colours}; save masks as palette or grey PNGs of class indices (255 = ignore)"
        )
    raise ValueError(
        f"mask {path} has PIL mode {mode!r}; masks are palette ('P') or grey ('L') PNGs of "
        "class indices (255 = ignore), or RGB in VOC's colour map: convert the file"
    )


class SegmentationFileDataset(ImageFileDataset):
    """Image files with their class-index masks, transformed together.

    Each item is ``(image [C, H, W] float32, mask [H, W] int64)``. ``read_mask`` (set by the
    datamodule; a picklable function) turns a sample's target into a ``[H, W]`` uint8 mask in
    the worker: a mask file's path for VOC, a recipe of instance annotations for COCO; the
    target's ``str`` names it in errors. A mask must have its image's size and hold only class
    indices below ``num_classes`` or 255.
    """

    read_mask: Callable[[Any], np.ndarray] = staticmethod(read_mask)
    num_classes: int = IGNORE_INDEX

    def _apply(self, image: np.ndarray, target: Any) -> tuple[Tensor, Tensor]:
        mask = self.read_mask(target)
        # setup checked the mask files already; this catches files changed since. The image's
        # path is looked up (a scan of the samples) only to word a problem.
        if mask_problem(mask, image.shape[:2], self.num_classes, target, ""):
            path = self._path_of(target)
            raise ValueError(mask_problem(mask, image.shape[:2], self.num_classes, target, path))
        out = self.transform(image=image, mask=mask)
        return out["image"], torch.as_tensor(out["mask"], dtype=torch.int64)

    def _path_of(self, target: Any) -> Path | str:
        return next((path for path, t in self.samples if t is target), "?")


def mask_problem(
    mask: np.ndarray,
    image_size: tuple[int, int] | None,
    num_classes: int,
    target: Any,
    image: Path | str,
) -> str | None:
    """What is wrong with ``mask`` as the mask of ``image`` (None if nothing): a size other
    than the image's ``(height, width)`` (None: unknown, not checked), or values that are
    neither a class index below ``num_classes`` nor 255."""
    if image_size is not None and mask.shape != tuple(image_size):
        return (
            f"mask {target} is {mask.shape[0]} x {mask.shape[1]} pixels (height x width), "
            f"but its image {image} is {image_size[0]} x {image_size[1]}; a mask must "
            "cover its image pixel for pixel: replace one of the two files"
        )
    counts = np.bincount(mask.ravel(), minlength=256)
    counts[IGNORE_INDEX] = 0
    bad = np.flatnonzero(counts[num_classes:]) + num_classes
    if len(bad):
        return (
            f"mask {target} holds values {bad.tolist()}, but there are {num_classes} "
            f"classes (0..{num_classes - 1}, and 255 = ignore); set classes to "
            "match the data (one name per class index, 'background' first)"
        )
    return None


def collate_segmentation(batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Stack ``(image, mask)`` samples, padding each at the bottom and right to the largest
    height and width of the batch: images with 0 (the mean colour after standardisation),
    masks with 255 (ignored)."""
    height = max(image.shape[-2] for image, _ in batch)
    width = max(image.shape[-1] for image, _ in batch)
    channels = batch[0][0].shape[0]
    images = batch[0][0].new_zeros((len(batch), channels, height, width))
    masks = torch.full((len(batch), height, width), IGNORE_INDEX, dtype=torch.int64)
    for row, (image, mask) in enumerate(batch):
        images[row, :, : image.shape[-2], : image.shape[-1]] = image
        masks[row, : mask.shape[-2], : mask.shape[-1]] = mask
    return images, masks


class SegmentationDataModule(FileDataModule):
    """Base of the semantic-segmentation datamodules read from files (VOC, COCO, DigitScenes).

    Yields the batch format of :mod:`datamodules.segmentation`. A subclass sets ``classes``
    (``"background"`` first) in ``__init__`` from cheap reads, so that the CLI can link
    ``num_classes`` and ``classes`` into the model before ``setup``; names its splits in
    ``splits``; lists a split's ``(image path, mask target)`` samples in ``_list_samples``; and
    may replace :attr:`_mask_reader` (the default reads mask PNGs with :func:`read_mask`).

    Training images go through the ``train_transforms`` preset (see
    :mod:`datamodules.transforms`), the mask with the image; evaluation images stay whole.
    The training split is divided into train and validation sets at random (seeded) when the
    data has no validation split. ``predict`` runs on the test split when there is one, else
    on the validation set.

    Args:
        crop_size: ``(height, width)`` of the training crops, an int for a square, for the
            presets that crop; the course crops 320 x 480 (Section 14.9.2). None trains on
            whole images (with ``"none"`` or ``"flip"``).
        train_transforms: the segmentation augmentation preset of the training set:
            ``"none"``, ``"flip"``, ``"crop"``, ``"crop_flip"``, ``"scale_crop"`` or
            ``"scale_crop_flip"``; the cropping ones need ``crop_size``.
        small_images: what a cropping preset does with a training image smaller than
            ``crop_size``: ``"pad"`` pads it up to the crop (the image with the mean colour,
            the mask with 255, ignored); ``"drop"`` leaves it out of the training set at
            ``setup`` and logs how many it left out, as the course's ``filter`` does
            (the sizes come from the files' headers).
        mean, std: per-channel standardisation constants; None takes ImageNet's (for
            ``in_channels=1``, the mean of ImageNet's three).
        **kwargs: channels, bad-file handling, batch size, workers and splits; see
            :class:`~datamodules.FileDataModule` and :class:`~datamodules.SplitDataModule`.

    Attributes:
        classes: class names, index ``i`` naming mask value ``i``; ``classes[0]`` is
            ``"background"``.
        num_classes: ``len(classes)``, the background counted (21 for VOC).
        ignore_index: 255, the mask value of ignored pixels.
        splits: the dataset's name of the ``"train"``, ``"val"`` and ``"test"`` split, None
            for a split it does not have.
        crop_size: ``(height, width)`` or None; ``train_transforms``, ``small_images``,
            ``mean``, ``std``, ``in_channels`` as given (mean and std as tuples).
    """

    ignore_index: ClassVar[int] = IGNORE_INDEX
    _dataset_class = SegmentationFileDataset
    _collate_fn = staticmethod(collate_segmentation)
    _predict_on_val = True  # VOC2012's and COCO's test images have no public masks

    def __init__(
        self,
        crop_size: int | tuple[int, int] | None = None,
        train_transforms: str = "none",
        small_images: str = "pad",
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        name = type(self).__name__
        self.crop_size = transforms.crop_height_width(crop_size, name)
        transforms.check_segmentation_preset(train_transforms, self.crop_size, owner=name)
        if small_images not in transforms.SMALL_IMAGES:
            raise ValueError(
                f"{name}: small_images={small_images!r} must be 'pad' (pad training images "
                "smaller than crop_size up to it, mask 255) or 'drop' (leave them out)"
            )
        self.mean, self.std = transforms.standardisation(name, mean, std, self.in_channels)
        self.train_transforms = train_transforms
        self.small_images = small_images
        self.classes: list[str] = []
        self.splits: dict[str, str | None] = {"train": None, "val": None, "test": None}

    # -- what a format implements -------------------------------------------------------

    def _mask_reader(self) -> Callable[[Any], np.ndarray]:
        """A picklable function turning a sample's target into its ``[H, W]`` uint8 mask."""
        return read_mask

    # -- FileDataModule hooks -------------------------------------------------------------

    def train_transform(self) -> A.Compose:
        """The training pipeline: the ``train_transforms`` preset, then standardisation."""
        return transforms.segmentation_train_transform(
            self.train_transforms, self.crop_size, self.mean, self.std, self.small_images
        )

    def eval_transform(self) -> A.Compose:
        """The evaluation pipeline: standardisation alone, whole images. Call it as
        ``eval_transform()(image=load_image(path, in_channels), mask=read_mask(png))`` to
        see your own images as the model does."""
        return transforms.segmentation_eval_transform(self.mean, self.std)

    def _split_labels(self, data: list[tuple[Path, Any]]) -> np.ndarray:
        # No one label per image: the validation split is a seeded random one.
        return np.zeros(len(data), dtype=np.int64)

    def _make_dataset(
        self, data: list[tuple[Path, Any]], positions: np.ndarray | None, train: bool
    ) -> ImageFileDataset:
        samples = data if positions is None else [data[i] for i in positions]
        if train and self._drops_small_images():
            samples = self._without_small_images(samples)
        dataset = super()._make_dataset(samples, None, train)
        dataset.read_mask = self._mask_reader()
        dataset.num_classes = self.num_classes
        return dataset

    def _check_mask_files(self, samples: list[tuple[Path, Any]]) -> None:
        """Read every mask of a split now, in ``setup``, so that a mask of another size than
        its image, or with values outside the classes, is refused before training rather
        than in a DataLoader worker mid-epoch (about half a millisecond per VOC mask)."""
        read = self._mask_reader()
        problems = []
        for image_path, target in samples:
            image_size = header_size(image_path)  # None: unreadable, named by the file check
            problem = mask_problem(read(target), image_size, self.num_classes, target, image_path)
            if problem:
                problems.append(problem)
        if problems:
            more = f" (and {len(problems) - 1} more bad masks)" if len(problems) > 1 else ""
            raise ValueError(f"{type(self).__name__}: {problems[0]}{more}")

    def _drops_small_images(self) -> bool:
        return self.small_images == "drop" and transforms.segmentation_preset_crops(
            self.train_transforms
        )

    def _without_small_images(self, samples: list[tuple[Path, Any]]) -> list[tuple[Path, Any]]:
        height, width = self.crop_size  # type: ignore[misc]  # a cropping preset has one
        kept = []
        for path, target in samples:
            image_height, image_width = header_size(path) or (0, 0)  # unreadable: dropped
            if image_height >= height and image_width >= width:
                kept.append((path, target))
        rank_zero_info(
            f"{type(self).__name__} {self.splits['train']}: dropped {len(samples) - len(kept)} "
            f"of {len(samples)} training images smaller than the {height} x {width} crop "
            "(small_images='drop')"
        )
        return kept
