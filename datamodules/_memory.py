"""Whole datasets held as tensors (MNIST-sized data): preprocessed once, batches made by one
indexing step. Batch format ``(images[B, C, H, W] float32, labels[B] int64)``."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from ._base import SplitDataModule

__all__ = ["ClassificationDataModule"]


class _Preprocess:
    """uint8 (or [0, 1] float) images ``[B, C, H, W]`` -> float32, resized, standardised.

    A small picklable object rather than a bound method, so that DataLoader workers
    started with ``spawn`` do not receive a copy of the whole datamodule.
    """

    def __init__(
        self,
        image_size: int | None,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        normalize: bool,
    ) -> None:
        self.image_size = image_size
        self.normalize = normalize
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, images: Tensor) -> Tensor:
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        else:  # a copy, so the in-place ops below never touch the caller's tensor
            images = images.to(torch.float32, copy=True)
        # Standardise before resizing: interpolation weights sum to one, so the two
        # commute, and the small image is up to 64x cheaper to normalise than a 224 one.
        if self.normalize:
            images.sub_(self.mean).div_(self.std)
        size = self.image_size
        if size is not None and tuple(images.shape[-2:]) != (size, size):
            # antialias only acts when shrinking (e.g. ImageNet-size data to 96), where
            # plain bilinear would alias; upsampling 28 -> 224 is ordinary bilinear.
            images = F.interpolate(
                images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        return images


class _ImageTensorDataset(Dataset):
    """In-memory images and labels, optionally preprocessed on the fly.

    ``__getitems__`` (which ``DataLoader`` calls with a whole batch of indices) gathers
    and preprocesses a batch with one indexing operation instead of ``batch_size``
    Python calls, and returns the finished ``(images, labels)`` tuple. It is meant for
    the datamodule's loaders, whose ``collate_fn`` passes such tuples through; with
    a plain ``DataLoader`` pass ``collate_fn=_collate`` as well.
    """

    def __init__(self, images: Tensor, labels: Tensor, transform: _Preprocess | None) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        # numpy's gather is a single-threaded row copy. torch's index_select splits a
        # batch-sized copy across OpenMP threads, which costs more than it saves and
        # becomes 20x slower than numpy when the cores are busy (measured, 2 cores).
        index = np.asarray(indices, dtype=np.int64)
        images = torch.from_numpy(self.images.numpy()[index])
        if self.transform is not None:
            images = self.transform(images)
        return images, torch.from_numpy(self.labels.numpy()[index])


def _collate(batch: Any) -> Any:
    # A tuple is a batch that _ImageTensorDataset.__getitems__ already assembled; a list
    # of samples (any other dataset) is collated the usual way.
    return batch if isinstance(batch, tuple) else default_collate(batch)


class ClassificationDataModule(SplitDataModule):
    """Base for image-classification datasets held in memory as tensors (MNIST-sized data).

    The splits are :class:`SplitDataModule`'s. Images become float32 in [0, 1], optionally
    resized to ``image_size`` (the course resizes Fashion-MNIST to 224 for AlexNet, d2l
    section 8.1, and to 96 for ResNet, d2l section 8.6) and standardised with the dataset's
    ``mean`` and ``std``. When the preprocessed set fits in memory (below
    ``_PRECOMPUTE_MAX_BYTES``) this happens once in ``setup`` and batches are plain tensor
    indexing; otherwise each batch is preprocessed as it is drawn.

    Subclasses set the class attributes ``classes``, ``in_channels``, ``mean`` and ``std``,
    implement :meth:`_load_split`, add their own constructor arguments and pass the rest
    on with ``**kwargs``.

    Args:
        image_size: resize images to ``image_size x image_size``; None keeps the
            native size.
        normalize: standardise each channel with the dataset's ``mean`` and ``std``;
            False leaves values in [0, 1].
        **kwargs: batch size, workers and splits; see
            :class:`~datamodules.SplitDataModule`.

    Attributes:
        classes: class names, index ``i`` naming label ``i``.
        num_classes: ``len(classes)``.
        in_channels: image channels (1 for grey-scale).
        mean, std: per-channel normalisation constants of the dataset.
        train_indices, val_indices: after ``setup("fit")``, the positions in the
            official training split of the train and validation samples.
    """

    classes: ClassVar[list[str]]
    in_channels: ClassVar[int]
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]
    _collate_fn = staticmethod(_collate)

    # Above this size the preprocessed images are not kept in memory: 60000 images of
    # 224 x 224 floats would take 12 GB. Per-batch preprocessing then takes over.
    _PRECOMPUTE_MAX_BYTES: ClassVar[int] = 1 << 30

    def __init__(
        self, image_size: int | None = None, normalize: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if image_size is not None and image_size < 1:
            raise ValueError(
                f"{type(self).__name__}: image_size={image_size} must be positive or None"
            )
        self.image_size = image_size
        self.normalize = normalize

    def _load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        """Read the official training (``train=True``) or test split from disk.

        Returns:
            ``(images, labels)``: images ``[N, C, H, W]`` or ``[N, H, W]``, either uint8 in
            [0, 255] or float in [0, 1]; labels ``[N]`` of integers in
            ``range(num_classes)``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement _load_split(train)")

    def preprocess(self, images: Tensor) -> Tensor:
        """Turn raw images into model input exactly as the dataloaders do.

        Useful for predicting on your own images with a model trained on this data.

        Args:
            images: ``[B, C, H, W]`` or ``[B, H, W]``, uint8 in [0, 255] or float in [0, 1].

        Returns:
            float32 ``[B, in_channels, image_size, image_size]``, standardised if
            ``normalize``.
        """
        return self._preprocessor()(self._as_nchw(images, "images"))

    def _read_split(self, split: str) -> tuple[Tensor, Tensor] | None:
        # Tensor datasets ship a training and a test split; validation is held out.
        return None if split == "val" else self._checked_split(train=split == "train")

    def _split_labels(self, data: tuple[Tensor, Tensor]) -> np.ndarray:
        return data[1].numpy()

    def _make_dataset(
        self, data: tuple[Tensor, Tensor], positions: np.ndarray | None, train: bool
    ) -> _ImageTensorDataset:
        images, labels = data
        if positions is not None:
            index = torch.from_numpy(positions)
            images, labels = images[index], labels[index]
        images, transform = self._prepare(images)
        return _ImageTensorDataset(images, labels, transform)

    def _preprocessor(self) -> _Preprocess:
        return _Preprocess(self.image_size, self.mean, self.std, self.normalize)

    def _as_nchw(self, images: Tensor, what: str) -> Tensor:
        if images.dim() == 3:
            images = images.unsqueeze(1)
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: {what} have shape {tuple(images.shape)}; expected "
                f"[N, {self.in_channels}, H, W] (or [N, H, W] for one channel)"
            )
        return images

    def _checked_split(self, train: bool) -> tuple[Tensor, Tensor]:
        split = "training" if train else "test"
        images, labels = self._load_split(train)
        images = self._as_nchw(images, f"the {split} images")
        labels = labels.long()
        if labels.dim() != 1 or len(labels) != len(images):
            raise ValueError(
                f"{type(self).__name__}: the {split} split has {len(images)} images but "
                f"labels of shape {tuple(labels.shape)}; the files do not belong together"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"{type(self).__name__}: {split} labels span {labels.min()}..{labels.max()} "
                f"but there are {self.num_classes} classes; check that the files are this "
                "dataset's"
            )
        return images, labels

    def _prepare(self, images: Tensor) -> tuple[Tensor, _Preprocess | None]:
        """Preprocess everything now if the result fits in memory, else defer to batches."""
        transform = self._preprocessor()
        height, width = images.shape[-2:]
        if self.image_size is not None:
            height = width = self.image_size
        float_bytes = len(images) * images.shape[1] * height * width * 4
        if float_bytes > self._PRECOMPUTE_MAX_BYTES:
            return images, transform
        # Chunks bound the peak memory of the float intermediates.
        chunks = [transform(chunk) for chunk in images.split(4096)]
        return torch.cat(chunks) if chunks else transform(images), None
