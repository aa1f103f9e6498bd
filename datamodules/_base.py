"""The bases of the datamodules: the split logic once, for both kinds of storage.

:class:`SplitDataModule` holds what every datamodule shares whatever it stores and whatever
batch format it yields: the arguments and their checks, a seeded, stratified train/val
split or K-fold of the official training split (the official test split stays the test
set), and the dataloaders. Two storages build on it:

- :class:`ClassificationDataModule`: whole datasets held as tensors (MNIST-sized data),
  batches made by one indexing step; batch format ``(images[B, C, H, W] float32,
  labels[B] int64)``.
- :class:`FileDataModule`: datasets read from image files, decoded with PIL and augmented
  with albumentations one sample at a time in DataLoader workers. Its subclasses choose
  the batch format (``datamodules.folder.FileClassificationDataModule`` for
  classification; detection and segmentation replace the dataset's ``_apply`` and the
  collate function).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import albumentations as A
import cv2
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from sklearn.model_selection import StratifiedKFold, train_test_split
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info

__all__ = [
    "ClassificationDataModule",
    "FileDataModule",
    "ImageFileDataset",
    "SplitDataModule",
    "find_bad_images",
    "load_image",
]


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
        if stage in (None, "test", "predict") and self.test_dataset is None:
            data = self._read_split("test")
            self._no_test_split = data is None
            if data is not None:
                self.test_dataset = self._make_dataset(data, None, train=False)
            elif stage is not None:
                self._require(None, stage)  # raises, naming what is missing

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

    def _dataloader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
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


# -- whole datasets held as tensors ---------------------------------------------------


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


# -- datasets read from image files ---------------------------------------------------

# 16-bit modes PIL opens grey PNGs and TIFFs in. PIL's own convert("L") clips them at 255
# instead of scaling, which turns most 16-bit images white.
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length, type, CRC


def load_image(path: str | os.PathLike[str], in_channels: int = 3) -> np.ndarray:
    """Decode an image file into ``[H, W, in_channels]`` uint8, as the datamodules do.

    Every mode becomes RGB (``in_channels=3``) or luma L (``in_channels=1``) with PIL's
    ``convert``, as torchvision's ImageFolder loader does: grey is replicated, palette
    images take their colours, alpha is dropped, CMYK is converted. 16-bit images are
    scaled to 8 bits (PIL would clip them at 255).

    Raises:
        ValueError: naming the file, when it cannot be decoded (empty, not an image,
            truncated, corrupt).
    """
    mode = "RGB" if in_channels == 3 else "L"
    try:
        with Image.open(path) as image:
            if image.mode in _WIDE_MODES:
                wide = np.asarray(image, dtype=np.float32)
                image = Image.fromarray(np.clip(wide / 257, 0, 255).round().astype(np.uint8))
            elif image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")  # what PIL asks for: else it warns on convert
            array = np.asarray(image if image.mode == mode else image.convert(mode))
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBomb...
        raise ValueError(
            f"cannot decode image {path} ({type(error).__name__}: {error}); delete or replace "
            "the file, or set skip_bad_files: true (--data.skip_bad_files true) to skip it"
        ) from error
    return array[..., None] if in_channels == 1 else array


def _check_image(path: Path) -> str | None:
    """None if ``path`` looks like a complete image, else what is wrong with it.

    Cheap for the common formats: PIL reads the header, and the file's last bytes must be
    the format's end marker (JPEG's EOI, PNG's IEND) or its size the one the header gives
    (WebP). Only when that does not hold, or for other formats, is the image decoded.
    """
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            if size == 0:
                return "empty file (0 bytes)"
            file.seek(max(size - len(_PNG_END), 0))
            tail = file.read()
            file.seek(0)
            with Image.open(file) as image:
                if image.format in ("JPEG", "MPO"):
                    complete = tail.endswith(b"\xff\xd9")
                elif image.format == "PNG":
                    complete = tail == _PNG_END
                elif image.format == "WEBP":
                    file.seek(4)  # RIFF chunk size: the bytes after the first 8
                    complete = size >= int.from_bytes(file.read(4), "little") + 8
                else:
                    complete = False
                if not complete:
                    # A missing end marker is usually a truncated file, but some cameras
                    # append data after it: decoding decides. PIL's LOAD_TRUNCATED_IMAGES
                    # stays off, so a truncated image raises here.
                    image.load()
    except Exception as error:  # any failure to read it makes the file unusable
        return f"{type(error).__name__}: {error}"
    return None


def find_bad_images(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[Path, str]]:
    """The files among ``paths`` that are not complete images, each with the reason.

    Catches empty files, files that are not images (whatever their extension) and
    truncated JPEG, PNG and WebP files without decoding them; see :func:`load_image` for
    what happens to a file whose damage only decoding reveals.
    """
    found = ((Path(path), _check_image(Path(path))) for path in paths)
    return [(path, reason) for path, reason in found if reason is not None]


class ImageFileDataset(Dataset):
    """Image files decoded with PIL and transformed with albumentations, one per item.

    Each item is ``transform(image=array)["image"]`` and the sample's target. Subclasses
    for other batch formats override :meth:`_apply` (e.g. to pass boxes and masks to a
    box-aware ``albumentations.Compose``).

    A file that fails to decode raises a ``ValueError`` naming it. With
    ``skip_bad_files`` it is reported in a warning instead and the next sample of the
    dataset takes its place, so batches keep their size.

    Args:
        samples: ``(path, target)`` pairs.
        transform: the albumentations pipeline, ending in a tensor conversion.
        in_channels: 3 decodes to RGB, 1 to grey-scale (luma).
        skip_bad_files: replace undecodable files instead of raising.
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, Any]],
        transform: A.Compose,
        in_channels: int = 3,
        skip_bad_files: bool = False,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.in_channels = in_channels
        self.skip_bad_files = skip_bad_files
        self._seeded_in: int | None = None  # the worker process the transform was seeded in

    @property
    def targets(self) -> list[Any]:
        """The target of every sample, in order."""
        return [target for _, target in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        worker = get_worker_info()
        if worker is not None and self._seeded_in != os.getpid():
            # Forked workers inherit identical copies of the transform's random generator:
            # without a reseed every worker would draw the same crops and flips. torch gives
            # each worker its own seed, drawn from the main process's RNG (so that
            # seed_everything fixes it too) and new for every epoch unless workers persist.
            self.reseed(worker.seed)
            self._seeded_in = os.getpid()
        for attempt in range(min(len(self.samples), 10)):
            path, target = self.samples[(index + attempt) % len(self.samples)]
            try:
                image = load_image(path, self.in_channels)
            except ValueError as error:
                if not self.skip_bad_files:
                    raise
                warnings.warn(f"skipping {error}", stacklevel=2)
                continue
            return self._apply(image, target)
        raise ValueError(
            f"{len(self.samples)} samples, and the 10 from position {index} on all fail to "
            "decode; the data set is damaged (see the warnings above for the files)"
        )

    def _apply(self, image: np.ndarray, target: Any) -> tuple[Any, Any]:
        return self.transform(image=image)["image"], target

    def reseed(self, seed: int) -> None:
        """Seed the transform's random state (albumentations keeps its own generator)."""
        self.transform.set_random_seed(seed % 2**32)


def _init_worker(worker_id: int) -> None:
    # One OpenCV thread per worker: the workers already fill the cores, and OpenCV's own
    # thread pool on top of them only adds contention.
    cv2.setNumThreads(1)


class FileDataModule(SplitDataModule):
    """Base for datasets read from image files, decoded and augmented per sample.

    Files are decoded with PIL and transformed with albumentations in the DataLoader's
    worker processes (``num_workers``; each gets its own augmentation seed). The splits are
    :class:`SplitDataModule`'s; a subclass lists the ``(path, target)`` samples of each
    official split (:meth:`_list_samples`), gives the training and evaluation pipelines
    (:meth:`train_transform`, :meth:`eval_transform`) and, for batch formats other than
    stacked tensors, a dataset class and a collate function.

    Bad files are found in two places. ``setup`` checks every listed file cheaply (PIL
    reads the header; a JPEG, PNG or WebP must also end where its format says), which
    catches empty files, non-images with an image extension and truncated files: it raises
    a ``ValueError`` naming them or, with ``skip_bad_files``, drops them and names them in
    one warning. A file whose damage only a full decode reveals fails in the worker that
    decodes it, again raising with its path or, with ``skip_bad_files``, warning and
    taking the next sample instead. PIL's global ``LOAD_TRUNCATED_IMAGES`` is never set,
    so a truncated image cannot silently train.

    Args:
        in_channels: channels the images are decoded to: 3 (RGB) or 1 (grey-scale);
            grey, palette, RGBA, CMYK and 16-bit files are converted.
        skip_bad_files: skip unreadable files with a warning instead of raising.
        **kwargs: batch size, workers and splits; see
            :class:`~datamodules.SplitDataModule`.
    """

    _dataset_class: ClassVar[type[ImageFileDataset]] = ImageFileDataset
    _worker_init_fn = staticmethod(_init_worker)

    def __init__(self, in_channels: int = 3, skip_bad_files: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if in_channels not in (1, 3):
            raise ValueError(
                f"{type(self).__name__}: in_channels={in_channels} must be 3 (RGB) or 1 "
                "(grey-scale)"
            )
        self.in_channels = in_channels
        self.skip_bad_files = skip_bad_files
        self._skipped: list[tuple[Path, str]] = []

    def _list_samples(self, split: str) -> list[tuple[Path, Any]] | None:
        """The ``(path, target)`` samples of an official split, None if there is none.

        Called in ``setup``; it may list folders and read annotation files but should not
        open the images (``setup`` checks them afterwards).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement _list_samples(split)")

    def train_transform(self) -> A.Compose:
        """The training pipeline: array ``[H, W, C]`` uint8 -> augmented model input."""
        raise NotImplementedError(f"{type(self).__name__} must implement train_transform()")

    def eval_transform(self) -> A.Compose:
        """The deterministic pipeline of validation, test and prediction."""
        raise NotImplementedError(f"{type(self).__name__} must implement eval_transform()")

    def setup(self, stage: str | None = None) -> None:
        self._skipped = []
        super().setup(stage)
        if self._skipped:
            named = ", ".join(f"{path} ({reason})" for path, reason in self._skipped[:3])
            more = f" and {len(self._skipped) - 3} more" if len(self._skipped) > 3 else ""
            rank_zero_warn(
                f"{type(self).__name__}: skipped {len(self._skipped)} unreadable image "
                f"file(s) (skip_bad_files=True): {named}{more}"
            )

    def _read_split(self, split: str) -> list[tuple[Path, Any]] | None:
        samples = self._list_samples(split)
        if samples is None:
            return None
        bad = find_bad_images([path for path, _ in samples])
        if bad and not self.skip_bad_files:
            named = "; ".join(f"{path} ({reason})" for path, reason in bad[:5])
            more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise ValueError(
                f"{type(self).__name__}: {len(bad)} unreadable image file(s) in the {split} "
                f"split: {named}{more}. Delete or replace them, or set skip_bad_files: true "
                "(--data.skip_bad_files true) to skip them with a warning"
            )
        self._skipped.extend(bad)
        bad_paths = {path for path, _ in bad}
        return [sample for sample in samples if sample[0] not in bad_paths]

    def _make_dataset(
        self, data: list[tuple[Path, Any]], positions: np.ndarray | None, train: bool
    ) -> ImageFileDataset:
        samples = data if positions is None else [data[i] for i in positions]
        dataset = self._dataset_class(
            samples,
            self.train_transform() if train else self.eval_transform(),
            self.in_channels,
            self.skip_bad_files,
        )
        # In the main process (num_workers=0) the augmentations follow torch's seed, so
        # seed_everything makes them reproducible; each worker reseeds on its first item.
        dataset.reseed(torch.initial_seed())
        return dataset
