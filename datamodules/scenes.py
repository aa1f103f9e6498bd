"""DigitScenes: scikit-learn's handwritten digits on larger canvases, for detection and
segmentation with no download.

d2l section 14.6 ("The Object Detection Dataset") trains its detector on synthetic scenes,
bananas pasted onto photos; this module does the same with the 1,797 real handwritten digits
bundled with scikit-learn, and writes them in the two real formats of section 14.6 and 14.9,
so the real COCO (pycocotools) and Pascal VOC (torchvision) readers load them::

    root/scenes.json                                  the manifest, written last
    root/coco/{train,val}/000001.jpg ...
    root/coco/annotations/instances_{train,val}.json
    root/VOCdevkit/VOC2012/JPEGImages/{train,val}_000001.jpg ...   (the same JPEG bytes)
    root/VOCdevkit/VOC2012/Annotations/<id>.xml
    root/VOCdevkit/VOC2012/SegmentationClass/<id>.png   palette PNG: digit d -> d + 1
    root/VOCdevkit/VOC2012/SegmentationObject/<id>.png  palette PNG: instance 1..N
    root/VOCdevkit/VOC2012/ImageSets/{Main,Segmentation}/{train,val,trainval}.txt

Both class and object PNGs mark a 1-pixel ring just outside the objects with 255 ("void"),
as VOC marks its object borders.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ._scene_trees import (
    FORMAT_VERSION,
    MANIFEST,
    inventory,
    remove_stale_temporaries,
    reusable,
    temporary_name,
)

__all__ = ["Scene", "digit_pools", "render_scene", "voc_palette", "write_digit_scenes"]

_NUM_DIGIT_SAMPLES = 1797  # len(load_digits().target)
# A digit's mask is its upsampled intensity above this share of its peak: it keeps the pen
# strokes and drops the faint halo that bicubic upsampling spreads around them.
_MASK_THRESHOLD = 0.35
_MIN_SIDE = 4  # px; smaller digits would have masks of a pixel or two
_PLACEMENT_TRIES = 50  # random positions tried per digit before the image takes fewer
# Luminance (ITU-R BT.601) gap between a digit and the canvas under it: 0.3 keeps every digit
# legible after a grey-scale conversion. A random colour passes it about one time in four, so
# 16 tries fall back to the most contrasting colour for about 4% of the digits.
_MIN_CONTRAST = 0.3
_COLOUR_TRIES = 16
_BACKGROUND_GRID = 3  # a 3 x 3 grid of random colours, interpolated: a smooth colour field
_NOISE_STD = 0.03  # mild pixel noise (about 8 of 255), so the background is never flat
_COCO_HEADER = {
    "info": {
        "description": "DigitScenes: scikit-learn's handwritten digits on textured canvases",
        "version": str(FORMAT_VERSION),
    },
    "licenses": [  # the digits' licence: UCI's, as bundled with scikit-learn
        {
            "id": 1,
            "name": "CC BY 4.0 (UCI Optical Recognition of Handwritten Digits)",
            "url": "https://creativecommons.org/licenses/by/4.0/",
        }
    ],
}


def voc_palette() -> list[int]:
    """The Pascal VOC colour map as a flat ``[r0, g0, b0, r1, ...]`` list of 256 colours.

    Class ``i`` gets the colour whose red, green and blue bits are the bits of ``i`` taken
    three at a time, most significant bit first (VOC development kit, ``VOClabelcolormap``):
    0 is black, 1 dark red (128, 0, 0), 2 dark green, ... and 255 (void) is (224, 224, 192).
    """
    palette = []
    for index in range(256):
        red = green = blue = 0
        bits = index
        for shift in range(7, -1, -1):
            red |= (bits & 1) << shift
            green |= ((bits >> 1) & 1) << shift
            blue |= ((bits >> 2) & 1) << shift
            bits >>= 3
        palette += [red, green, blue]
    return palette


def digit_pools(val_digit_fraction: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``sklearn.datasets.load_digits()`` of the train and val digit pools.

    The 1,797 digits are split once, stratified by digit and seeded, so the digits drawn in
    validation scenes were never seen in training scenes.

    Returns:
        ``(train_positions, val_positions)``, each sorted, disjoint, together all 1,797.
    """
    targets = load_digits().target
    train, val = train_test_split(
        np.arange(len(targets)), test_size=val_digit_fraction, random_state=seed, stratify=targets
    )
    return np.sort(train), np.sort(val)


@dataclass
class Scene:
    """One composed image and its objects, in drawing order (later digits lie on top).

    Attributes:
        image: ``[H, W, 3]`` uint8 RGB.
        boxes: ``[N, 4]`` int64 ``x1, y1, x2, y2`` in pixel-edge coordinates: the tight box
            of each digit's full mask (columns 3..7 give ``x1 = 3, x2 = 8``), occluded or not.
        digits: ``[N]`` int64, the digit (0-9) of each object.
        samples: ``[N]`` int64, each digit's position in ``load_digits()``.
        instances: ``[H, W]`` uint8, 0 background and ``k`` where the ``k``-th object
            (1-based) is visible.
    """

    image: np.ndarray
    boxes: np.ndarray
    digits: np.ndarray
    samples: np.ndarray
    instances: np.ndarray


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    # A coarse grid of random colours, linearly interpolated to the canvas: a smooth colour
    # field (a gradient with a bend or two), then mild noise on top.
    grid = rng.uniform(0.1, 0.9, size=(_BACKGROUND_GRID, _BACKGROUND_GRID, 3))
    position = np.linspace(0, _BACKGROUND_GRID - 1, size)
    weights = np.maximum(0, 1 - np.abs(position[:, None] - np.arange(_BACKGROUND_GRID)))
    field = np.einsum("ig,ghc,jh->ijc", weights, grid, weights, optimize=True)
    return field + rng.normal(0, _NOISE_STD, size=(size, size, 3))


def _upsample(digit: np.ndarray, side: int) -> np.ndarray:
    # Bicubic, so the strokes are smooth rather than 8 x 8 blocks; the overshoot around
    # strokes is clipped, and the peak scaled to 1 so even a faint digit is fully opaque.
    image = Image.fromarray(digit.astype(np.float32), mode="F")
    alpha = np.asarray(image.resize((side, side), Image.Resampling.BICUBIC)).clip(0, None)
    return alpha / alpha.max()


def _fits(candidates: np.ndarray, boxes: np.ndarray, max_overlap: float) -> np.ndarray:
    """Which candidate boxes ``[T, 4]`` overlap every box in ``boxes`` ``[N, 4]`` by at most
    ``max_overlap`` of the smaller of the two areas."""
    if len(boxes) == 0:
        return np.ones(len(candidates), dtype=bool)
    top_left = np.maximum(candidates[:, None, :2], boxes[None, :, :2])
    bottom_right = np.minimum(candidates[:, None, 2:], boxes[None, :, 2:])
    intersection = np.prod((bottom_right - top_left).clip(0), axis=-1)
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1)
    candidate_areas = np.prod(candidates[:, 2:] - candidates[:, :2], axis=-1)
    smaller = np.minimum(candidate_areas[:, None], areas[None, :])
    return (intersection <= max_overlap * smaller).all(axis=1)


def _luminance(colours: np.ndarray) -> np.ndarray:
    return colours @ np.array([0.299, 0.587, 0.114])


def render_scene(
    rng: np.random.Generator,
    digit_images: np.ndarray,
    digit_targets: np.ndarray,
    pool: np.ndarray,
    image_size: int = 64,
    digits_per_image: tuple[int, int] = (2, 6),
    digit_scale: tuple[float, float] = (0.2, 0.5),
    max_overlap: float = 0.2,
) -> Scene:
    """Compose one scene from digits drawn out of ``pool``; see :func:`write_digit_scenes`.

    Args:
        rng: the source of every random choice.
        digit_images: ``[1797, 8, 8]`` intensities, e.g. ``load_digits().images``.
        digit_targets: ``[1797]`` the digit of each image.
        pool: positions in ``digit_images`` to draw from.
        image_size, digits_per_image, digit_scale, max_overlap: as in
            :func:`write_digit_scenes`.
    """
    canvas = _background(rng, image_size)
    instances = np.zeros((image_size, image_size), dtype=np.uint8)
    boxes: list[np.ndarray] = []
    samples: list[int] = []
    count = rng.integers(digits_per_image[0], digits_per_image[1], endpoint=True)
    for _ in range(count):
        # Every draw happens whether or not the digit fits, so scene k does not depend on
        # how earlier placements went.
        sample = int(pool[rng.integers(len(pool))])
        side = max(_MIN_SIDE, round(rng.uniform(*digit_scale) * image_size))
        corners = rng.integers(0, image_size - side, size=(_PLACEMENT_TRIES, 2), endpoint=True)
        colours = rng.random((_COLOUR_TRIES, 3))

        alpha = _upsample(digit_images[sample], side)
        mask = alpha > _MASK_THRESHOLD
        rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        tight = np.array([columns[0], rows[0], columns[-1] + 1, rows[-1] + 1])
        candidates = tight + np.tile(corners, 2)
        fits = _fits(candidates, np.array(boxes).reshape(-1, 4), max_overlap)
        if not fits.any():
            continue  # no room left: this image takes fewer digits
        x, y = corners[np.argmax(fits)]

        region = canvas[y : y + side, x : x + side]
        # The first colour that stands out from what lies under the digit, else the one
        # that stands out most.
        contrast = np.abs(_luminance(colours) - _luminance(region[mask].mean(axis=0)))
        passing = contrast >= _MIN_CONTRAST
        colour = colours[np.argmax(passing) if passing.any() else np.argmax(contrast)]
        region[:] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
        boxes.append(candidates[np.argmax(fits)])
        samples.append(sample)
        instances[y : y + side, x : x + side][mask] = len(boxes)  # hides what lies under it

    image = (canvas.clip(0, 1) * 255).round().astype(np.uint8)
    sample_array = np.array(samples, dtype=np.int64)
    return Scene(
        image=image,
        boxes=np.array(boxes, dtype=np.int64).reshape(-1, 4),
        digits=np.asarray(digit_targets)[sample_array].astype(np.int64),
        samples=sample_array,
        instances=instances,
    )


def _void_ring(instances: np.ndarray) -> np.ndarray:
    """The pixels just outside the objects: the 8-neighbours of object pixels that are
    background. A ring falling on another object keeps that object's label."""
    foreground = instances > 0
    padded = np.pad(foreground, 1)
    height, width = foreground.shape
    grown = np.zeros_like(foreground)
    for dy in range(3):
        for dx in range(3):
            grown |= padded[dy : dy + height, dx : dx + width]
    return grown & ~foreground


def _check_arguments(arguments: dict[str, Any]) -> None:
    problems = []
    for name in ("num_train", "num_val"):
        if arguments[name] < 1:
            problems.append(f"{name}={arguments[name]} must be at least 1")
    if arguments["image_size"] < 16:
        problems.append(f"image_size={arguments['image_size']} must be at least 16 (pixels)")
    low, high = arguments["digits_per_image"]
    if not 1 <= low <= high <= 254:  # instance indices 1..N and 255 share a uint8 PNG
        problems.append(
            f"digits_per_image=({low}, {high}) must be (min, max) with 1 <= min <= max <= 254"
        )
    low, high = arguments["digit_scale"]
    if not 0 < low <= high <= 1:
        problems.append(
            f"digit_scale=({low}, {high}) must be (min, max) shares of image_size with "
            "0 < min <= max <= 1, e.g. (0.2, 0.5)"
        )
    if not 0 <= arguments["max_overlap"] <= 1:
        problems.append(f"max_overlap={arguments['max_overlap']} must be in [0, 1]")
    fraction = arguments["val_digit_fraction"]
    # Both pools need every digit once; the scarcest digit has 174 samples.
    if not 0 < fraction < 1 or not 10 <= math.ceil(fraction * _NUM_DIGIT_SAMPLES) <= 1787:
        problems.append(
            f"val_digit_fraction={fraction} must leave each pool at least one sample of every "
            "digit: in (0.006, 0.994), e.g. 0.25"
        )
    if not 0 <= arguments["seed"] < 2**32:
        problems.append(f"seed={arguments['seed']} must be in [0, 2**32)")
    if not 1 <= arguments["jpeg_quality"] <= 100:
        problems.append(f"jpeg_quality={arguments['jpeg_quality']} must be in [1, 100], e.g. 95")
    if problems:
        raise ValueError("write_digit_scenes: " + "; ".join(problems))


def _jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _voc_xml(path: Path, voc_id: str, scene: Scene) -> None:
    def child(parent: ET.Element, tag: str, text: object = None) -> ET.Element:
        element = ET.SubElement(parent, tag)
        if text is not None:
            element.text = str(text)
        return element

    height, width = scene.instances.shape
    annotation = ET.Element("annotation")
    child(annotation, "folder", "VOC2012")
    child(annotation, "filename", f"{voc_id}.jpg")
    source = child(annotation, "source")
    child(source, "database", "DigitScenes (scikit-learn handwritten digits)")
    size = child(annotation, "size")
    child(size, "width", width)
    child(size, "height", height)
    child(size, "depth", 3)
    child(annotation, "segmented", 1)
    for digit, (x1, y1, x2, y2) in zip(scene.digits, scene.boxes, strict=True):
        obj = child(annotation, "object")
        child(obj, "name", digit)
        child(obj, "pose", "Unspecified")
        child(obj, "truncated", 0)
        child(obj, "difficult", 0)
        box = child(obj, "bndbox")
        # VOC counts pixels from 1 and includes both ends: edges x1..x2 are pixels x1+1..x2.
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            child(box, tag, value)
    ET.indent(annotation)
    ET.ElementTree(annotation).write(path, encoding="utf-8")


def _voc_pngs(voc: Path, voc_id: str, scene: Scene, palette: list[int]) -> None:
    ring = _void_ring(scene.instances)
    class_of_instance = np.concatenate([[0], scene.digits + 1]).astype(np.uint8)
    for folder, labels in (
        ("SegmentationClass", class_of_instance[scene.instances]),
        ("SegmentationObject", scene.instances),
    ):
        image = Image.fromarray(np.where(ring, 255, labels).astype(np.uint8), mode="P")
        image.putpalette(palette)
        image.save(voc / folder / f"{voc_id}.png", format="PNG")


def _coco_annotations(scene: Scene, image_id: int, first_id: int) -> list[dict[str, Any]]:
    count = len(scene.boxes)
    visible = scene.instances[..., None] == np.arange(1, count + 1, dtype=np.uint8)
    rles = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
    annotations = []
    for k, ((x1, y1, x2, y2), digit, sample, rle) in enumerate(
        zip(scene.boxes, scene.digits, scene.samples, rles, strict=True)
    ):
        annotations.append(
            {
                "id": first_id + k,
                "image_id": image_id,
                "category_id": int(digit) + 1,
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                "area": float(visible[..., k].sum()),
                "iscrowd": 0,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "digit_index": int(sample),  # position in load_digits(), to audit the pools
            }
        )
    return annotations


def _write_tree(folder: Path, arguments: dict[str, Any]) -> dict[str, Any]:
    digits = load_digits()
    train_pool, val_pool = digit_pools(arguments["val_digit_fraction"], arguments["seed"])
    coco, voc = folder / "coco", folder / "VOCdevkit" / "VOC2012"
    subfolders = ["Annotations", "JPEGImages", "SegmentationClass", "SegmentationObject"]
    subfolders += ["ImageSets/Main", "ImageSets/Segmentation"]
    for sub in [coco / "annotations", coco / "train", coco / "val"]:
        sub.mkdir(parents=True)
    for sub in subfolders:
        (voc / sub).mkdir(parents=True)
    palette = voc_palette()
    categories = [{"id": d + 1, "name": str(d), "supercategory": "digit"} for d in range(10)]
    scene_arguments = {
        name: arguments[name]
        for name in ("image_size", "digits_per_image", "digit_scale", "max_overlap")
    }
    all_ids, counts = [], {}
    for split_index, (split, pool) in enumerate((("train", train_pool), ("val", val_pool))):
        images, annotations, voc_ids = [], [], []
        for number in range(1, arguments[f"num_{split}"] + 1):
            # One generator per image, seeded by (seed, split, number): image k is the same
            # whatever num_train and num_val are.
            rng = np.random.default_rng([arguments["seed"], split_index, number])
            scene = render_scene(rng, digits.images, digits.target, pool, **scene_arguments)
            voc_id = f"{split}_{number:06d}"
            jpeg = _jpeg_bytes(scene.image, arguments["jpeg_quality"])
            (coco / split / f"{number:06d}.jpg").write_bytes(jpeg)
            (voc / "JPEGImages" / f"{voc_id}.jpg").write_bytes(jpeg)  # the same bytes
            height, width = scene.instances.shape
            images.append(
                dict(id=number, file_name=f"{number:06d}.jpg", height=height, width=width)
            )
            annotations += _coco_annotations(scene, number, len(annotations) + 1)
            _voc_xml(voc / "Annotations" / f"{voc_id}.xml", voc_id, scene)
            _voc_pngs(voc, voc_id, scene, palette)
            voc_ids.append(voc_id)
        coco_json = {**_COCO_HEADER, "images": images, "annotations": annotations}
        coco_json["categories"] = categories
        (coco / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco_json))
        for image_sets in ("Main", "Segmentation"):
            (voc / "ImageSets" / image_sets / f"{split}.txt").write_text("\n".join(voc_ids) + "\n")
        all_ids += voc_ids
        counts[split] = {"images": len(images), "annotations": len(annotations)}
    for image_sets in ("Main", "Segmentation"):
        (voc / "ImageSets" / image_sets / "trainval.txt").write_text("\n".join(all_ids) + "\n")
    return {
        "format_version": FORMAT_VERSION,
        "arguments": arguments,
        "counts": counts,
        "digit_pools": {"train": train_pool.tolist(), "val": val_pool.tolist()},
    }


def write_digit_scenes(
    root: str | Path,
    num_train: int = 4000,
    num_val: int = 500,
    image_size: int = 64,
    digits_per_image: tuple[int, int] = (2, 6),
    digit_scale: tuple[float, float] = (0.2, 0.5),
    max_overlap: float = 0.2,
    val_digit_fraction: float = 0.25,
    seed: int = 0,
    jpeg_quality: int = 95,
) -> Path:
    """Write DigitScenes under ``root`` as a COCO tree and a VOCdevkit tree; return ``root``.

    Each image is ``image_size`` square RGB: a smooth random colour field with mild noise,
    and a uniform ``digits_per_image`` number of scikit-learn's handwritten digits, each
    upsampled bicubically from 8 x 8 to a side of ``digit_scale`` times ``image_size``, put
    fully inside the canvas and alpha-blended (its intensity is the alpha) in a random colour
    that contrasts with what lies under it. The layout of the files is in the module's
    docstring (d2l sections 14.6 and 14.9 describe both formats).

    - A digit's mask is its upsampled intensity above 0.35 of its peak; its box is the tight
      box of that mask in pixel-edge coordinates (x2, y2 exclusive; VOC's XML holds the
      1-based inclusive ``xmin = x1 + 1, xmax = x2``). Later digits hide earlier ones: masks
      (COCO RLE, VOC PNGs) and COCO ``area`` are the visible pixels, boxes the full digit.
    - Positions are drawn by rejection sampling so that every two boxes overlap by at most
      ``max_overlap`` of the smaller box's area. A digit that finds no room in 50 tries is
      left out, so a crowded image may hold fewer digits than drawn (never fewer than one).
    - Train and val scenes draw from disjoint pools of the 1,797 digits, split once,
      stratified by digit (:func:`digit_pools`), so validation digits are never seen in
      training. The manifest ``scenes.json`` records the pools, and each COCO annotation
      the ``digit_index`` of its digit.
    - Deterministic: image ``k`` of a split depends only on ``seed``, the split, ``k`` and
      the scene arguments.

    Writing is atomic: the tree is built in a hidden sibling folder and renamed into place
    once complete (the manifest is written last), and the sibling is removed on any error;
    siblings left by writers that were killed are removed by the next write. A tree already
    written with the same arguments is reused without rewriting, after checking that its
    files still match the count and size of each folder the manifest records: a tree with
    files deleted or truncated since is written again, with a warning.

    Args:
        root: the folder to write; it must be absent, empty, or a DigitScenes tree of the
            same arguments.
        num_train, num_val: images in each split.
        image_size: side of the square images, in pixels (at least 16).
        digits_per_image: (min, max) digits drawn per image, both included.
        digit_scale: (min, max) side of a digit as a share of ``image_size``; 0.2 to 0.5
            at 64 px gives 13- to 32-pixel digits, inside the range of the course's TinySSD
            anchors (0.2 to 0.96 of the image side, section 14.7). Sides below 4 pixels are
            raised to 4.
        max_overlap: the largest intersection of two boxes, as a share of the smaller area.
        val_digit_fraction: share of the 1,797 digits kept for validation scenes.
        seed: seeds the pools and every scene.
        jpeg_quality: quality of the JPEG images (PIL's scale; 95 keeps the digits' edges).

    Raises:
        ValueError: for an argument out of range; when ``root`` holds files but no
            manifest, or a manifest of other arguments (it names them): such a folder is
            never overwritten.
    """
    # The manifest stores the arguments as JSON; compare and store them in that form.
    arguments: dict[str, Any] = {
        "num_train": int(num_train),
        "num_val": int(num_val),
        "image_size": int(image_size),
        "digits_per_image": [int(value) for value in digits_per_image],
        "digit_scale": [float(value) for value in digit_scale],
        "max_overlap": float(max_overlap),
        "val_digit_fraction": float(val_digit_fraction),
        "seed": int(seed),
        "jpeg_quality": int(jpeg_quality),
    }
    for name in ("digits_per_image", "digit_scale"):
        if len(arguments[name]) != 2:
            raise ValueError(f"write_digit_scenes: {name}={arguments[name]} must be (min, max)")
    _check_arguments(arguments)
    root = Path(root).expanduser()
    if reusable(root, arguments):
        return root

    root.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root)
    temporary = temporary_name(root, "tmp")
    shutil.rmtree(temporary, ignore_errors=True)  # left by a killed run of this process id
    damaged = None
    try:
        manifest = _write_tree(temporary, arguments)
        manifest["files"] = inventory(temporary)
        # The manifest, written last, marks the tree complete; the rename below publishes
        # it at once, so no reader ever sees a tree that is half written.
        (temporary / MANIFEST).write_text(json.dumps(manifest))
        if (root / MANIFEST).is_file():
            # A damaged tree of these arguments (reusable said so), unless another process
            # (a second DDP rank) has replaced it meanwhile: moved aside, removed once the
            # new tree is in place.
            if reusable(root, arguments, warn=False):
                shutil.rmtree(temporary)
                return root
            damaged = temporary_name(root, "damaged")
            root.rename(damaged)
        elif root.is_dir():
            root.rmdir()  # empty, checked above; rename cannot replace a folder everywhere
        try:
            temporary.rename(root)
        except OSError:
            # Another process (e.g. a second DDP rank) may have finished the same tree first.
            if not reusable(root, arguments):
                raise
            shutil.rmtree(temporary)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    finally:
        if damaged is not None:
            shutil.rmtree(damaged, ignore_errors=True)
    return root
