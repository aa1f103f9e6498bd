"""LightningDataModules: datasets on disk to batches.

Classification batches are ``(images[B, C, H, W] float32, labels[B] int64)``; regression
batches ``(features[B, D] float32, targets[B] float32)``. Datasets are either held in memory
as tensors (:class:`ClassificationDataModule`: MNIST, FashionMNIST, Digits) or read from
image files per sample (:class:`FileDataModule`: ImageFolder, ImageNetSubset); both share
the splits of :class:`SplitDataModule`. Augmentation presets live in
:mod:`datamodules.transforms`.
"""

from ._base import SplitDataModule
from ._files import FileDataModule, load_image
from ._memory import ClassificationDataModule
from .digits import Digits
from .folder import FileClassificationDataModule, ImageFolder
from .idx import read_idx, write_idx
from .imagenet import ImageNetSubset
from .mnist import MNIST, FashionMNIST
from .synthetic import SyntheticRegression

__all__ = [
    "ClassificationDataModule",
    "Digits",
    "FashionMNIST",
    "FileClassificationDataModule",
    "FileDataModule",
    "ImageFolder",
    "ImageNetSubset",
    "MNIST",
    "SplitDataModule",
    "SyntheticRegression",
    "load_image",
    "read_idx",
    "write_idx",
]
