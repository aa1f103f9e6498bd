"""LightningDataModules: datasets on disk to batches.

Classification batches are ``(images[B, C, H, W] float32, labels[B] int64)``; regression
batches ``(features[B, D] float32, targets[B] float32)``. Datasets are either held in memory
as tensors (:class:`ClassificationDataModule`: MNIST, FashionMNIST, Digits) or read from
image files per sample (:class:`FileDataModule`: ImageFolder, ImageNetSubset); both share
the splits of :class:`SplitDataModule`. Detection datamodules (:class:`COCO`,
:class:`VOCDetection` and the embedded :class:`DigitScenes`, on the base
:class:`DetectionDataModule`) yield ``(images, targets)``
with one dict of boxes, labels, crowd flags (and masks) per image; see
:mod:`datamodules.detection`. Augmentation presets live in :mod:`datamodules.transforms`.
"""

from ._base import SplitDataModule
from ._files import FileDataModule, load_image
from ._memory import ClassificationDataModule
from .coco import COCO
from .detection import DetectionDataModule
from .digit_scenes import DigitScenes
from .digits import Digits
from .folder import FileClassificationDataModule, ImageFolder
from .idx import read_idx, write_idx
from .imagenet import ImageNetSubset
from .mnist import MNIST, FashionMNIST
from .synthetic import SyntheticRegression
from .voc import VOCDetection

__all__ = [
    "COCO",
    "ClassificationDataModule",
    "DetectionDataModule",
    "DigitScenes",
    "Digits",
    "FashionMNIST",
    "FileClassificationDataModule",
    "FileDataModule",
    "ImageFolder",
    "ImageNetSubset",
    "MNIST",
    "SplitDataModule",
    "SyntheticRegression",
    "VOCDetection",
    "load_image",
    "read_idx",
    "write_idx",
]
