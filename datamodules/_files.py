"""Datasets read from image files: decoded with PIL and augmented with albumentations one sample at
a time in DataLoader workers, bad files found before training starts."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import albumentations as A
import cv2
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ._base import SplitDataModule

__all__ = ["FileDataModule", "ImageFileDataset", "find_bad_images", "header_size", "load_image"]


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


def header_size(path: Path) -> tuple[int, int] | None:
    """``(height, width)`` of an image file from its header (nothing is decoded), or None
    when it cannot be read: :func:`find_bad_images` names such a file, in ``setup``."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except Exception:
        return None


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
    # thread pool on top of them only adds contention. (Workers started by spawn need this;
    # forked ones inherit the parent's setting, see FileDataModule._dataloader.)
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

    def _dataloader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        if self.num_workers > 0:
            # OpenCV's thread pool does not survive fork: once it has run in this process (a
            # workers=0 epoch, a notebook showing augmented images), a forked worker setting
            # its own thread count hangs in pthread_cond_destroy one time in a few. A parent
            # at one thread has no pool to inherit; its own OpenCV calls then run serially.
            cv2.setNumThreads(1)
        return super()._dataloader(dataset, shuffle)

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
        kept = [sample for sample in samples if sample[0] not in bad_paths]
        if not kept:
            # Caught here, not by the sampler or the split as "num_samples=0".
            fix = (
                f" ({len(samples)} listed, all unreadable and skipped): replace the files"
                if samples
                else f"; {self._empty_split_fix(split)}"
            )
            raise ValueError(f"{type(self).__name__}: the {split} split has no images{fix}")
        return kept

    def _empty_split_fix(self, split: str) -> str:
        """Where a split's images are listed and how to fill it (for the error message)."""
        return "check data.root and that the split's files are there"

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
