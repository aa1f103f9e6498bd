"""Microsoft COCO object detection and instance segmentation (d2l section 14.6 uses a
small detection set in the same spirit), read with pycocotools.

Layout, as the COCO downloads unpack::

    root/train2017/000000000009.jpg ...
    root/val2017/000000000139.jpg ...
    root/annotations/instances_train2017.json
    root/annotations/instances_val2017.json

Boxes are COCO's ``[x, y, width, height]`` in pixel-edge coordinates, turned into
``x1, y1, x2, y2 = x, y, x + width, y + height``. Category ids (1..90 with gaps in COCO) are
mapped to contiguous labels ``1..K`` in the order of the sorted ids.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO as COCOApi

from .detection import AnnotationReport, DetectionAnnotation, DetectionDataModule

__all__ = ["COCO", "decode_coco_masks", "read_coco_annotations"]

_FIX_ROOT = (
    "point data.root at the COCO folder, laid out as root/<split>/<file_name> for the images "
    "and root/annotations/instances_<split>.json for their annotations"
)


def read_coco_annotations(path: Path) -> COCOApi:
    """A ``pycocotools.coco.COCO`` of the annotation file, with errors naming the file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is not JSON, or not a COCO annotation file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {path} does not exist; {_FIX_ROOT}")
    try:
        with open(path, encoding="utf-8") as file:
            dataset = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"COCO annotation file {path} is not valid JSON ({error}); the file is damaged or "
            "incomplete: download or write it again"
        ) from error
    if not isinstance(dataset, dict) or not isinstance(dataset.get("images"), list):
        raise ValueError(
            f"COCO annotation file {path} has no 'images' list; expected a COCO instances "
            "file with 'images', 'annotations' and 'categories'"
        )
    coco = COCOApi()  # without a file name: pycocotools would read (and print) itself
    coco.dataset = dataset
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # "creating index... index created!"
            coco.createIndex()
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"COCO annotation file {path}: an entry lacks a field pycocotools needs "
            f"({type(error).__name__}: {error}); images need 'id', annotations 'id', "
            "'image_id' and 'category_id', categories 'id' and 'name'"
        ) from error
    return coco


def _valid_polygons(segmentation: list) -> list:
    # A polygon needs three points (six numbers). pycocotools reads a list whose first
    # polygon has four numbers as boxes, and fails on fewer.
    return [polygon for polygon in segmentation if len(polygon) >= 6 and len(polygon) % 2 == 0]


def decode_coco_masks(annotation: DetectionAnnotation) -> np.ndarray:
    """The instance masks of an annotation, ``[N, H, W]`` uint8 at the file's size, decoded
    as ``pycocotools.coco.COCO.annToMask`` does (polygons, RLE, uncompressed RLE)."""
    height, width = annotation.orig_size
    masks = np.zeros((len(annotation.boxes), height, width), dtype=np.uint8)
    for row, segmentation in enumerate(annotation.segmentations or ()):
        if isinstance(segmentation, list):  # polygons: the parts of one object, merged
            if segmentation:
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
                masks[row] = mask_utils.decode(rle)
        elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE (crowds)
            masks[row] = mask_utils.decode(mask_utils.frPyObjects(segmentation, height, width))
        else:  # compressed RLE
            masks[row] = mask_utils.decode(segmentation)
    return masks


class COCO(DetectionDataModule):
    """COCO detection (boxes, and instance masks with ``masks=True``) from the official files.

    Reads ``root/annotations/instances_<split>.json`` with pycocotools and the images at
    ``root/<split>/<file_name>``. Every image of the JSON is a sample, in the order of its
    id (as torchvision's ``CocoDetection``), including those without objects. Labels
    ``1..K`` follow the sorted category ids of the training split's JSON: ``classes`` are
    their names and ``category_ids`` the ids, so predictions map back to COCO results.

    Crowd annotations (``iscrowd: 1``) are left out of training and kept with
    ``iscrowd = 1`` for evaluation. Boxes are clamped to the image; boxes then empty and
    annotations of unknown category ids are dropped, counted in one line per split.
    ``masks=True`` decodes each object's polygons or RLE with pycocotools at the file's
    size, in the DataLoader workers.

    The training split's JSON is read in ``__init__`` for the categories (and kept for
    ``setup``), so ``num_classes`` and ``classes`` are known before ``setup``.

    Args:
        root: the COCO folder (see the layout above).
        train_split: name of the training split, e.g. ``"train2017"``.
        val_split: name of the validation split, or None to hold one out of the training
            split (``val_fraction`` or K-fold).
        test_split: name of a split with annotations to test on, or None; without one,
            ``predict`` runs on the validation set (test-dev has no annotations).
        **kwargs: image size, augmentation, masks, normalisation, channels, bad files,
            batch size and splits; see :class:`~datamodules.DetectionDataModule`.
    """

    _has_masks = True

    def __init__(
        self,
        root: str = "data/coco",
        train_split: str = "train2017",
        val_split: str | None = "val2017",
        test_split: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self._loaded: dict[str, COCOApi] = {}
        categories = self._categories()
        self.category_ids = sorted(categories)
        self.classes = [categories[id_] for id_ in self.category_ids]
        self._label_of = {id_: label for label, id_ in enumerate(self.category_ids, 1)}

    def _categories(self) -> dict[int, str]:
        """Category id -> name, from the training split's JSON (kept for ``setup``)."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"COCO root {self.root} is not a folder; {_FIX_ROOT}")
        train_split = self.splits["train"]
        self._loaded[train_split] = self._read_json(train_split)
        categories = self._loaded[train_split].cats
        if not categories:
            raise ValueError(
                f"COCO annotation file {self._json_path(train_split)} has no categories; a "
                "detection dataset needs at least one ('categories': [{'id': 1, 'name': ...}])"
            )
        return {id_: str(category["name"]) for id_, category in categories.items()}

    def _json_path(self, split_name: str) -> Path:
        return self.root / "annotations" / f"instances_{split_name}.json"

    def _read_json(self, split_name: str) -> COCOApi:
        return read_coco_annotations(self._json_path(split_name))

    def _parse_split(
        self, split_name: str, report: AnnotationReport
    ) -> list[tuple[Path, DetectionAnnotation]]:
        # The training JSON was read in __init__; setup uses it once, then frees it.
        coco = self._loaded.pop(split_name, None) or self._read_json(split_name)
        folder = self.root / split_name
        if not folder.is_dir():
            raise FileNotFoundError(
                f"COCO images folder {folder} does not exist (the images of "
                f"{self._json_path(split_name)}); {_FIX_ROOT}"
            )
        on_disk = set(os.listdir(folder))
        json_path = self._json_path(split_name)
        missing = [
            image["file_name"]
            for image in coco.imgs.values()
            if image["file_name"] not in on_disk and not (folder / image["file_name"]).is_file()
        ]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise FileNotFoundError(
                f"COCO: {json_path} lists image {folder / missing[0]}, which does not "
                f"exist{more}; copy the split's images into {folder}, or remove their "
                "entries from the JSON"
            )
        polygons_dropped = 0
        samples = []
        for image_id in sorted(coco.imgs):
            image = coco.imgs[image_id]
            size = (int(image["height"]), int(image["width"]))
            annotations = coco.imgToAnns.get(image_id, [])
            segmentations = None
            if self.masks:
                segmentations = []
                for annotation in annotations:
                    segmentation = self._segmentation(annotation, json_path)
                    if isinstance(segmentation, list):
                        valid = _valid_polygons(segmentation)
                        polygons_dropped += len(segmentation) - len(valid)
                        segmentation = valid
                    segmentations.append(segmentation)
            record = report.add_image(
                image_id,
                size,
                boxes=[_xyxy(annotation.get("bbox")) for annotation in annotations],
                labels=[self._label_of.get(a["category_id"]) for a in annotations],
                unknown_keys=[annotation["category_id"] for annotation in annotations],
                iscrowd=[int(annotation.get("iscrowd", 0)) for annotation in annotations],
                segmentations=segmentations,
            )
            samples.append((folder / image["file_name"], record))
        if polygons_dropped:
            report.other["ignored polygons with fewer than 3 points"] = polygons_dropped
        return samples

    @staticmethod
    def _segmentation(annotation: dict, json_path: Path) -> Any:
        segmentation = annotation.get("segmentation")
        if not isinstance(segmentation, list | dict) or (
            isinstance(segmentation, dict) and not {"counts", "size"} <= segmentation.keys()
        ):
            raise ValueError(
                f"COCO: annotation {annotation.get('id')} in {json_path} has no instance "
                "mask ('segmentation': polygons or RLE); masks=True needs one for every "
                "object: use an instances file with masks, or set masks: false"
            )
        return segmentation

    def _mask_decoder(self) -> Callable[[DetectionAnnotation], np.ndarray]:
        return decode_coco_masks

    def _missing_test_split(self) -> str:
        return (
            "test_split is None; set data.test_split to a split with annotations in "
            f"{self.root}/annotations/instances_<split>.json (predict falls back to the "
            "validation set)"
        )


def _xyxy(box: Any) -> list[float]:
    # A missing or malformed bbox becomes NaN, which the report counts as degenerate.
    try:
        x, y, width, height = (float(value) for value in box)
    except (TypeError, ValueError):
        return [float("nan")] * 4
    return [x, y, x + width, y + height]
