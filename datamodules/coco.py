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
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO as COCOApi

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
    _check_entries(dataset, path)
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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_polygon(polygon: Any) -> bool:
    # sum() fails on anything but numbers, in C: COCO's 860,000 training polygons are checked
    # in about a second, where a Python test of every coordinate would take forty.
    if not isinstance(polygon, list):
        return False
    try:
        sum(polygon)
    except TypeError:
        return False
    return True


def _repeated(ids: list[Any]) -> list[Any]:
    counts = Counter(ids)
    return sorted((id_ for id_, count in counts.items() if count > 1), key=str)


def _check_entries(dataset: dict, path: Path) -> None:
    """Refuse, naming the entry, what pycocotools would silently merge or what would fail
    later: images without a usable id, file name or size; image or category ids given
    twice (pycocotools keeps the last, so an image or a class would vanish); crowd flags
    other than 0 and 1."""
    for position, image in enumerate(dataset["images"]):
        fields = image if isinstance(image, dict) else {}
        bad = [
            field
            for field, ok in (
                ("id", _is_count(fields.get("id"))),
                ("file_name", isinstance(fields.get("file_name"), str) and fields["file_name"]),
                ("height", _is_count(fields.get("height")) and fields["height"] > 0),
                ("width", _is_count(fields.get("width")) and fields["width"] > 0),
            )
            if not ok
        ]
        if bad:
            raise ValueError(
                f"COCO annotation file {path}: images[{position}] ({str(image)[:80]}) lacks a "
                f"valid {', '.join(bad)}; every image needs an integer 'id', a 'file_name' and "
                "positive integer 'height' and 'width': fix the entry or remove it"
            )
    repeated = _repeated([image["id"] for image in dataset["images"]])
    if repeated:
        raise ValueError(
            f"COCO annotation file {path}: image ids {repeated[:5]} appear more than once in "
            "'images' (pycocotools would keep only the last); give every image its own id"
        )
    categories = dataset.get("categories") or []
    if isinstance(categories, list):
        for position, category in enumerate(categories):
            fields = category if isinstance(category, dict) else {}
            if not _is_count(fields.get("id")) or not isinstance(fields.get("name"), str):
                raise ValueError(
                    f"COCO annotation file {path}: categories[{position}] ({str(category)[:80]}) "
                    "needs an integer 'id' and a 'name' string: fix the entry"
                )
        repeated = _repeated([category["id"] for category in categories])
        if repeated:
            raise ValueError(
                f"COCO annotation file {path}: category ids {repeated[:5]} appear more than "
                "once in 'categories'; give every category its own id"
            )
    for annotation in dataset.get("annotations") or []:
        crowd = annotation.get("iscrowd", 0) if isinstance(annotation, dict) else 0
        if crowd not in (0, 1):  # True and False compare equal to 1 and 0
            raise ValueError(
                f"COCO annotation file {path}: annotation {annotation.get('id')} has "
                f"iscrowd={crowd!r}; it must be 0 (an object) or 1 (a crowd region)"
            )


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
                _check_image_size(folder / image["file_name"], size, image_id, json_path)
                segmentations = []
                for annotation in annotations:
                    segmentation = _checked_segmentation(annotation, json_path, _MASKS_FIX, size)
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


def _checked_segmentation(
    annotation: dict, json_path: Path, fix: str, size: tuple[int, int]
) -> Any:
    """The annotation's ``segmentation`` (polygons or RLE), else a ``ValueError`` ending in ``fix``.

    Checked here, in ``setup``, so that pycocotools never fails on it in a DataLoader worker:
    polygons must be lists of numbers, an RLE must have the image's ``size`` (``(height,
    width)`` in the JSON) and counts pycocotools can read.
    """
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, list) and all(map(_is_polygon, segmentation)):
        return segmentation  # the common case, kept cheap: COCO has 860,000 of them
    where = f"COCO: annotation {annotation.get('id')} in {json_path}"
    if not isinstance(segmentation, list | dict) or (
        isinstance(segmentation, dict) and not {"counts", "size"} <= segmentation.keys()
    ):
        raise ValueError(f"{where} has no instance mask ('segmentation': polygons or RLE); {fix}")
    if isinstance(segmentation, list):
        raise ValueError(
            f"{where}: its segmentation {str(segmentation)[:60]} is not a list of polygons, "
            "each a list of numbers [x1, y1, x2, y2, ...]; fix the annotation or remove it"
        )
    problem = _rle_problem(segmentation, size)
    if problem:
        raise ValueError(
            f"{where}: its RLE segmentation {problem} (height x width, from the image's entry); "
            "fix the annotation or the image's height and width"
        )
    return segmentation


def _rle_problem(rle: dict, size: tuple[int, int]) -> str | None:
    """What keeps pycocotools from decoding ``rle`` at ``size``, None if nothing."""
    height, width = size
    counts = rle["counts"]
    if list(rle["size"]) != [height, width]:
        return f"has size {rle['size']}, but its image is {height} x {width}"
    if isinstance(counts, list):
        valid = all(_is_count(c) and c >= 0 for c in counts) and sum(counts) == height * width
        return None if valid else "has counts that are not run lengths summing to height x width"
    if isinstance(counts, str | bytes):
        runs = _compressed_runs(counts)
        valid = runs is not None and min(runs, default=0) >= 0 and sum(runs) == height * width
        return None if valid else "has counts that do not decode to height x width pixels"
    return f"has counts of type {type(counts).__name__}, neither a list nor a string"


def _compressed_runs(counts: str | bytes) -> list[int] | None:
    """The run lengths of a compressed RLE string, None if it is not one. The decoding of
    pycocotools' ``rleFrString``, which reads past a malformed string without noticing."""
    text = counts.encode("ascii", "replace") if isinstance(counts, str) else counts
    runs: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position == len(text):
                return None  # a run cut off mid-way
            code = text[position] - 48
            if not 0 <= code < 64:
                return None  # a character outside the 64 the format uses
            value |= (code & 0x1F) << 5 * shift
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and code & 0x10:
                value |= -1 << 5 * shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _check_image_size(path: Path, size: tuple[int, int], image_id: int, json_path: Path) -> None:
    """Masks are decoded at the JSON's size: refuse, in ``setup``, an image file of another
    size (boxes alone are clamped to the file instead, so only masks need this)."""
    try:
        with Image.open(path) as image:  # the header alone: no decoding
            file_size = (image.height, image.width)
    except Exception:  # an unreadable image: setup's file check names it
        return
    if file_size != size:
        raise ValueError(
            f"COCO: image {image_id} of {json_path} has height {size[0]} and width {size[1]}, "
            f"but the file {path} is {file_size[0]} x {file_size[1]}; its masks cannot be "
            "aligned with it: fix the height and width in the JSON"
        )


def _xyxy(box: Any) -> list[float]:
    # A missing or malformed bbox (not four numbers: too short, strings, null) becomes NaN,
    # which the report drops and counts as a box without numeric coordinates.
    if not isinstance(box, list | tuple) or len(box) != 4 or not all(map(_is_number, box)):
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
        root: the COCO folder.
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
        root: str = "data/coco",
        train_split: str = "train2017",
        val_split: str | None = "val2017",
        test_split: str | None = None,
        categories: list[int] | None = None,
        crop_size: int | tuple[int, int] | None = (320, 480),
        train_transforms: str = "crop_flip",
        **kwargs: Any,
    ) -> None:
        super().__init__(crop_size=crop_size, train_transforms=train_transforms, **kwargs)
        self.root = Path(root)
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
            _check_image_size(folder / image["file_name"], size, image_id, json_path)
            segmentations, classes, crowd = [], [], []
            for annotation in coco.imgToAnns.get(image_id, []):
                class_index = self._class_of.get(annotation["category_id"])
                if class_index is None:
                    counts["background"] += 1
                    if annotation["category_id"] not in self._names:
                        unknown.add(annotation["category_id"])
                    continue
                segmentation = _checked_segmentation(annotation, json_path, _PAINT_FIX, size)
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
