"""Tiny detection trees in the real formats, shared by the tests: a COCO folder (JPEG images,
``instances_<split>.json`` with polygon, RLE and crowd annotations) and a VOCdevkit folder
(JPEG images, XML annotations, split files), both drawn from the real photos of
``tests._image_files`` and both holding the usual kinds of bad annotations.

Every clean box is a whole-pixel rectangle whose mask fills it exactly, so the tests can
check that masks move with their boxes.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from tests._image_files import photos, save_image

# (height, width) of the images of a split, in order: sizes vary, two repeat.
SIZES = [(40, 48), (36, 52), (48, 40), (32, 32), (44, 56), (40, 48), (30, 44)]
EMPTY_IMAGE = 3  # the position of the image without objects
# COCO's category ids have gaps and are listed unsorted; labels follow the sorted ids.
COCO_CATEGORIES = [{"id": 7, "name": "coffee"}, {"id": 1, "name": "astronaut"}, {"id": 3, "name": "cat"}]  # fmt: skip
COCO_CLASSES = ["astronaut", "cat", "coffee"]
VOC_NAMES = ["cat", "dog", "person", "car"]  # all among VOC's 20 classes
# Builder arguments that keep the generic tests cheap on a CPU (a small backbone, a small internal
# size); the registered defaults are covered by the families' parity tests against torchvision.
# ssd300_vgg16 runs only at its 300 x 300 and takes its defaults.
FAST: dict[str, dict] = {
    "ssd300_resnet50": {"backbone": "resnet18", "size": (96, 96)},
    "fasterrcnn_resnet50_fpn": {"backbone": "resnet18", "min_size": 96, "max_size": 128},
    "fasterrcnn_resnet50": {"backbone": "resnet18", "min_size": 96, "max_size": 128},
    "maskrcnn_resnet50_fpn": {"backbone": "resnet18", "min_size": 96, "max_size": 128},
    "yolo_resnet18": {"neck_channels": 32, "head_depth": 1},
}


def _image(position: int, size: tuple[int, int]) -> Image.Image:
    photo = photos()[position % len(photos())]
    return Image.fromarray(photo).resize((size[1], size[0]))


def _clean_boxes(rng: np.random.Generator, size: tuple[int, int], count: int) -> list[list[int]]:
    """Whole-pixel ``[x1, y1, x2, y2]`` boxes inside the image, at least 3 pixels a side."""
    height, width = size
    boxes = []
    for _ in range(count):
        x1, y1 = int(rng.integers(0, width - 6)), int(rng.integers(0, height - 6))
        x2, y2 = int(rng.integers(x1 + 3, width + 1)), int(rng.integers(y1 + 3, height + 1))
        boxes.append([x1, y1, x2, y2])
    return boxes


def rectangle_mask(size: tuple[int, int], box: list[float]) -> np.ndarray:
    mask = np.zeros(size, dtype=np.uint8)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    mask[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = 1
    return mask


def coco_segmentation(kind: str, size: tuple[int, int], box: list[float]) -> list | dict:
    x1, y1, x2, y2 = box
    if kind == "polygon":  # two parts, as COCO writes an occluded object
        middle = (x1 + x2) / 2
        return [[x1, y1, middle, y1, middle, y2, x1, y2], [middle, y1, x2, y1, x2, y2, middle, y2]]
    mask = np.asfortranarray(rectangle_mask(size, box))
    rle = mask_utils.encode(mask)
    if kind == "rle":
        return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    # Uncompressed RLE, as COCO stores crowds: run lengths over the column-major pixels.
    # The first run counts zeros, so a mask starting with a one starts with a 0-length run.
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat])))
    bounds = np.concatenate([[0], changes, [flat.size]])
    return {"size": list(size), "counts": np.diff(bounds).tolist()}


def write_coco(root: Path, split: str, seed: int = 0, bad: bool = True) -> Path:
    """``root/<split>/*.jpg`` and ``root/annotations/instances_<split>.json``.

    Clean objects (2-3 per image, masks alternately polygons and RLE) plus one crowd region
    (uncompressed RLE). With ``bad``, image 0 also has a zero-width box, a negative-width
    box, a box partly outside the image (clamped), a box wholly outside it and a box of
    unknown category 99. The image at ``EMPTY_IMAGE`` has no objects. Image ids are not in
    order, and neither are the categories.
    """
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    category_ids = [c["id"] for c in COCO_CATEGORIES]
    for position, size in enumerate(SIZES):
        height, width = size
        image_id = 900 - 37 * position  # ids in the JSON in decreasing order
        name = f"{image_id:012d}.jpg"
        save_image(root / split / name, _image(position, size), quality=95)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        objects: list[tuple[list[float], int, int, str]] = []  # xyxy, category, crowd, kind
        if position != EMPTY_IMAGE:
            for k, box in enumerate(_clean_boxes(rng, size, 2 + position % 2)):
                kind = "polygon" if (position + k) % 2 == 0 else "rle"
                objects.append((box, category_ids[(position + k) % 3], 0, kind))
        if position == 1:
            objects.append(([2, 3, 14, 12], 1, 1, "uncompressed"))
        if bad and position == 0:
            objects += [
                ([5, 5, 5, 15], 3, 0, "polygon"),  # zero width
                ([20, 5, 15, 15], 3, 0, "polygon"),  # negative width
                ([width - 5, 2, width + 5, 10], 7, 0, "polygon"),  # partly outside: clamped
                ([width + 3, 2, width + 8, 7], 7, 0, "polygon"),  # wholly outside
                ([2, 2, 10, 10], 99, 0, "polygon"),  # unknown category
            ]
        for box, category, crowd, kind in objects:
            x1, y1, x2, y2 = box
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float((x2 - x1) * (y2 - y1)),
                "iscrowd": crowd, "segmentation": coco_segmentation(kind, size, box),
            })  # fmt: skip
    dataset = {"images": images, "annotations": annotations, "categories": COCO_CATEGORIES}
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataset))
    return path


def _voc_xml(path: Path, name: str, size: tuple[int, int] | None, objects: list) -> None:
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "folder").text = "VOC2012"
    ET.SubElement(annotation, "filename").text = f"{name}.jpg"
    if size is not None:
        size_node = ET.SubElement(annotation, "size")
        for tag, value in (("width", size[1]), ("height", size[0]), ("depth", 3)):
            ET.SubElement(size_node, tag).text = str(value)
    for object_name, (xmin, ymin, xmax, ymax), difficult in objects:
        node = ET.SubElement(annotation, "object")
        ET.SubElement(node, "name").text = object_name
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = str(difficult)
        box = ET.SubElement(node, "bndbox")
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            ET.SubElement(box, tag).text = str(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(annotation).write(path)


def write_voc(root: Path, seed: int = 0) -> Path:
    """``root/VOCdevkit/VOC2012`` with ``train`` and ``val`` splits of ``len(SIZES)`` images.

    Boxes are written as VOC does, 1-based and inclusive. Each image has 2-3 clean objects,
    the second image a difficult one; image 0 of ``train`` also a zero-width box, a
    negative-width box, a box partly outside the image, one wholly outside it and an
    object named "unicorn". The image at ``EMPTY_IMAGE`` has no objects; the last one of
    ``train`` has no ``<size>`` in its XML. Returns the VOC2012 folder.
    """
    voc = root / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        names = []
        for position, size in enumerate(SIZES):
            height, width = size
            name = f"2012_{split}_{position:03d}"
            names.append(name)
            save_image(voc / "JPEGImages" / f"{name}.jpg", _image(position + 1, size))
            objects = []
            if position != EMPTY_IMAGE:
                for k, (x1, y1, x2, y2) in enumerate(_clean_boxes(rng, size, 2 + position % 2)):
                    objects.append((VOC_NAMES[(position + k) % 4], (x1 + 1, y1 + 1, x2, y2), 0))
            if position == 1:
                objects.append(("person", (3, 4, 14, 12), 1))
            if split == "train" and position == 0:
                objects += [
                    ("dog", (6, 6, 5, 15), 0),  # zero width: xmax = xmin - 1
                    ("dog", (21, 6, 15, 15), 0),  # negative width
                    ("car", (width - 4, 3, width + 5, 10), 0),  # partly outside: clamped
                    ("car", (width + 4, 3, width + 8, 7), 0),  # wholly outside
                    ("unicorn", (3, 3, 10, 10), 0),  # not a VOC class
                ]
            has_size = not (split == "train" and position == len(SIZES) - 1)
            _voc_xml(voc / "Annotations" / f"{name}.xml", name, size if has_size else None, objects)
        split_file = voc / "ImageSets" / "Main" / f"{split}.txt"
        split_file.parent.mkdir(parents=True, exist_ok=True)
        split_file.write_text("\n".join(names) + "\n")
    return voc
