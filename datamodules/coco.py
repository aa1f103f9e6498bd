"""Microsoft COCO object detection, instance segmentation and semantic segmentation (d2l
section 14.6 uses a small detection set in the same spirit), read with pycocotools.

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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO as COCOApi

from ._coco_checks import check_entries, check_image_size, checked_segmentation, is_number
from ._paths import data_root
from .detection import AnnotationReport, DetectionAnnotation, DetectionDataModule
from .segmentation import IGNORE_INDEX, SegmentationDataModule

__all__ = [
    "COCO",
    "COCOSegmentation",
    "SemanticMaskRecipe",
    "decode_coco_masks",
    "decode_segmentations",
    "paint_semantic_mask",
    "read_coco_annotations",
]

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
    check_entries(dataset, path)
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
    masks = decode_segmentations(annotation.segmentations or (), *annotation.orig_size)
    if len(masks) == len(annotation.boxes):
        return masks
    return np.zeros((len(annotation.boxes), *annotation.orig_size), dtype=np.uint8)


def decode_segmentations(segmentations: Sequence[Any], height: int, width: int) -> np.ndarray:
    """COCO segmentations (polygons, RLE, uncompressed RLE) as ``[N, H, W]`` uint8 masks,
    decoded as ``pycocotools.coco.COCO.annToMask`` does; an empty polygon list is empty."""
    masks = np.zeros((len(segmentations), height, width), dtype=np.uint8)
    for row, segmentation in enumerate(segmentations):
        if isinstance(segmentation, list):  # polygons: the parts of one object, merged
            if segmentation:
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
                masks[row] = mask_utils.decode(rle)
        elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE (crowds)
            masks[row] = mask_utils.decode(mask_utils.frPyObjects(segmentation, height, width))
        else:  # compressed RLE
            masks[row] = mask_utils.decode(segmentation)
    return masks


class _COCOFiles:
    """What both COCO datamodules read the same way: the root, the training split's categories
    (read in ``__init__`` and kept for ``setup``), each split's JSON and its image folder."""

    root: Path
    splits: dict[str, str | None]
    _loaded: dict[str, COCOApi]

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
                "COCO dataset needs at least one ('categories': [{'id': 1, 'name': ...}])"
            )
        return {id_: str(category["name"]) for id_, category in categories.items()}

    def _json_path(self, split_name: str) -> Path:
        return self.root / "annotations" / f"instances_{split_name}.json"

    def _read_json(self, split_name: str) -> COCOApi:
        return read_coco_annotations(self._json_path(split_name))

    def _open_split(self, split_name: str) -> tuple[COCOApi, Path]:
        """The split's annotations and its image folder, checked to hold every image listed."""
        # The training JSON was read in __init__; setup uses it once, then frees it.
        coco = self._loaded.pop(split_name, None) or self._read_json(split_name)
        folder = self.root / split_name
        if not folder.is_dir():
            raise FileNotFoundError(
                f"COCO images folder {folder} does not exist (the images of "
                f"{self._json_path(split_name)}); {_FIX_ROOT}"
            )
        on_disk = set(os.listdir(folder))
        missing = [
            image["file_name"]
            for image in coco.imgs.values()
            if image["file_name"] not in on_disk and not (folder / image["file_name"]).is_file()
        ]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise FileNotFoundError(
                f"COCO: {self._json_path(split_name)} lists image {folder / missing[0]}, which "
                f"does not exist{more}; copy the split's images into {folder}, or remove their "
                "entries from the JSON"
            )
        return coco, folder

    def _empty_split_fix(self, split: str) -> str:
        return (
            f"{self._json_path(self.splits[split])} lists no images; add the split's images "
            "to its 'images' list, or choose another split"
        )

    def _missing_test_split(self) -> str:
        return (
            "test_split is None; set data.test_split to a split with annotations in "
            f"{self.root}/annotations/instances_<split>.json (predict falls back to the "
            "validation set)"
        )


class COCO(_COCOFiles, DetectionDataModule):
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
        root: the COCO folder (see the layout above); None: ``$ZOO_DATA/coco``, or
            ``data/coco`` in the working directory without ``ZOO_DATA``.
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
        root: str | None = None,
        train_split: str = "train2017",
        val_split: str | None = "val2017",
        test_split: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root) if root is not None else data_root("coco")
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self._loaded: dict[str, COCOApi] = {}
        categories = self._categories()
        self.category_ids = sorted(categories)
        self.classes = [categories[id_] for id_ in self.category_ids]
        self._label_of = {id_: label for label, id_ in enumerate(self.category_ids, 1)}

    def _parse_split(
        self, split_name: str, report: AnnotationReport
    ) -> list[tuple[Path, DetectionAnnotation]]:
        coco, folder = self._open_split(split_name)
        json_path = self._json_path(split_name)
        polygons_dropped = 0
        samples = []
        for image_id in sorted(coco.imgs):
            image = coco.imgs[image_id]
            size = (int(image["height"]), int(image["width"]))
            annotations = coco.imgToAnns.get(image_id, [])
            segmentations = None
            if self.masks:
                check_image_size(folder / image["file_name"], size, image_id, json_path)
                segmentations = []
                for annotation in annotations:
                    segmentation = checked_segmentation(annotation, json_path, _MASKS_FIX, size)
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
        orphans = sum(len(coco.imgToAnns[i]) for i in set(coco.imgToAnns) - set(coco.imgs))
        if orphans:
            report.other["ignored annotations of image ids not in 'images'"] = orphans
        return samples

    def _mask_decoder(self) -> Callable[[DetectionAnnotation], np.ndarray]:
        return decode_coco_masks


_MASKS_FIX = (
    "masks=True needs one for every object: use an instances file with masks, or set masks: false"
)


def _xyxy(box: Any) -> list[float]:
    # A missing or malformed bbox (not four numbers: too short, strings, null) becomes NaN,
    # which the report drops and counts as a box without numeric coordinates.
    if not isinstance(box, list | tuple) or len(box) != 4 or not all(map(is_number, box)):
        return [float("nan")] * 4
    x, y, width, height = (float(value) for value in box)
    return [x, y, x + width, y + height]


# -- semantic segmentation: one class per pixel, painted from the instances -------------------


@dataclass(frozen=True)
class SemanticMaskRecipe:
    """What paints one image's semantic mask: its instances, as plain data (cheap to send to
    DataLoader workers; the mask itself is painted there, never kept for a whole split).

    Attributes:
        source: which image of which JSON file, for error messages (also the ``str``).
        size: ``(height, width)`` of the image as the JSON gives it.
        segmentations: each instance's COCO segmentation (polygons, RLE, uncompressed RLE).
        classes: ``[N]`` uint8, the class index ``1..K`` of each instance.
        iscrowd: ``[N]`` bool, True for crowd regions.
    """

    source: str
    size: tuple[int, int]
    segmentations: tuple[Any, ...]
    classes: np.ndarray
    iscrowd: np.ndarray

    def __str__(self) -> str:
        return self.source


def paint_semantic_mask(recipe: SemanticMaskRecipe) -> np.ndarray:
    """The ``[H, W]`` uint8 class-index mask of a :class:`SemanticMaskRecipe`.

    Each pixel takes the class of the instances covering it, 0 where none does. Pixels that
    instances of two different classes claim, and crowd regions, are 255 (ignored): the
    annotation gives no single right class there (a crowd's pixels mix its objects with the
    background between them), so neither loss nor metrics should count them.
    """
    height, width = recipe.size
    semantic = np.zeros((height, width), dtype=np.uint8)
    ignored = np.zeros((height, width), dtype=bool)
    masks = decode_segmentations(recipe.segmentations, height, width).astype(bool)
    for mask, class_index, crowd in zip(masks, recipe.classes, recipe.iscrowd, strict=True):
        if crowd:
            ignored |= mask
            continue
        ignored |= mask & (semantic != 0) & (semantic != class_index)
        semantic[mask] = class_index
    semantic[ignored] = IGNORE_INDEX
    return semantic


_PAINT_FIX = (
    "COCOSegmentation paints every object's mask: use an instances file with masks, not a "
    "boxes-only one"
)


class COCOSegmentation(_COCOFiles, SegmentationDataModule):
    """COCO as semantic segmentation: one class per pixel, painted from the instance masks.

    The files are :class:`COCO`'s (see the layout above); every image of a split's JSON is a
    sample, in the order of its id. Each image's mask is painted in the DataLoader workers
    from its instances' polygons or RLE, decoded with pycocotools as ``annToMask`` does, as
    torchvision's segmentation reference trains on "COCO with VOC labels": a pixel takes the
    class of the instance covering it; pixels covered by instances of two different classes,
    and crowd regions (``iscrowd: 1``), are 255, ignored, because the annotation names no
    single class for them; instances of categories not kept are background. The training
    split's JSON is read in ``__init__`` for the categories, so ``classes`` is known before
    ``setup``. One line per split counts what was painted.

    Args:
        root: the COCO folder; None: ``$ZOO_DATA/coco`` (``data/coco`` without it).
        train_split: name of the training split, e.g. ``"train2017"``.
        val_split: name of the validation split, or None to hold one out of the training
            split.
        test_split: name of a split with annotations to test on, or None (``predict`` then
            runs on the validation set).
        categories: the COCO category ids to keep, in the order of their class index
            ``1..K`` (e.g. the 20 of VOC's classes, as torchvision's reference does); None
            keeps every category of the training JSON, sorted by id.
        crop_size: ``(height, width)`` of the training crops.
        train_transforms: segmentation augmentation preset.
        **kwargs: small images, normalisation, channels, bad files, batch size and splits;
            see :class:`~datamodules.SegmentationDataModule`.

    Attributes:
        category_ids: the COCO category id of each class index ``1..K``.
    """

    def __init__(
        self,
        root: str | None = None,
        train_split: str = "train2017",
        val_split: str | None = "val2017",
        test_split: str | None = None,
        categories: list[int] | None = None,
        crop_size: int | tuple[int, int] | None = (320, 480),
        train_transforms: str = "crop_flip",
        **kwargs: Any,
    ) -> None:
        super().__init__(crop_size=crop_size, train_transforms=train_transforms, **kwargs)
        self.root = Path(root) if root is not None else data_root("coco")
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self._loaded: dict[str, COCOApi] = {}
        self._names = self._categories()
        self.category_ids = self._kept_categories(categories)
        self.classes = ["background", *(self._names[id_] for id_ in self.category_ids)]
        self._class_of = {id_: index for index, id_ in enumerate(self.category_ids, 1)}

    def _kept_categories(self, categories: list[int] | None) -> list[int]:
        ids = sorted(self._names) if categories is None else [int(id_) for id_ in categories]
        unknown = [id_ for id_ in ids if id_ not in self._names]
        repeated = sorted({id_ for id_ in ids if ids.count(id_) > 1})
        if unknown or repeated or not 1 <= len(ids) < self.ignore_index:
            available = ", ".join(f"{id_} ({name})" for id_, name in sorted(self._names.items()))
            raise ValueError(
                f"{type(self).__name__}: categories={ids} must be 1 to 254 distinct category "
                f"ids of {self._json_path(self.splits['train'])}"
                + (f"; {unknown} are not among them" if unknown else "")
                + (f"; {repeated} repeat" if repeated else "")
                + f". Its categories: {available}"
            )
        return ids

    def _mask_reader(self) -> Callable[[SemanticMaskRecipe], np.ndarray]:
        return paint_semantic_mask

    def _list_samples(self, split: str) -> list[tuple[Path, SemanticMaskRecipe]] | None:
        split_name = self.splits.get(split)
        if split_name is None:
            return None
        coco, folder = self._open_split(split_name)
        json_path = self._json_path(split_name)
        counts: Counter[str] = Counter()
        unknown: set[int] = set()
        samples = []
        for image_id in sorted(coco.imgs):
            image = coco.imgs[image_id]
            size = (image["height"], image["width"])
            check_image_size(folder / image["file_name"], size, image_id, json_path)
            segmentations, classes, crowd = [], [], []
            for annotation in coco.imgToAnns.get(image_id, []):
                class_index = self._class_of.get(annotation["category_id"])
                if class_index is None:
                    counts["background"] += 1
                    if annotation["category_id"] not in self._names:
                        unknown.add(annotation["category_id"])
                    continue
                segmentation = checked_segmentation(annotation, json_path, _PAINT_FIX, size)
                if isinstance(segmentation, list):
                    valid = _valid_polygons(segmentation)
                    counts["short polygons"] += len(segmentation) - len(valid)
                    segmentation = valid
                segmentations.append(segmentation)
                classes.append(class_index)
                crowd.append(bool(annotation.get("iscrowd", 0)))
            recipe = SemanticMaskRecipe(
                source=f"of image {image_id} in {json_path}",
                size=size,
                segmentations=tuple(segmentations),
                classes=np.array(classes, dtype=np.uint8),
                iscrowd=np.array(crowd, dtype=bool),
            )
            counts["painted"] += len(classes)
            counts["crowd"] += sum(crowd)
            samples.append((folder / image["file_name"], recipe))
        self._report(split_name, len(samples), counts, unknown)
        return samples

    def _report(self, split_name: str, images: int, counts: Counter[str], unknown: set) -> None:
        parts = [
            f"{type(self).__name__} {split_name}: {images} images, {counts['painted']} objects "
            f"painted ({counts['crowd']} crowd regions as 255)"
        ]
        if counts["background"]:
            parts.append(
                f"{counts['background']} objects of other categories left as background"
                + (f" (unknown category ids {sorted(unknown)})" if unknown else "")
            )
        if counts["short polygons"]:
            parts.append(f"ignored polygons with fewer than 3 points ({counts['short polygons']})")
        (rank_zero_warn if unknown or counts["short polygons"] else rank_zero_info)(
            "; ".join(parts)
        )
