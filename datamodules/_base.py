"""The one base class for image-classification datamodules.

Batch format (the contract with ``tasks``): ``(images[B, C, H, W] float32, labels[B] int64)``.

A subclass only says how to read its data (:meth:`ClassificationDataModule._load_split`)
and declares its class names, channels and normalisation constants. The base does the
rest the same way for every dataset: a seeded, stratified train/val split or K-fold of
the official training split (the official test split stays the test set), uint8 -> float
in [0, 1], an optional resize, standardisation, and the dataloaders.
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from sklearn.model_selection import StratifiedKFold, train_test_split
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

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


class ClassificationDataModule(L.LightningDataModule):
    """Base for image-classification datamodules: splits, preprocessing, dataloaders.

    The official test split is the test set, and ``predict`` runs on it as well. The
    official training split is divided into train and validation sets, either as a
    stratified holdout of ``val_fraction`` or, when ``num_folds >= 2``, as the ``fold``-th
    split of a stratified K-fold cross-validation (d2l section 3.6.3, "K-Fold
    Cross-Validation"). Both are seeded with ``seed``, so a run is reproducible and the
    K folds of one seed partition the training split.

    Images become float32 in [0, 1], optionally resized to ``image_size`` (the course
    resizes Fashion-MNIST to 224 for AlexNet, d2l section 8.1, and to 96 for ResNet,
    d2l section 8.6) and standardised with the dataset's ``mean`` and ``std``. When the
    preprocessed set fits in memory (below ``_PRECOMPUTE_MAX_BYTES``) this happens once
    in ``setup`` and batches are plain tensor indexing; otherwise each batch is
    preprocessed as it is drawn.

    Subclasses set the class attributes ``classes``, ``in_channels``, ``mean`` and ``std``,
    implement :meth:`_load_split`, add their own constructor arguments and pass the rest
    on with ``**kwargs``.

    Args:
        batch_size: samples per batch for every split.
        num_workers: DataLoader worker processes; 0 loads in the main process.
        val_fraction: share of the training split held out for validation when
            ``num_folds < 2``; 0 means no validation set.
        num_folds: number of cross-validation folds; 0 or 1 means no K-fold.
        fold: which fold (0-based) is the validation set when ``num_folds >= 2``.
        seed: seed of the train/val split and of the K-fold shuffle.
        image_size: resize images to ``image_size x image_size``; None keeps the
            native size.
        normalize: standardise each channel with the dataset's ``mean`` and ``std``;
            False leaves values in [0, 1].
        pin_memory: pin batches in page-locked memory for faster host-to-GPU copies.

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

    # Above this size the preprocessed images are not kept in memory: 60000 images of
    # 224 x 224 floats would take 12 GB. Per-batch preprocessing then takes over.
    _PRECOMPUTE_MAX_BYTES: ClassVar[int] = 1 << 30

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        num_folds: int = 0,
        fold: int = 0,
        seed: int = 42,
        image_size: int | None = None,
        normalize: bool = True,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if batch_size < 1:
            raise ValueError(f"{name}: batch_size={batch_size} must be at least 1")
        if num_workers < 0:
            raise ValueError(f"{name}: num_workers={num_workers} must be 0 or more")
        if not 0 <= val_fraction < 1:
            raise ValueError(
                f"{name}: val_fraction={val_fraction} must be in [0, 1), e.g. 0.1 to hold "
                "out 10% of the training split, or 0 for no validation set"
            )
        if num_folds < 0:
            raise ValueError(f"{name}: num_folds={num_folds} must be 0 (no K-fold) or >= 2")
        if num_folds >= 2 and not 0 <= fold < num_folds:
            raise ValueError(
                f"{name}: fold={fold} is out of range for num_folds={num_folds}; folds are "
                f"numbered 0 to {num_folds - 1}"
            )
        if num_folds < 2 and fold != 0:
            raise ValueError(
                f"{name}: fold={fold} needs K-fold cross-validation; set num_folds to the "
                "number of folds (>= 2) or leave fold at 0"
            )
        if image_size is not None and image_size < 1:
            raise ValueError(f"{name}: image_size={image_size} must be positive or None")
        # Recorded in checkpoints, so a run's data settings travel with its weights.
        self.save_hyperparameters()

        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.num_folds = num_folds
        self.fold = fold
        self.seed = seed
        self.image_size = image_size
        self.normalize = normalize
        self.pin_memory = pin_memory

        self.train_indices: Tensor | None = None
        self.val_indices: Tensor | None = None
        self.train_dataset: _ImageTensorDataset | None = None
        self.val_dataset: _ImageTensorDataset | None = None
        self.test_dataset: _ImageTensorDataset | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(classes)``."""
        return len(self.classes)

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

    def setup(self, stage: str | None = None) -> None:
        """Read the splits the stage needs and build the datasets (idempotent)."""
        if stage in (None, "fit", "validate") and self.train_dataset is None:
            images, labels = self._checked_split(train=True)
            self.train_indices, self.val_indices = self._split_indices(labels)
            images, transform = self._prepare(images)
            self.train_dataset = _ImageTensorDataset(
                images[self.train_indices], labels[self.train_indices], transform
            )
            if len(self.val_indices) > 0:
                self.val_dataset = _ImageTensorDataset(
                    images[self.val_indices], labels[self.val_indices], transform
                )
        if stage in (None, "test", "predict") and self.test_dataset is None:
            images, labels = self._checked_split(train=False)
            images, transform = self._prepare(images)
            self.test_dataset = _ImageTensorDataset(images, labels, transform)

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of the training set."""
        return self._dataloader(self._require(self.train_dataset, "fit"), shuffle=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Batches of the validation set, or ``[]`` (no validation) if it is empty."""
        self._require(self.train_dataset, "fit")
        if self.val_dataset is None:
            return []
        return self._dataloader(self.val_dataset, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Batches of the official test split, in file order."""
        return self._dataloader(self._require(self.test_dataset, "test"), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test set again, so ``predict`` yields one output per test image."""
        return self._dataloader(self._require(self.test_dataset, "predict"), shuffle=False)

    # -- helpers ----------------------------------------------------------------------

    def _dataloader(self, dataset: _ImageTensorDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=_collate,
        )

    def _require(self, dataset: _ImageTensorDataset | None, stage: str) -> _ImageTensorDataset:
        if dataset is None:
            raise RuntimeError(
                f"{type(self).__name__}: no {stage} data yet; call setup({stage!r}) first "
                "(a Trainer does this for you)"
            )
        return dataset

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

    def _split_indices(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Positions of the train and validation samples in the official training split."""
        positions = np.arange(len(labels))
        targets = labels.numpy()
        if self.num_folds >= 2:
            folds = StratifiedKFold(n_splits=self.num_folds, shuffle=True, random_state=self.seed)
            train, val = list(folds.split(positions, targets))[self.fold]
        elif self.val_fraction == 0:
            train, val = positions, positions[:0]
        else:
            try:
                train, val = train_test_split(
                    positions,
                    test_size=self.val_fraction,
                    random_state=self.seed,
                    stratify=targets,
                )
            except ValueError as error:
                # Stratifying needs at least one sample per class on each side; tiny data
                # (a smoke test, a few-shot set) may not have that.
                rank_zero_warn(
                    f"{type(self).__name__}: cannot stratify the validation split ({error}); "
                    "falling back to a seeded random split"
                )
                train, val = train_test_split(
                    positions, test_size=self.val_fraction, random_state=self.seed
                )
        return torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(val))

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
