"""MNIST and Fashion-MNIST from their four IDX files (d2l section 4.2, "The Image
Classification Dataset", uses Fashion-MNIST throughout the CNN chapters).

The files are looked up in ``data_dir`` itself and in ``data_dir/<Dataset>/raw``, where
``torchvision.datasets.MNIST(data_dir, download=True)`` puts them, each either raw or
gzipped. Downloading is delegated to torchvision, which knows the mirrors and checks
the MD5 sums, and happens only in ``prepare_data``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
import torchvision
from torch import Tensor
from torchvision.datasets import VisionDataset

from ._memory import ClassificationDataModule
from ._paths import data_root
from .idx import read_idx

__all__ = ["MNIST", "FashionMNIST"]

_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class _IDXDataModule(ClassificationDataModule):
    """A dataset distributed as MNIST's four IDX files (28 x 28 grey-scale, 10 classes)."""

    in_channels: ClassVar[int] = 1
    _torchvision_dataset: ClassVar[type[VisionDataset]]
    _torchvision_folder: ClassVar[str]  # torchvision's root/<folder>/raw
    _homepage: ClassVar[str]

    def __init__(self, data_dir: str | None = None, download: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data_dir = Path(data_dir) if data_dir is not None else data_root()
        self.download = download

    @property
    def _search_dirs(self) -> list[Path]:
        return [self.data_dir, self.data_dir / self._torchvision_folder / "raw"]

    def _find(self, name: str) -> Path | None:
        for directory in self._search_dirs:
            for candidate in (directory / name, directory / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
        return None

    def _missing(self) -> list[str]:
        names = [name for pair in _FILES.values() for name in pair]
        return [name for name in names if self._find(name) is None]

    def prepare_data(self) -> None:
        """Download the files with torchvision if they are missing and ``download`` is set.

        Raises:
            FileNotFoundError: if files are still missing afterwards, naming them, the
                directories searched and how to obtain them.
        """
        download_error: Exception | None = None
        if self._missing() and self.download:
            try:
                for train in (True, False):
                    self._torchvision_dataset(str(self.data_dir), train=train, download=True)
            except (RuntimeError, OSError) as error:  # no network, dead mirror, bad MD5
                download_error = error
        self._raise_if_missing(download_error)

    def _raise_if_missing(self, download_error: Exception | None = None) -> None:
        missing = self._missing()
        if not missing:
            return
        name = type(self).__name__
        searched = " and ".join(str(directory) for directory in self._search_dirs)
        if download_error is not None:
            attempt = f"Downloading with torchvision failed: {download_error}. "
        else:
            attempt = (
                "Pass --data.download true on the command line (download=True in Python) "
                "to fetch them with torchvision, or download them yourself. "
            )
        raise FileNotFoundError(
            f"{name}: missing {', '.join(missing)} (each raw or .gz); searched {searched}. "
            f"{attempt}Put the four IDX files of {name} (from {self._homepage}) in "
            f"{self.data_dir} or {self._search_dirs[1]}, or point --data.data_dir at the "
            "folder that holds them."
        ) from download_error

    def _load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        # setup runs on every process, so it only reads; downloads belong in prepare_data.
        self._raise_if_missing()
        image_file, label_file = (self._find(name) for name in _FILES[train])
        images, labels = read_idx(image_file), read_idx(label_file)
        if images.dim() != 3 or images.dtype != torch.uint8:
            raise ValueError(
                f"{image_file}: expected uint8 images [N, H, W], got {images.dtype} of shape "
                f"{tuple(images.shape)}; is it an images file?"
            )
        if len(images) == 0:  # else the split fails later, in scikit-learn's words
            raise ValueError(
                f"{image_file} holds no images (shape {tuple(images.shape)}); the file is "
                "damaged or a placeholder: download it again"
            )
        if labels.dim() != 1 or len(labels) != len(images):
            raise ValueError(
                f"{label_file}: expected {len(images)} labels to match {image_file}, got shape "
                f"{tuple(labels.shape)}; the two files come from different splits or datasets"
            )
        if labels.is_floating_point():  # .long() would truncate 2.7 to the label 2
            raise ValueError(
                f"{label_file}: labels are {labels.dtype}, expected integers (uint8, as the "
                f"{type(self).__name__} files store them); is it a labels file?"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise ValueError(
                f"{label_file}: labels span {int(labels.min())}..{int(labels.max())}, but "
                f"{type(self).__name__} has {len(self.classes)} classes (0..{len(self.classes) - 1}); "
                "the file is damaged or belongs to another dataset: download it again"
            )
        return images, labels


class MNIST(_IDXDataModule):
    """MNIST handwritten digits: 60,000 training and 10,000 test images, 28 x 28.

    Args:
        data_dir: folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (raw or ``.gz``),
            directly or in ``MNIST/raw`` as torchvision lays them out; None: ``$ZOO_DATA``,
            or ``data`` in the working directory without ``ZOO_DATA``.
        download: fetch missing files with torchvision in ``prepare_data``.
        **kwargs: batch size, splits and preprocessing; see
            :class:`~datamodules.ClassificationDataModule`.
    """

    classes: ClassVar[list[str]] = [str(digit) for digit in range(10)]
    mean: ClassVar[tuple[float, ...]] = (0.1307,)
    std: ClassVar[tuple[float, ...]] = (0.3081,)
    _torchvision_dataset = torchvision.datasets.MNIST
    _torchvision_folder = "MNIST"
    _homepage = "http://yann.lecun.com/exdb/mnist/"


class FashionMNIST(_IDXDataModule):
    """Fashion-MNIST (Xiao et al., 2017): Zalando article images, 60,000 + 10,000, 28 x 28.

    The course's dataset for softmax regression, MLPs and the CNN chapters (d2l
    section 4.2); AlexNet, VGG and ResNet train on it resized with ``image_size``.

    Args:
        data_dir: folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (raw or ``.gz``),
            directly or in ``FashionMNIST/raw`` as torchvision lays them out; None: ``$ZOO_DATA``,
            or ``data`` in the working directory without ``ZOO_DATA``.
        download: fetch missing files with torchvision in ``prepare_data``.
        **kwargs: batch size, splits and preprocessing; see
            :class:`~datamodules.ClassificationDataModule`.
    """

    classes: ClassVar[list[str]] = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]  # fmt: skip
    mean: ClassVar[tuple[float, ...]] = (0.2860,)
    std: ClassVar[tuple[float, ...]] = (0.3530,)
    _torchvision_dataset = torchvision.datasets.FashionMNIST
    _torchvision_folder = "FashionMNIST"
    _homepage = "https://github.com/zalandoresearch/fashion-mnist"
