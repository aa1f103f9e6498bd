"""The base of every datamodule: the split logic once, for both kinds of storage.

:class:`SplitDataModule` holds what every datamodule shares whatever it stores and whatever
batch format it yields: the arguments and their checks, a seeded, stratified train/val
split or K-fold of the official training split (the official test split stays the test
set), and the dataloaders. Two storages build on it:

- :class:`~datamodules._memory.ClassificationDataModule`: whole datasets held as tensors
  (MNIST-sized data), batches made by one indexing step; batch format
  ``(images[B, C, H, W] float32, labels[B] int64)``.
- :class:`~datamodules._files.FileDataModule`: datasets read from image files, decoded with
  PIL and augmented with albumentations one sample at a time in DataLoader workers. Its
  subclasses choose the batch format (``datamodules.folder.FileClassificationDataModule`` for
  classification; detection and segmentation replace the dataset's ``_apply`` and the
  collate function).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from sklearn.model_selection import StratifiedKFold, train_test_split
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from ._samplers import sampling

__all__ = ["SplitDataModule"]


class SplitDataModule(L.LightningDataModule):
    """Base of the image datamodules: the splits and the dataloaders, whatever the storage.

    The official test split is the test set, and ``predict`` runs on it as well. When the
    dataset has no official validation split, the official training split is divided
    into train and validation sets, either as a stratified holdout of ``val_fraction`` or,
    when ``num_folds >= 2``, as the ``fold``-th split of a stratified K-fold
    cross-validation (d2l section 3.6.3, "K-Fold Cross-Validation"). Both are seeded with
    ``seed``, so a run is reproducible and the K folds of one seed partition the training
    split.

    A storage implements three hooks: :meth:`_read_split` (an official split, in whatever
    form it stores data), :meth:`_split_labels` (one integer per sample to stratify on) and
    :meth:`_make_dataset` (a ``Dataset`` of some positions of a split); ``_collate_fn`` and
    ``_worker_init_fn`` set the batch format and the workers' start-up.

    Args:
        batch_size: samples per batch for every split.
        num_workers: DataLoader worker processes; 0 loads in the main process.
        val_fraction: share of the training split held out for validation when
            ``num_folds < 2`` and the dataset has no validation split of its own; 0 means
            no validation set.
        num_folds: number of cross-validation folds; 0 or 1 means no K-fold.
        fold: which fold (0-based) is the validation set when ``num_folds >= 2``.
        seed: seed of the train/val split and of the K-fold shuffle.
        pin_memory: pin batches in page-locked memory for faster host-to-GPU copies.

    Attributes:
        classes: class names, index ``i`` naming label ``i``.
        num_classes: ``len(classes)``.
        train_indices, val_indices: after ``setup("fit")``, the positions in the
            official training split of the train and validation samples (``val_indices``
            is None when the dataset brings its own validation split).
    """

    classes: list[str]
    # staticmethod: a plain function stored on the class would be bound to self.
    _collate_fn: ClassVar[Callable[[Any], Any]] = staticmethod(default_collate)
    _worker_init_fn: ClassVar[Callable[[int], None] | None] = None
    # Without a test split, predict on the validation set instead of raising (datasets whose
    # official test split has no labels, like COCO's test-dev).
    _predict_on_val: ClassVar[bool] = False

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        num_folds: int = 0,
        fold: int = 0,
        seed: int = 42,
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
        # Recorded in checkpoints, so a run's data settings travel with its weights. Lightning
        # collects the arguments of every subclass's __init__ on the call stack.
        self.save_hyperparameters()
        for key, value in self.hparams.items():
            if isinstance(value, os.PathLike):  # a pickled Path would make weights_only refuse
                self.hparams[key] = os.fspath(value)  # the checkpoint (zoo.load, --ckpt_path)

        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.num_folds = num_folds
        self.fold = fold
        self.seed = seed
        self.pin_memory = pin_memory

        self.train_indices: Tensor | None = None
        self.val_indices: Tensor | None = None
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self._no_test_split = False

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(classes)``."""
        return len(self.classes)

    # -- what a storage implements ----------------------------------------------------

    def _read_split(self, split: str) -> Any:
        """The official ``"train"``, ``"val"`` or ``"test"`` split, or None if there is none.

        Every dataset has a training split. None for ``"val"`` means the validation set is
        held out of the training split; None for ``"test"`` means there is no test set.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement _read_split(split)")

    def _split_labels(self, data: Any) -> np.ndarray:
        """One integer per sample of ``data`` (a split): the classes to stratify on.

        Datasets with no single label per sample (detection) may return zeros, which makes
        the split a seeded random one.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement _split_labels(data)")

    def _make_dataset(self, data: Any, positions: np.ndarray | None, train: bool) -> Dataset:
        """A dataset of the samples of ``data`` at ``positions`` (all if None); ``train``
        selects the training-time (augmented) pipeline."""
        raise NotImplementedError(f"{type(self).__name__} must implement _make_dataset")

    def _missing_test_split(self) -> str:
        """Why there is no test split and how to add one (for the error message)."""
        return "the dataset has no test split"

    # -- Lightning hooks --------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Read the splits the stage needs and build the datasets (idempotent)."""
        if stage in (None, "fit", "validate") and self.train_dataset is None:
            self._setup_train_and_val()
        if stage in (None, "test", "predict") and self.test_dataset is None:
            data = self._read_split("test")
            self._no_test_split = data is None
            if data is not None:
                self.test_dataset = self._make_dataset(data, None, train=False)
            elif stage == "predict" and self._predict_on_val:
                self._setup_validation_only()
            elif stage is not None:
                self._require(None, stage)  # raises, naming what is missing

    def _setup_train_and_val(self) -> None:
        """The training and validation sets: the official splits, or a held-out part (or a
        fold) of the training split."""
        data = self._read_split("train")
        held_out = self._read_split("val")
        if held_out is None:
            train, val = self._split_indices(self._split_labels(data))
            self.train_indices, self.val_indices = (
                torch.from_numpy(train),
                torch.from_numpy(val),
            )
            self.train_dataset = self._make_dataset(data, train, train=True)
            self.val_dataset = self._make_dataset(data, val, train=False) if len(val) else None
        else:
            if self.num_folds >= 2:
                raise ValueError(
                    f"{type(self).__name__}: num_folds={self.num_folds}, but the data has a "
                    "validation split of its own; K-fold needs one pool of training "
                    "samples: merge the validation samples into the training split, or "
                    "leave num_folds at 0"
                )
            self.train_indices = torch.arange(len(self._split_labels(data)))
            self.train_dataset = self._make_dataset(data, None, train=True)
            self.val_dataset = self._make_dataset(held_out, None, train=False)

    def _setup_validation_only(self) -> None:
        """The validation set for ``predict``: the official validation split alone (the
        training split is not read), or the held-out part of the training split."""
        if self.val_dataset is not None:
            return
        held_out = self._read_split("val")
        if held_out is None:
            self._setup_train_and_val()
        else:
            self.val_dataset = self._make_dataset(held_out, None, train=False)

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
        """The test set again, so ``predict`` yields one output per test image; without a test
        split, the validation set when the datamodule predicts on it (``_predict_on_val``)."""
        if self.test_dataset is None and self._no_test_split and self._predict_on_val:
            if self.val_dataset is None:
                raise RuntimeError(
                    f"{type(self).__name__}: no validation images to predict on (no test split, "
                    "and val_fraction=0 with no validation split); set a test or validation "
                    "split"
                )
            return self._dataloader(self.val_dataset, shuffle=False)
        return self._dataloader(self._require(self.test_dataset, "predict"), shuffle=False)

    # -- helpers ----------------------------------------------------------------------

    def _dataloader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            # Each process's share, evaluation sets without repeats (see datamodules._samplers).
            **sampling(dataset, self.trainer, shuffle, type(self).__name__),
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=self._collate_fn,
            worker_init_fn=self._worker_init_fn,
        )

    def _require(self, dataset: Dataset | None, stage: str) -> Dataset:
        if dataset is not None:
            return dataset
        name = type(self).__name__
        if stage in ("test", "predict") and self._no_test_split:
            raise RuntimeError(f"{name}: no test set to {stage} on: {self._missing_test_split()}")
        raise RuntimeError(
            f"{name}: no {stage} data yet; call setup({stage!r}) first (a Trainer does this "
            "for you)"
        )

    def _split_indices(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sorted positions of the train and validation samples in the training split."""
        positions = np.arange(len(labels))
        if self.num_folds >= 2:
            folds = StratifiedKFold(n_splits=self.num_folds, shuffle=True, random_state=self.seed)
            train, val = list(folds.split(positions, labels))[self.fold]
        elif self.val_fraction == 0:
            train, val = positions, positions[:0]
        else:
            try:
                train, val = train_test_split(
                    positions,
                    test_size=self.val_fraction,
                    random_state=self.seed,
                    stratify=labels,
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
        return np.sort(train), np.sort(val)
