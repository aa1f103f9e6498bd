"""LightningDataModules: datasets on disk to batches.

Classification batches are ``(images[B, C, H, W] float32, labels[B] int64)``; regression
batches ``(features[B, D] float32, targets[B] float32)``. Datasets are either held in memory
as tensors (:class:`ClassificationDataModule`: MNIST, FashionMNIST, Digits) or read from
image files per sample (:class:`FileDataModule`: ImageFolder, ImageNetSubset); both share
the splits of :class:`SplitDataModule`. Detection datamodules (:class:`COCO`,
:class:`VOCDetection` and the embedded :class:`DigitScenes`, on the base
:class:`DetectionDataModule`) yield ``(images, targets)``
with one dict of boxes, labels, crowd flags (and masks) per image; see
:mod:`datamodules.detection`. Semantic-segmentation datamodules (:class:`VOCSegmentation`,
:class:`COCOSegmentation` and the embedded :class:`DigitScenesSegmentation`, on the base
:class:`SegmentationDataModule`) yield ``(images[B, C, H, W] float32, masks[B, H, W] int64)``
with a class index per pixel and 255 where it is ignored; see :mod:`datamodules.segmentation`.
Augmentation presets live in :mod:`datamodules.transforms`. A data module given no ``root``
looks in :func:`data_root`: ``$ZOO_DATA``, else ``data/`` in the working directory.
"""

from ._base import SplitDataModule
from ._files import FileDataModule, load_image
from ._memory import ClassificationDataModule
from ._paths import DATA_ENV, data_root
from .coco import COCO, COCOSegmentation
from .detection import DetectionDataModule
from .digit_scenes import DigitScenes, DigitScenesSegmentation
from .digits import Digits
from .folder import FileClassificationDataModule, ImageFolder
from .idx import read_idx, write_idx
from .imagenet import ImageNetSubset
from .mnist import MNIST, FashionMNIST
from .segmentation import SegmentationDataModule, collate_segmentation
from .synthetic import SyntheticRegression
from .voc import VOCDetection, VOCSegmentation

__all__ = [
    "COCO",
    "DATA_ENV",
    "COCOSegmentation",
    "ClassificationDataModule",
    "DetectionDataModule",
    "DigitScenes",
    "DigitScenesSegmentation",
    "Digits",
    "FashionMNIST",
    "FileClassificationDataModule",
    "FileDataModule",
    "ImageFolder",
    "ImageNetSubset",
    "MNIST",
    "SegmentationDataModule",
    "SplitDataModule",
    "SyntheticRegression",
    "VOCDetection",
    "VOCSegmentation",
    "collate_segmentation",
    "data_root",
    "load_image",
    "read_idx",
    "write_idx",
]
