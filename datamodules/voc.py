"""PASCAL VOC object detection from the VOCdevkit files (d2l section 14.9 reads VOC's
segmentation half; its detection half is the classic benchmark of chapter 14's detectors).

Layout, as the VOCtrainval tar unpacks::

    VOCdevkit/VOC2012/ImageSets/Main/train.txt     one image id per line
    VOCdevkit/VOC2012/Annotations/<id>.xml          size, and an <object> per box
    VOCdevkit/VOC2012/JPEGImages/<id>.jpg

A ``bndbox`` holds 1-based, inclusive pixel indices: ``xmin = 1, xmax = 5`` covers the first
five columns. In this package's pixel-edge ``x1, y1, x2, y2`` that box is ``(0, 0, 5, ...)``:
``x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax, ymax``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from PIL import Image

from .detection import AnnotationReport, DetectionAnnotation, DetectionDataModule

__all__ = ["VOC_CLASSES", "VOCDetection", "read_voc_xml"]

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


def _header_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except Exception:  # an unreadable image: setup's file check reports it; clamp nothing
        return 2**31 - 1, 2**31 - 1


class VOCDetection(DetectionDataModule):
    """PASCAL VOC detection from a VOCdevkit folder (VOC2012, VOC2007).

    The samples of a split are the ids of ``ImageSets/Main/<split>.txt`` in file order
    (``image_id`` is the position), each with its ``Annotations/<id>.xml`` and
    ``JPEGImages/<id>.jpg``. Boxes become pixel-edge ``(xmin - 1, ymin - 1, xmax, ymax)``
    (see the module docstring). ``difficult`` objects are left out of training and kept
    with ``iscrowd = 1`` for evaluation, which VOC's own evaluation ignores likewise.
    Boxes are clamped to the image; boxes then empty and objects whose name is not among
    ``classes`` are dropped, counted in one line per split.

    Args:
        root: the ``VOCdevkit/VOC2012`` (or ``VOC2007``) folder.
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

    _crowd_name = ("difficult object", "difficult objects")
    _unknown_name = ("class", "classes")

    def __init__(
        self,
        root: str = "data/VOCdevkit/VOC2012",
        train_split: str = "train",
        val_split: str | None = "val",
        test_split: str | None = None,
        classes: list[str] | str = "voc",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        if not self.root.is_dir():
            raise FileNotFoundError(f"VOC root {self.root} is not a folder: {_FIX_ROOT}")
        for split_name in filter(None, self.splits.values()):
            if not self._split_file(split_name).is_file():
                raise FileNotFoundError(
                    f"VOC root {self.root} has no ImageSets/Main/{split_name}.txt: {_FIX_ROOT}"
                )
        self._records: dict[str, list[tuple[str, VOCRecord]]] = {}
        self.classes = self._resolve_classes(classes)
        self.category_ids = list(range(1, len(self.classes) + 1))
        self._label_of = {name: label for label, name in enumerate(self.classes, 1)}

    def _split_file(self, split_name: str) -> Path:
        return self.root / "ImageSets" / "Main" / f"{split_name}.txt"

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
        names = [str(class_name) for class_name in classes]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if not names or repeated:
            raise ValueError(
                f"{name}: classes={names} must list distinct class names"
                + (f"; {repeated} repeat" if repeated else "")
            )
        return names

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

    def _read_records(self, split_name: str) -> list[tuple[str, VOCRecord]]:
        lines = self._split_file(split_name).read_text(encoding="utf-8").splitlines()
        ids = [line.split()[0] for line in lines if line.strip()]
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
                size = _header_size(path)
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
