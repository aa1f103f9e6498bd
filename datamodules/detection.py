"""The base of the object-detection datamodules: boxes read from annotation files, augmented
with the images (d2l chapter 14: bounding boxes, 14.3; the object detection dataset, 14.6).

Batch format, the only contract with ``tasks``: ``(images, targets)``. ``images`` is a
stacked ``[B, C, H, W]`` float32 tensor when every image of the batch has the same size,
else a list of ``[C, H, W]`` tensors. ``targets`` holds one dict per image:

- ``"boxes"``: ``[N, 4]`` float32, ``x1, y1, x2, y2`` in pixels of the image as returned
  (after resizing and augmentation), pixel edges: a box covering columns 3 to 7 has
  ``x1 = 3, x2 = 8``;
- ``"labels"``: ``[N]`` int64 in ``1..K``; label ``i`` names ``classes[i - 1]`` (0 is the
  background, never a target);
- ``"iscrowd"``: ``[N]`` int64 0/1. Training targets hold no crowd (COCO) or difficult (VOC)
  objects; evaluation targets keep them with ``iscrowd = 1``, which torchmetrics'
  ``MeanAveragePrecision`` ignores as COCOeval ignores crowd regions;
- ``"image_id"``: int64 scalar (COCO: the id in the JSON; VOC: the position in the split file);
- ``"orig_size"``: int64 ``[2]``, the ``(H, W)`` of the image file, to map predictions back;
- ``"masks"``: ``[N, H, W]`` uint8, only with ``masks=True`` (COCO).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from . import transforms
from ._files import FileDataModule, ImageFileDataset

__all__ = [
    "AnnotationReport",
    "DetectionAnnotation",
    "DetectionDataModule",
    "DetectionFileDataset",
    "collate_detection",
]


@dataclass(frozen=True)
class DetectionAnnotation:
    """The objects of one image, parsed once from its annotation file (plain data, so it
    travels cheaply to DataLoader workers).

    Attributes:
        image_id: COCO's image id, or the image's position in a VOC split file.
        orig_size: ``(height, width)`` of the image as the annotation gives it.
        boxes: ``[N, 4]`` float32 pixel-edge ``x1, y1, x2, y2`` in file pixels, inside the
            image and non-degenerate.
        labels: ``[N]`` int64 in ``1..K``.
        iscrowd: ``[N]`` int64, 1 for COCO crowd regions and VOC difficult objects.
        segmentations: with masks, each object's COCO segmentation (polygons, RLE or
            uncompressed RLE), decoded only when the sample is loaded.
    """

    image_id: int
    orig_size: tuple[int, int]
    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    segmentations: tuple[Any, ...] | None = None

    def without_crowd(self) -> DetectionAnnotation:
        """The same image without its crowd (or difficult) objects: what training sees."""
        keep = self.iscrowd == 0
        if keep.all():
            return self
        segmentations = self.segmentations
        if segmentations is not None:
            segmentations = tuple(s for s, k in zip(segmentations, keep, strict=True) if k)
        return replace(
            self,
            boxes=self.boxes[keep],
            labels=self.labels[keep],
            iscrowd=self.iscrowd[keep],
            segmentations=segmentations,
        )


class AnnotationReport:
    """What parsing one split fixed or dropped, counted for a one-line summary.

    Args:
        crowd_name: what ``iscrowd = 1`` objects are called in the format, singular and
            plural, e.g. ``("crowd region", "crowd regions")`` or ``("difficult object",
            "difficult objects")``.
        unknown_name: what names an object's class, singular and plural, e.g.
            ``("category", "categories")``.
    """

    def __init__(self, crowd_name: tuple[str, str], unknown_name: tuple[str, str]) -> None:
        self.crowd_name = crowd_name
        self.unknown_name = unknown_name
        self.images = 0
        self.boxes = 0
        self.crowd = 0
        self.degenerate = 0
        self.malformed = 0  # boxes that are not four numbers (NaN in ``add_image``)
        self.clamped = 0
        self.unknown: Counter[Any] = Counter()
        self.other: Counter[str] = Counter()  # format-specific problems, e.g. bad polygons

    def add_image(
        self,
        image_id: int,
        orig_size: tuple[int, int],
        boxes: Sequence[Sequence[float]],
        labels: Sequence[int | None],
        unknown_keys: Sequence[Any],
        iscrowd: Sequence[int],
        segmentations: Sequence[Any] | None = None,
    ) -> DetectionAnnotation:
        """Clean one image's objects and count what was done.

        Objects whose label is None are dropped as unknown (``unknown_keys`` says what they
        were called); the others have their box clamped to the image, and are dropped when
        it is then empty (zero or negative width or height, or wholly outside the image).
        A box with a NaN coordinate (how a format's parser marks a missing or non-numeric
        box) is dropped and counted as malformed.
        """
        height, width = orig_size
        array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        known = np.array([label is not None for label in labels], dtype=bool)
        self.unknown.update(key for key, ok in zip(unknown_keys, known, strict=True) if not ok)
        clamped = array.copy()
        clamped[:, 0::2] = clamped[:, 0::2].clip(0, width)
        clamped[:, 1::2] = clamped[:, 1::2].clip(0, height)
        finite = np.isfinite(array).all(axis=1)
        with np.errstate(invalid="ignore"):  # NaN coordinates compare False: not valid
            valid = (clamped[:, 2] > clamped[:, 0]) & (clamped[:, 3] > clamped[:, 1]) & finite
        changed = (clamped != array).any(axis=1)
        self.malformed += int((known & ~finite).sum())
        self.degenerate += int((known & finite & ~valid).sum())
        keep = known & valid
        self.clamped += int((keep & changed).sum())
        crowd = np.asarray(iscrowd, dtype=np.int64).reshape(-1)[keep].clip(0, 1)
        self.images += 1
        self.boxes += int(keep.sum())
        self.crowd += int(crowd.sum())
        return DetectionAnnotation(
            image_id=int(image_id),
            orig_size=(int(height), int(width)),
            boxes=clamped[keep].astype(np.float32),
            labels=np.array([label for label, k in zip(labels, keep, strict=True) if k], np.int64),
            iscrowd=crowd,
            segmentations=None
            if segmentations is None
            else tuple(s for s, k in zip(segmentations, keep, strict=True) if k),
        )

    def summary(self, source: str) -> tuple[str, bool]:
        """The one-line summary for ``source`` (e.g. ``"COCO train2017"``), and whether
        anything was dropped or changed (worth a warning)."""
        dropped = []
        if self.malformed:
            dropped.append(f"{_count(self.malformed, _BOXES)} without 4 numeric coordinates")
        if self.degenerate:
            dropped.append(_count(self.degenerate, ("degenerate box", "degenerate boxes")))
        if self.unknown:
            total = sum(self.unknown.values())
            shown = sorted(self.unknown, key=str)[:5]
            names = ", ".join(repr(k) if isinstance(k, str) else str(k) for k in shown)
            more = f" and {len(self.unknown) - 5} more" if len(self.unknown) > 5 else ""
            kind = self.unknown_name[len(self.unknown) > 1]
            dropped.append(f"{_count(total, _BOXES)} with unknown {kind} {names}{more}")
        parts = [
            f"{source}: {_count(self.images, ('image', 'images'))}, {_count(self.boxes, _BOXES)}"
        ]
        if dropped:
            parts.append("dropped " + ", ".join(dropped))
        if self.clamped:
            parts.append(f"clamped {_count(self.clamped, _BOXES)} to the image")
        parts.extend(f"{what} ({count})" for what, count in sorted(self.other.items()))
        if self.crowd:
            crowd = _count(self.crowd, self.crowd_name)
            parts.append(f"{crowd} kept out of training (iscrowd=1 in evaluation)")
        return "; ".join(parts), bool(dropped or self.clamped or self.other)


_BOXES = ("box", "boxes")


def _count(number: int, noun: tuple[str, str]) -> str:
    return f"{number} {noun[number != 1]}"


class DetectionFileDataset(ImageFileDataset):
    """Image files with their :class:`DetectionAnnotation`, transformed with the boxes.

    Each item is ``(image [C, H, W] float32, target dict)`` in the batch format of
    :mod:`datamodules.detection`. With ``decode_masks`` (set by the datamodule when
    ``masks=True``) each object's segmentation is decoded to a file-sized mask here, in
    the worker, and transformed with the image.
    """

    decode_masks: Callable[[DetectionAnnotation], np.ndarray] | None = None

    def _apply(self, image: np.ndarray, target: DetectionAnnotation) -> tuple[Tensor, dict]:
        height, width = image.shape[:2]
        boxes = target.boxes
        if (height, width) != target.orig_size:
            # The annotation's size was wrong: the boxes were clamped to it, not to the file.
            boxes = boxes.copy()
            boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        valid = np.flatnonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
        inputs: dict[str, Any] = {"image": image, "bboxes": boxes[valid], transforms.BOX_IDS: valid}
        masks = None
        if self.decode_masks is not None:
            masks = self.decode_masks(target)
            if masks.shape[1:] != (height, width):
                raise ValueError(
                    f"image {target.image_id}: its annotation gives size {target.orig_size} "
                    f"(height, width), the image file {(height, width)}; the masks cannot be "
                    "aligned with the image: fix the height and width in the annotation file"
                )
            if len(valid):  # albumentations cannot stack an empty list of masks
                inputs["masks"] = masks[valid]
        out = self.transform(**inputs)
        image_out: Tensor = out["image"]
        out_height, out_width = image_out.shape[-2:]
        kept = np.asarray(out[transforms.BOX_IDS], dtype=np.int64)  # positions in target
        box_tensor = torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4))
        # Float rounding in albumentations' normalised coordinates can overshoot an edge.
        box_tensor[:, 0::2] = box_tensor[:, 0::2].clamp(0, out_width)
        box_tensor[:, 1::2] = box_tensor[:, 1::2].clamp(0, out_height)
        result = {
            "boxes": box_tensor,
            "labels": torch.as_tensor(target.labels[kept], dtype=torch.int64),
            "iscrowd": torch.as_tensor(target.iscrowd[kept], dtype=torch.int64),
            "image_id": torch.tensor(target.image_id, dtype=torch.int64),
            "orig_size": torch.tensor([height, width], dtype=torch.int64),
        }
        if masks is not None:
            if "masks" in out:
                # albumentations moves every mask it is given, also those of the boxes it
                # dropped: keep the rows of the kept boxes (``valid`` is sorted).
                rows = torch.from_numpy(np.searchsorted(valid, kept))
                result["masks"] = torch.as_tensor(out["masks"])[rows].to(torch.uint8)
            else:
                result["masks"] = torch.zeros((0, out_height, out_width), dtype=torch.uint8)
        return image_out, result


def collate_detection(batch: Sequence[tuple[Tensor, dict]]) -> tuple[Tensor | list[Tensor], list]:
    """Batch detection samples: images stacked when they share a size, else a list."""
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    if len({tuple(image.shape) for image in images}) == 1:
        return torch.stack(images), targets
    return images, targets


class DetectionDataModule(FileDataModule):
    """Base of the object-detection datamodules read from files (COCO, VOC, DigitScenes).

    Yields the batch format of :mod:`datamodules.detection`. A subclass sets ``classes``
    and ``category_ids`` in ``__init__`` from cheap reads, so that the CLI can link
    ``num_classes`` and ``classes`` into the model before ``setup``; names its splits in
    ``splits``; and parses a split's annotation files in :meth:`_parse_split`, once, into
    ``(image path, DetectionAnnotation)`` samples. Bad annotations are fixed or dropped
    there, never in training: boxes are clamped to the image, boxes left empty (zero or
    negative size, wholly outside the image) and objects of unknown classes are dropped,
    and one line per split reports the counts. Images without objects are kept.

    Crowd (COCO) and difficult (VOC) objects are left out of the training targets and kept
    with ``iscrowd = 1`` in validation, test and prediction targets. The training split is
    divided into train and validation sets at random (seeded) when the data has no
    validation split. ``predict`` runs on the test split when there is one, else on the
    validation set.

    Args:
        image_size: None keeps every image's own size (batches are then lists of images
            unless the sizes agree); an int resizes every image to ``image_size`` x
            ``image_size``, with no crop, and scales its boxes (what SSD and TinySSD need).
        train_transforms: the detection augmentation preset of the training set:
            ``"none"``, ``"flip"``, ``"crop"``, ``"crop_colour"``, ``"crop_flip"`` or
            ``"ssd"`` (see :mod:`datamodules.transforms`); the cropping ones need
            ``image_size``.
        mean, std: per-channel standardisation constants; None takes ImageNet's (for
            ``in_channels=1``, the mean of ImageNet's three).
        masks: add each object's instance mask to the targets (formats that have them).
        **kwargs: channels, bad-file handling, batch size, workers and splits; see
            :class:`~datamodules.FileDataModule` and :class:`~datamodules.SplitDataModule`.

    Attributes:
        classes: class names; label ``i`` names ``classes[i - 1]``.
        num_classes: ``len(classes)``, the background not counted.
        category_ids: the dataset's id of each label: label ``i`` is category
            ``category_ids[i - 1]`` (COCO's category ids; VOC's are the labels themselves).
        splits: the dataset's name of the ``"train"``, ``"val"`` and ``"test"`` split, None
            for a split it does not have.
        image_size, mean, std, in_channels, masks: as given (mean and std as tuples).
    """

    _dataset_class = DetectionFileDataset
    _collate_fn = staticmethod(collate_detection)
    _predict_on_val = True  # COCO's test-dev has no annotations; DigitScenes has no test split
    _has_masks: bool = False  # whether the format has instance masks
    _crowd_name = ("crowd region", "crowd regions")
    _unknown_name = ("category", "categories")

    def __init__(
        self,
        image_size: int | None = None,
        train_transforms: str = "flip",
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        masks: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        name = type(self).__name__
        if image_size is not None and image_size < 1:
            raise ValueError(
                f"{name}: image_size={image_size} must be positive (e.g. 300 for SSD), or "
                "None to keep each image's own size"
            )
        transforms.check_detection_preset(train_transforms, image_size, owner=name)
        if masks and not self._has_masks:
            raise ValueError(
                f"{name}: masks=True, but this format has no instance masks; use COCO data "
                "for instance masks, or set masks: false"
            )
        self.mean, self.std = transforms.standardisation(name, mean, std, self.in_channels)
        self.image_size = image_size
        self.train_transforms = train_transforms
        self.masks = masks
        self.classes: list[str] = []
        self.category_ids: list[int] = []
        self.splits: dict[str, str | None] = {"train": None, "val": None, "test": None}

    # -- what a format implements -------------------------------------------------------

    def _parse_split(
        self, split_name: str, report: AnnotationReport
    ) -> list[tuple[Path, DetectionAnnotation]]:
        """The samples of the split named ``split_name``, each image's objects cleaned by
        ``report.add_image`` (which counts what it fixes)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _parse_split")

    def _mask_decoder(self) -> Callable[[DetectionAnnotation], np.ndarray] | None:
        """A picklable function decoding an annotation's masks to ``[N, H, W]`` uint8."""
        return None

    # -- FileDataModule hooks -------------------------------------------------------------

    def train_transform(self) -> A.Compose:
        """The training pipeline: the ``train_transforms`` preset, then standardisation."""
        return transforms.detection_train_transform(
            self.train_transforms, self.image_size, self.mean, self.std, self.masks
        )

    def eval_transform(self) -> A.Compose:
        """The evaluation pipeline: the resize to ``image_size`` (if set), standardisation.
        Call it as ``eval_transform()(image=load_image(path, in_channels), bboxes=...,
        box_ids=...)`` to see your own images as the model does."""
        return transforms.detection_eval_transform(self.image_size, self.mean, self.std, self.masks)

    def _list_samples(self, split: str) -> list[tuple[Path, DetectionAnnotation]] | None:
        split_name = self.splits.get(split)
        if split_name is None:
            return None
        report = AnnotationReport(self._crowd_name, self._unknown_name)
        samples = self._parse_split(split_name, report)
        line, noteworthy = report.summary(f"{type(self).__name__} {split_name}")
        if report.unknown and report.boxes == 0:
            # Not one object left: the classes and the data disagree (a renamed class, the
            # wrong list), which dropping and counting would turn into a run that learns nothing.
            unknown = sorted(report.unknown, key=str)
            names = ", ".join(map(repr, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
            raise ValueError(
                f"{type(self).__name__}: no object of the {split_name} split belongs to the "
                f"{len(self.classes)} classes {self.classes[:10]}; its annotations name {names}. "
                "Set classes to match the data (VOCDetection: classes: found), or check the split"
            )
        (rank_zero_warn if noteworthy else rank_zero_info)(line)
        return samples

    def _split_labels(self, data: list[tuple[Path, DetectionAnnotation]]) -> np.ndarray:
        # No one label per image: the validation split is a seeded random one.
        return np.zeros(len(data), dtype=np.int64)

    def _make_dataset(
        self,
        data: list[tuple[Path, DetectionAnnotation]],
        positions: np.ndarray | None,
        train: bool,
    ) -> ImageFileDataset:
        if train:
            data = [(path, annotation.without_crowd()) for path, annotation in data]
        dataset = super()._make_dataset(data, positions, train)
        if self.masks:
            dataset.decode_masks = self._mask_decoder()
        return dataset
