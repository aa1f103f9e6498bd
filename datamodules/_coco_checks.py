"""What a COCO annotation file must hold before pycocotools reads it, checked in ``setup``:
entries pycocotools would silently merge (repeated image or category ids) or fail on later, in a
DataLoader worker mid-epoch (images without an id, file name or size; crowd flags other than 0/1;
segmentations that are neither polygons of numbers nor an RLE of the image's size; a JSON size
that disagrees with the image file when masks are decoded). Each refusal names the entry, the
file and the fix.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ._files import header_size

__all__ = ["check_entries", "check_image_size", "checked_segmentation", "is_number"]


def is_number(value: Any) -> bool:
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


def check_entries(dataset: dict, path: Path) -> None:
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


def checked_segmentation(annotation: dict, json_path: Path, fix: str, size: tuple[int, int]) -> Any:
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


def check_image_size(path: Path, size: tuple[int, int], image_id: int, json_path: Path) -> None:
    """Masks are decoded at the JSON's size: refuse, in ``setup``, an image file of another
    size (boxes alone are clamped to the file instead, so only masks need this)."""
    file_size = header_size(path)
    if file_size is not None and file_size != size:
        raise ValueError(
            f"COCO: image {image_id} of {json_path} has height {size[0]} and width {size[1]}, "
            f"but the file {path} is {file_size[0]} x {file_size[1]}; its masks cannot be "
            "aligned with it: fix the height and width in the JSON"
        )
