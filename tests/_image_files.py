"""Tiny image trees in real formats, shared by the tests: class folders of real photos (from
scikit-image and matplotlib) and digits (scikit-learn), and an ILSVRC tree in Kaggle's layout."""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib.cbook
import numpy as np
import skimage.data
from PIL import Image
from sklearn.datasets import load_digits

from datamodules.imagenet import SUBSET_PRESETS

HEIGHT, WIDTH = 40, 48  # every photo; the centre crop of 40 then starts at column 4 exactly


@functools.cache
def original_photos() -> dict[str, np.ndarray]:
    """The four real photos that ship with scikit-image and matplotlib, by name, RGB uint8 at
    their own sizes."""
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
        hopper = np.asarray(Image.open(file).convert("RGB"))
    return {
        "astronaut": skimage.data.astronaut(),
        "chelsea": skimage.data.chelsea(),
        "coffee": skimage.data.coffee(),
        "hopper": hopper,
    }


@functools.cache
def photos() -> tuple[np.ndarray, ...]:
    """The four real photos, shrunk to HEIGHT x WIDTH."""
    return tuple(
        np.asarray(Image.fromarray(p).resize((WIDTH, HEIGHT))) for p in original_photos().values()
    )


@functools.cache
def digit_images() -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    return (digits.images * (255 / 16)).round().astype(np.uint8), digits.target


def save_image(path: Path, image: Image.Image, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def palette_with_transparency(array: np.ndarray) -> Image.Image:
    image = Image.fromarray(array).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    image.info["transparency"] = 0
    return image


def write_photo_classes(root: Path) -> None:
    """Four class folders, one per photo, each with its photo in six modes and formats."""
    for name, photo in zip(("astronaut", "chelsea", "coffee", "hopper"), photos(), strict=True):
        image = Image.fromarray(photo)
        save_image(root / name / "rgb.jpg", image, quality=95)
        save_image(root / name / "UPPER.JPEG", image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
        save_image(root / name / "grey.png", image.convert("L"))
        save_image(root / name / "rgba.png", image.convert("RGBA"))
        save_image(root / name / "palette.png", palette_with_transparency(photo))
        save_image(root / name / "nested" / "cmyk.jpg", image.convert("CMYK"))
        (root / name / "notes.txt").write_text("not an image extension: ignored")


def write_digit_classes(root: Path, per_class: int = 6) -> None:
    """Ten class folders of 8 x 8 grey digits, alternately PNG and JPEG."""
    images, targets = digit_images()
    for digit in range(10):
        for k, index in enumerate(np.flatnonzero(targets == digit)[:per_class]):
            suffix = ".png" if k % 2 else ".jpg"
            save_image(root / str(digit) / f"{k}{suffix}", Image.fromarray(images[index]))


EXTRA_WNIDS = {  # sorted among the imagenette ones; two share the name "crane"
    "n01443537": "goldfish, Carassius auratus",
    "n01484850": "great white shark, white shark, man-eater",
    "n02012849": "crane",
    "n03126707": "crane",
}
ALL_WNIDS = sorted([*SUBSET_PRESETS["imagenette"], *EXTRA_WNIDS])


def mapping_line(wnid: str) -> str:
    name = EXTRA_WNIDS.get(wnid) or f"{SUBSET_PRESETS['imagenette'][wnid]}, other name"
    return f"{wnid} {name}"


def write_ilsvrc(root: Path, val_layout: str, kaggle: bool = True, train: int = 3, val: int = 2):
    """A tiny ILSVRC tree: ``train`` images per class, ``val`` per class in the val split."""
    data = root / "ILSVRC" / "Data" / "CLS-LOC" if kaggle else root
    images, _ = digit_images()
    (root / "LOC_synset_mapping.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "LOC_synset_mapping.txt").write_text("\n".join(map(mapping_line, ALL_WNIDS)) + "\n")
    solution = ["ImageId,PredictionString"]
    for label, wnid in enumerate(ALL_WNIDS):
        for k in range(train):
            image = Image.fromarray(images[label * 10 + k]).convert("RGB")
            save_image(data / "train" / wnid / f"{wnid}_{k}.JPEG", image)
        for k in range(val):
            image_id = f"ILSVRC2012_val_{label * 10 + k:08d}"
            image = Image.fromarray(images[500 + label * 10 + k]).convert("RGB")
            if val_layout == "folders":
                save_image(data / "val" / wnid / f"{image_id}.JPEG", image)
            else:
                save_image(data / "val" / f"{image_id}.JPEG", image)
                solution.append(f"{image_id},{wnid} 1 2 7 7 {wnid} 0 0 3 3 ")
    if val_layout == "flat":
        (root / "LOC_val_solution.csv").write_text("\n".join(solution) + "\n")
    return data
