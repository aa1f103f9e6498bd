"""PASCAL VOC from the VOCdevkit files: object detection (the classic benchmark of chapter 14's
detectors) and semantic segmentation (d2l section 14.9 reads VOC's segmentation half).

Layout, as the VOCtrainval tar unpacks::

    VOCdevkit/VOC2012/ImageSets/Main/train.txt          one image id per line (detection)
    VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt  one image id per line (segmentation)
    VOCdevkit/VOC2012/Annotations/<id>.xml              size, and an <object> per box
    VOCdevkit/VOC2012/SegmentationClass/<id>.png        palette PNG: class index per pixel
    VOCdevkit/VOC2012/JPEGImages/<id>.jpg

A ``bndbox`` holds 1-based, inclusive pixel indices: ``xmin = 1, xmax = 5`` covers the first
five columns. In this package's pixel-edge ``x1, y1, x2, y2`` that box is ``(0, 0, 5, ...)``:
``x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax, ymax``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, ClassVar

from ._files import find_bad_images, header_size
from ._paths import data_root
from .detection import AnnotationReport, DetectionAnnotation, DetectionDataModule
from .segmentation import SegmentationDataModule

__all__ = ["VOC_CLASSES", "VOCDetection", "VOCSegmentation", "read_voc_xml"]

# VOC's 20 classes in the devkit's order (VOCinit.m); label i names VOC_CLASSES[i - 1].
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
_FIX_ROOT = "point data.root at the VOCdevkit/VOC2012 folder (or VOC2007)"

# One parsed file: (height, width) or None when the XML lacks it, and its objects as
# (name, (xmin, ymin, xmax, ymax) as written, difficult).
VOCRecord = tuple[tuple[int, int] | None, list[tuple[str, tuple[float, ...], int]]]


def _number(node: ET.Element | None, tag: str) -> float:
    try:
        return float(node.findtext(tag))  # type: ignore[union-attr, arg-type]
    except (AttributeError, TypeError, ValueError):
        return float("nan")  # missing or not a number: the box counts as degenerate


def read_voc_xml(path: Path) -> VOCRecord:
    """The size and objects of a VOC annotation file, boxes as written (1-based, inclusive).

    Raises:
        ValueError: naming the file, when it is not well-formed XML.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise ValueError(
            f"VOC annotation {path} is not valid XML ({error}); the file is damaged: "
            "replace it from the VOC download, or remove its id from the split file"
        ) from error
    size_node = root.find("size")
    height, width = _number(size_node, "height"), _number(size_node, "width")
    size = (int(height), int(width)) if height > 0 and width > 0 else None
    objects = []
    for node in root.iter("object"):
        box = node.find("bndbox")
        corners = tuple(_number(box, tag) for tag in ("xmin", "ymin", "xmax", "ymax"))
        difficult = node.findtext("difficult", "0").strip()
        objects.append((node.findtext("name", "").strip(), corners, int(difficult == "1")))
    return size, objects


class _VOCLayout:
    """What both VOC datamodules check the same way: the root, the split files of
    ``ImageSets/<_image_sets>`` and the files they list."""

    _image_sets: ClassVar[str]  # "Main" (detection) or "Segmentation"
    root: Path
    splits: dict[str, str | None]

    def _check_layout(self) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"VOC root {self.root} is not a folder: {_FIX_ROOT}")
        for split_name in filter(None, self.splits.values()):
            if not self._split_file(split_name).is_file():
                raise FileNotFoundError(
                    f"VOC root {self.root} has no ImageSets/{self._image_sets}/{split_name}.txt: "
                    f"{_FIX_ROOT}"
                )

    def _split_file(self, split_name: str) -> Path:
        return self.root / "ImageSets" / self._image_sets / f"{split_name}.txt"

    def _empty_split_fix(self, split: str) -> str:
        return (
            f"{self._split_file(self.splits[split])} lists no image ids; write one id per "
            f"line (e.g. 2007_000032), or {_FIX_ROOT}"
        )

    def _read_ids(self, split_name: str) -> list[str]:
        lines = self._split_file(split_name).read_text(encoding="utf-8").splitlines()
        return [line.split()[0] for line in lines if line.strip()]

    def _require_files(self, split_name: str, ids: list[str], folder: Path, suffix: str) -> None:
        """Raise naming the first of the split's ids without a file ``folder/<id><suffix>``."""
        missing = [i for i in ids if not (folder / f"{i}{suffix}").is_file()]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise FileNotFoundError(
                f"VOC: {self._split_file(split_name)} lists {missing[0]}, but "
                f"{folder / (missing[0] + suffix)} does not exist{more}; is the download "
                f"complete? Else {_FIX_ROOT}"
            )


def _distinct_names(owner: str, classes: list[str]) -> list[str]:
    names = [str(class_name) for class_name in classes]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if not names or repeated:
        raise ValueError(
            f"{owner}: classes={names} must list distinct class names"
            + (f"; {repeated} repeat" if repeated else "")
        )
    return names


class VOCDetection(_VOCLayout, DetectionDataModule):
    """PASCAL VOC detection from a VOCdevkit folder (VOC2012, VOC2007).

    The samples of a split are the ids of ``ImageSets/Main/<split>.txt`` in file order
    (``image_id`` is the position), each with its ``Annotations/<id>.xml`` and
    ``JPEGImages/<id>.jpg``. Boxes become pixel-edge ``(xmin - 1, ymin - 1, xmax, ymax)``
    (see the module docstring). ``difficult`` objects are left out of training and kept
    with ``iscrowd = 1`` for evaluation, which VOC's own evaluation ignores likewise.
    Boxes are clamped to the image; boxes then empty and objects whose name is not among
    ``classes`` are dropped, counted in one line per split.

    Args:
        root: the ``VOCdevkit/VOC2012`` (or ``VOC2007``) folder; None:
            ``$ZOO_DATA/VOCdevkit/VOC2012`` (``data/...`` without ``ZOO_DATA``).
        train_split, val_split, test_split: split file names under ``ImageSets/Main``;
            ``val_split`` None holds a validation set out of the training split, and
            ``test_split`` None has no test set (``predict`` then runs on the validation
            set; VOC2012's test annotations are not public, VOC2007's are: ``"test"``).
        classes: ``"voc"``, the 20 VOC classes in the official order; ``"found"``, the
            sorted names in the annotation files of the configured splits (read in
            ``__init__``); or a list of names. Label ``i`` names ``classes[i - 1]``.
        **kwargs: image size, augmentation, normalisation, channels, bad files, batch
            size and splits; see :class:`~datamodules.DetectionDataModule`.
    """

    _image_sets = "Main"
    _crowd_name = ("difficult object", "difficult objects")
    _unknown_name = ("class", "classes")

    def __init__(
        self,
        root: str | None = None,
        train_split: str = "train",
        val_split: str | None = "val",
        test_split: str | None = None,
        classes: list[str] | str = "voc",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root) if root is not None else data_root("VOCdevkit", "VOC2012")
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self._check_layout()
        self._records: dict[str, list[tuple[str, VOCRecord]]] = {}
        self.classes = self._resolve_classes(classes)
        self.category_ids = list(range(1, len(self.classes) + 1))
        self._label_of = {name: label for label, name in enumerate(self.classes, 1)}

    def _resolve_classes(self, classes: list[str] | str) -> list[str]:
        name = type(self).__name__
        if isinstance(classes, str):
            if classes == "voc":
                return list(VOC_CLASSES)
            if classes == "found":
                for split_name in dict.fromkeys(filter(None, self.splits.values())):
                    self._records[split_name] = self._read_records(split_name)
                found = {
                    object_name
                    for records in self._records.values()
                    for _, (_, objects) in records
                    for object_name, _, _ in objects
                }
                if not found:
                    raise ValueError(
                        f"{name}: classes='found', but the annotation files of splits "
                        f"{[s for s in self.splits.values() if s]} name no objects"
                    )
                return sorted(found)
            raise ValueError(
                f"{name}: classes={classes!r} is neither 'voc' (the 20 VOC classes), 'found' "
                "(the names in the annotation files) nor a list of class names"
            )
        return _distinct_names(name, classes)

    def _read_records(self, split_name: str) -> list[tuple[str, VOCRecord]]:
        ids = self._read_ids(split_name)
        annotations = self.root / "Annotations"
        self._require_files(split_name, ids, annotations, ".xml")
        return [(i, read_voc_xml(annotations / f"{i}.xml")) for i in ids]

    def _parse_split(
        self, split_name: str, report: AnnotationReport
    ) -> list[tuple[Path, DetectionAnnotation]]:
        records = self._records.pop(split_name, None) or self._read_records(split_name)
        images = self.root / "JPEGImages"
        self._require_files(split_name, [i for i, _ in records], images, ".jpg")
        samples = []
        for position, (image_name, (size, objects)) in enumerate(records):
            path = images / f"{image_name}.jpg"
            if size is None:  # the XML lacks a usable <size>: the image's header has it
                # (an unreadable image is named by setup's file check; clamp nothing)
                size = header_size(path) or (2**31 - 1, 2**31 - 1)
            annotation = report.add_image(
                position,
                size,
                boxes=[(x1 - 1, y1 - 1, x2, y2) for _, (x1, y1, x2, y2), _ in objects],
                labels=[self._label_of.get(object_name) for object_name, _, _ in objects],
                unknown_keys=[object_name for object_name, _, _ in objects],
                iscrowd=[difficult for _, _, difficult in objects],
            )
            samples.append((path, annotation))
        return samples

    def _missing_test_split(self) -> str:
        return (
            "test_split is None; set data.test_split to a split file of ImageSets/Main with "
            "annotations (VOC2007's 'test'; predict falls back to the validation set)"
        )


class VOCSegmentation(_VOCLayout, SegmentationDataModule):
    """PASCAL VOC semantic segmentation from a VOCdevkit folder (d2l section 14.9).

    The samples of a split are the ids of ``ImageSets/Segmentation/<split>.txt`` in file
    order, each the image ``JPEGImages/<id>.jpg`` and its mask ``SegmentationClass/<id>.png``::

        VOC2012/ImageSets/Segmentation/{train,val}.txt   one image id per line
        VOC2012/JPEGImages/<id>.jpg
        VOC2012/SegmentationClass/<id>.png               class index per pixel, 255 = void

    A mask is a palette PNG whose pixel values are the class indices (0 background, 1-20
    the classes of :data:`VOC_CLASSES`) and 255 the "void" border VOC draws around each object
    and over ambiguous regions, which the loss and metrics ignore. Grey PNGs of indices and
    RGB masks in VOC's colours are read too. Missing or unreadable masks are reported like
    unreadable images (``skip_bad_files``).

    Args:
        root: the ``VOCdevkit/VOC2012`` folder; None: ``$ZOO_DATA/VOCdevkit/VOC2012``
            (``data/...`` without ``ZOO_DATA``).
        train_split, val_split, test_split: split file names under
            ``ImageSets/Segmentation``; ``val_split`` None holds a validation set out of the
            training split, and ``test_split`` None has no test set (``predict`` then runs on
            the validation set; VOC2012's test masks are not public).
        classes: ``"voc"``, the background and the 20 VOC classes in the official order (21
            classes); or a list of names, the background first, one per mask value.
        crop_size: ``(height, width)`` of the training crops; the course's 320 x 480.
        train_transforms: segmentation augmentation preset; the default crops and flips.
        **kwargs: small images, normalisation, channels, bad files, batch size and splits;
            see :class:`~datamodules.SegmentationDataModule`.
    """

    _image_sets = "Segmentation"

    def __init__(
        self,
        root: str | None = None,
        train_split: str = "train",
        val_split: str | None = "val",
        test_split: str | None = None,
        classes: list[str] | str = "voc",
        crop_size: int | tuple[int, int] | None = (320, 480),
        train_transforms: str = "crop_flip",
        **kwargs: Any,
    ) -> None:
        super().__init__(crop_size=crop_size, train_transforms=train_transforms, **kwargs)
        self.root = Path(root) if root is not None else data_root("VOCdevkit", "VOC2012")
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self._check_layout()
        name = type(self).__name__
        if isinstance(classes, str):
            if classes != "voc":
                raise ValueError(
                    f"{name}: classes={classes!r} is neither 'voc' (the background and the 20 "
                    "VOC classes) nor a list of class names, the background first"
                )
            classes = ["background", *VOC_CLASSES]
        self.classes = _distinct_names(name, classes)
        if not 2 <= len(self.classes) <= self.ignore_index:
            raise ValueError(
                f"{name}: classes={self.classes} must name the background and at least one "
                f"class, and at most {self.ignore_index} in all (255 marks ignored pixels)"
            )

    def _list_samples(self, split: str) -> list[tuple[Path, Path]] | None:
        split_name = self.splits.get(split)
        if split_name is None:
            return None
        ids = self._read_ids(split_name)
        images, masks = self.root / "JPEGImages", self.root / "SegmentationClass"
        self._require_files(split_name, ids, images, ".jpg")
        self._require_files(split_name, ids, masks, ".png")
        samples = [(images / f"{i}.jpg", masks / f"{i}.png") for i in ids]
        # The masks are checked as setup checks the images: a truncated PNG fails here, by name.
        bad = find_bad_images([mask for _, mask in samples])
        if bad and not self.skip_bad_files:
            named = "; ".join(f"{path} ({reason})" for path, reason in bad[:5])
            more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise ValueError(
                f"{type(self).__name__}: {len(bad)} unreadable mask file(s) in the {split_name} "
                f"split: {named}{more}. Replace them, or set skip_bad_files: true "
                "(--data.skip_bad_files true) to skip their images with a warning"
            )
        self._skipped.extend(bad)
        bad_masks = {path for path, _ in bad}
        samples = [sample for sample in samples if sample[1] not in bad_masks]
        self._check_mask_files(samples)
        return samples

    def _missing_test_split(self) -> str:
        return (
            "test_split is None; set data.test_split to a split file of "
            "ImageSets/Segmentation whose masks exist (predict falls back to the validation set)"
        )
