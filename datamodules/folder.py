"""Images in one folder per class: your own data, e.g. for fine-tuning (Section 14.2).

:class:`FileClassificationDataModule` is what every file-backed classification dataset
shares (class names, normalisation, the augmentation preset, the batch format);
:class:`ImageFolder` reads torchvision's ``root/<class>/<image>`` layout with it, and
``datamodules.imagenet.ImageNetSubset`` the ILSVRC one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np

from . import transforms
from ._files import FileDataModule
from ._paths import data_root

__all__ = [
    "IMAGE_EXTENSIONS",
    "FileClassificationDataModule",
    "ImageFolder",
    "list_folders",
    "list_images",
]

# torchvision's IMG_EXTENSIONS, matched case-insensitively, so both readers see the same files.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _visible(name: str) -> bool:
    # Hidden entries are never data: .ipynb_checkpoints, .DS_Store, macOS's "._photo.jpg".
    return not name.startswith(".")


def list_folders(directory: Path) -> list[str]:
    """Sorted names of the visible sub-folders of ``directory`` ([] if it is no folder)."""
    if not directory.is_dir():
        return []
    with os.scandir(directory) as entries:
        return sorted(e.name for e in entries if e.is_dir() and _visible(e.name))


def list_images(directory: Path) -> list[Path]:
    """Image files under ``directory``, recursively, in torchvision's ImageFolder order:
    folders sorted by path, files sorted by name within each."""
    found = []
    for folder, subfolders, files in os.walk(directory, followlinks=True):
        subfolders[:] = [name for name in subfolders if _visible(name)]
        names = [f for f in files if _visible(f) and f.lower().endswith(IMAGE_EXTENSIONS)]
        found.append((folder, sorted(names)))
    return [Path(folder, name) for folder, names in sorted(found) for name in names]


class FileClassificationDataModule(FileDataModule):
    """Base for image-classification datasets stored as image files.

    Batch format: ``(images[B, in_channels, image_size, image_size] float32, labels[B]
    int64)``. Training images go through the augmentation preset ``train_transforms`` (see
    :mod:`datamodules.transforms`); validation, test and prediction images through the
    evaluation pipeline: the shorter side resized to ``resize_size``, the centre
    ``image_size`` square cropped, as torchvision's ImageNet evaluation does. Both end by
    standardising with ``mean`` and ``std``.

    Subclasses set ``classes`` in ``__init__`` from cheap listings (folder names, a
    mapping file), so that the CLI can link ``num_classes`` and ``classes`` into the model
    before ``setup``, and implement ``_list_samples`` with integer labels.

    Args:
        image_size: side of the square images the model sees.
        resize_size: shorter side of the image before the centre crop of evaluation (and
            of the ``"none"`` and ``"flip"`` presets); at least ``image_size``.
        train_transforms: augmentation preset of the training set: ``"none"``, ``"flip"``,
            ``"crop_flip"`` or ``"course"``.
        mean, std: per-channel standardisation constants, one per channel; None takes
            ImageNet's, since fine-tuning ImageNet models is the main use (for
            ``in_channels=1``, the mean of ImageNet's three).
        **kwargs: channels, bad-file handling, batch size, workers and splits; see
            :class:`~datamodules.FileDataModule` and
            :class:`~datamodules.SplitDataModule`.

    Attributes:
        classes: class names, index ``i`` naming label ``i``.
        num_classes: ``len(classes)``.
        in_channels: image channels, 3 or 1.
        mean, std: the standardisation constants in use, as tuples.
        image_size, resize_size: as given.
    """

    def __init__(
        self,
        image_size: int = 224,
        resize_size: int = 256,
        train_transforms: str = "crop_flip",
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        name = type(self).__name__
        if image_size < 1:
            raise ValueError(f"{name}: image_size={image_size} must be positive, e.g. 224")
        if resize_size < image_size:
            raise ValueError(
                f"{name}: resize_size={resize_size} is smaller than image_size={image_size}; "
                "evaluation resizes the shorter side to resize_size and then crops "
                "image_size from the centre, so use e.g. 256 for 224 (ratio 0.875)"
            )
        transforms.check_preset(train_transforms, owner=name)
        self.mean, self.std = transforms.standardisation(name, mean, std, self.in_channels)
        self.image_size = image_size
        self.resize_size = resize_size
        self.train_transforms = train_transforms
        self.classes: list[str] = []

    def train_transform(self) -> A.Compose:
        """The training pipeline: the ``train_transforms`` preset, then standardisation."""
        return transforms.train_transform(
            self.train_transforms, self.image_size, self.resize_size, self.mean, self.std
        )

    def eval_transform(self) -> A.Compose:
        """The evaluation pipeline; apply it to ``load_image(path, in_channels)`` to
        predict on your own images as the test set is."""
        return transforms.eval_transform(self.image_size, self.resize_size, self.mean, self.std)

    def _split_labels(self, data: list[tuple[Path, int]]) -> np.ndarray:
        return np.array([label for _, label in data], dtype=np.int64)

    def _images_of_class(self, folder: Path) -> list[Path]:
        images = list_images(folder)
        if not images:
            problem = "has no images" if folder.is_dir() else "does not exist"
            raise FileNotFoundError(
                f"{type(self).__name__}: class folder {folder} {problem} (files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)}, any case); add images or remove the class"
            )
        return images


class ImageFolder(FileClassificationDataModule):
    """Images sorted into one folder per class: custom data for training or fine-tuning.

    Two layouts, told apart by whether ``root/train`` holds class folders:

    - ``root/<class>/<image>``: the training split; validation is held out of it
      (``val_fraction``, or K-fold with ``num_folds`` / ``fold``, seeded and stratified);
      there is no test set.
    - ``root/train/<class>/<image>`` with optional ``root/val/<class>/...`` and
      ``root/test/<class>/...``: each folder is that split. Without ``val`` the validation
      set is held out of ``train`` as above.

    Class names are the training split's folder names, sorted, so labels are the same as
    ``torchvision.datasets.ImageFolder``'s ``class_to_idx``; validation and test folders
    may lack classes but not add any. Images are the files with an extension of
    :data:`IMAGE_EXTENSIONS` (any case), searched recursively in each class folder, in
    torchvision's order. One deliberate difference from torchvision: hidden files and
    folders (``.ipynb_checkpoints``, macOS's ``._*.jpg``) are ignored.

    Unreadable files (empty, not an image, truncated) raise an error naming them, or are
    skipped with one warning when ``skip_bad_files`` is set; see
    :class:`~datamodules.FileDataModule` for where they are detected.

    Args:
        root: the dataset folder, in either layout; None: ``$ZOO_DATA/images``
            (``data/images`` without ``ZOO_DATA``).
        **kwargs: image size, augmentation, normalisation, channels, bad files, batch
            size and splits; see :class:`~datamodules.FileClassificationDataModule`.

    Attributes:
        class_to_idx: class name -> label.
        split_dirs: the folder of each split (``"train"``, ``"val"``, ``"test"``), None
            for a split the data does not have.
    """

    def __init__(self, root: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = Path(root) if root is not None else data_root("images")
        name = type(self).__name__
        expected = (
            "point data.root at a folder holding one sub-folder of images per class "
            "(root/<class>/<image>.jpg), or train/ and val/ folders laid out that way"
        )
        if not self.root.is_dir():
            raise FileNotFoundError(f"{name}: root {self.root} is not a folder; {expected}")
        if list_folders(self.root / "train"):
            self.split_dirs = {
                split: self.root / split if (self.root / split).is_dir() else None
                for split in ("train", "val", "test")
            }
        else:
            self.split_dirs = {"train": self.root, "val": None, "test": None}
        self.classes = list_folders(self.split_dirs["train"])
        if not self.classes:
            raise FileNotFoundError(f"{name}: {self.root} has no class folders; {expected}")
        self.class_to_idx = {class_name: i for i, class_name in enumerate(self.classes)}

    def _list_samples(self, split: str) -> list[tuple[Path, int]] | None:
        directory = self.split_dirs[split]
        if directory is None:
            return None
        found = list_folders(directory)
        unknown = sorted(set(found) - set(self.classes))
        if not found or unknown:
            train = f"the training split {self.split_dirs['train']}"
            problem = (
                f"classes {unknown} that {train} lacks (it has {len(self.classes)} class folders)"
                if unknown
                else f"no class folders, but {train} has {len(self.classes)}"
            )
            raise FileNotFoundError(
                f"{type(self).__name__}: {directory} has {problem}; the {split} images must be "
                "sorted into folders named after the training classes"
            )
        return [
            (path, self.class_to_idx[class_name])
            for class_name in found
            for path in self._images_of_class(directory / class_name)
        ]

    def _missing_test_split(self) -> str:
        return (
            f"{self.root} has no test/ folder; lay the data out as root/train/<class>/..., "
            "root/val/<class>/... and root/test/<class>/... to have one"
        )
