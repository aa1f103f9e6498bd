"""Loader throughput: ``ImageFolder``'s training loader against torchvision's of the same files.

A folder of a few hundred real photos (random crops of the photos that ship with scikit-image
and matplotlib, so no two files are alike, saved as JPEG) is read by two loaders with the
same settings: 224-pixel random-resized crops, flips and (for ``course``) colour jitter,
batch 32, 2 workers, shuffled.

- zoo: ``datamodules.ImageFolder(train_transforms=preset)``: PIL decode, albumentations.
- torchvision: ``torchvision.datasets.ImageFolder`` + ``transforms.v2`` (RandomResizedCrop,
  RandomHorizontalFlip, ColorJitter, ToImage, ToDtype, Normalize), as its reference
  scripts do it: PIL decode, PIL resampling, then tensors.

Each repeat builds fresh loaders, runs one untimed epoch (worker start-up, page cache) and
times the next ``epochs``; repeats interleave the loaders, so a slow spell of a shared
machine hits all of them. Prints images/s and the ratio zoo / torchvision (above 1: the zoo
is faster). Never a CI gate: run it by hand.

    python -m tests.benchmarks.loader [--images 320] [--epochs 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib.cbook
import numpy as np
import skimage.data
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from datamodules import ImageFolder
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD

IMAGE_SIZE, BATCH_SIZE, NUM_WORKERS = 224, 32, 2
PRESETS = ("course", "crop_flip")


def write_photo_folder(root: Path, num_images: int, seed: int = 0) -> None:
    """``num_images`` JPEGs in four class folders: random crops (40-100% of each side) of
    four photos, rescaled so the longer side is 320-500 pixels, randomly mirrored."""
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
        hopper = np.asarray(Image.open(file).convert("RGB"))
    photos = {
        "astronaut": skimage.data.astronaut(),
        "chelsea": skimage.data.chelsea(),
        "coffee": skimage.data.coffee(),
        "hopper": hopper,
    }
    rng = np.random.default_rng(seed)
    for k in range(num_images):
        name, photo = list(photos.items())[k % len(photos)]
        height, width = photo.shape[:2]
        crop_h, crop_w = (rng.uniform(0.4, 1.0, 2) * (height, width)).astype(int)
        top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
        image = Image.fromarray(photo[top : top + crop_h, left : left + crop_w])
        scale = rng.uniform(320, 500) / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        (root / name).mkdir(parents=True, exist_ok=True)
        image.save(root / name / f"{k:04d}.jpg", quality=90)


def zoo_loader(root: Path, preset: str) -> DataLoader:
    datamodule = ImageFolder(
        str(root),
        image_size=IMAGE_SIZE,
        train_transforms=preset,
        batch_size=BATCH_SIZE,
        num_workers=NUM_WORKERS,
        val_fraction=0,
    )
    datamodule.setup("fit")
    return datamodule.train_dataloader()


def torchvision_loader(root: Path, preset: str) -> DataLoader:
    augment = [v2.RandomResizedCrop(IMAGE_SIZE, antialias=True), v2.RandomHorizontalFlip()]
    if preset == "course":
        augment.append(v2.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.5))
    transform = v2.Compose([
        *augment,
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])  # fmt: skip
    dataset = torchvision.datasets.ImageFolder(str(root), transform=transform)
    return DataLoader(
        dataset,
        batch_size=BATCH_SIZE,
        shuffle=True,
        num_workers=NUM_WORKERS,
        persistent_workers=True,
    )


def images_per_second(loader: DataLoader, epochs: int) -> float:
    """Steady-state throughput: one untimed epoch, then ``epochs`` timed ones."""
    try:
        for _ in loader:
            pass
        start, count = time.perf_counter(), 0
        for _ in range(epochs):
            for images, _ in loader:
                count += len(images)
        return count / (time.perf_counter() - start)
    finally:  # stop the persistent workers now rather than at garbage collection
        if loader._iterator is not None:
            loader._iterator._shutdown_workers()


def measure(num_images: int = 320, epochs: int = 2, repeats: int = 3) -> dict[str, float]:
    """Median images/s of each loader, ``{zoo,torchvision}_{preset}``, and ``ratio_{preset}``
    (zoo / torchvision), plus ``check_s``: the seconds ``setup`` spends checking the files."""
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    samples: dict[str, list[float]] = {
        f"{side}_{preset}": [] for preset in PRESETS for side in ("zoo", "torchvision")
    }
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        write_photo_folder(root, num_images)
        start = time.perf_counter()
        ImageFolder(str(root), val_fraction=0).setup("fit")
        check_s = time.perf_counter() - start
        for _ in range(repeats):
            for preset in PRESETS:
                for side, build in (("zoo", zoo_loader), ("torchvision", torchvision_loader)):
                    samples[f"{side}_{preset}"].append(
                        images_per_second(build(root, preset), epochs)
                    )
    result = {name: statistics.median(values) for name, values in samples.items()}
    for preset in PRESETS:
        result[f"ratio_{preset}"] = result[f"zoo_{preset}"] / result[f"torchvision_{preset}"]
    result["check_s"] = check_s
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    r = measure(args.images, args.epochs, args.repeats)
    print(
        f"{args.images} JPEG photos (longer side 320-500 px) -> {IMAGE_SIZE} px, batch "
        f"{BATCH_SIZE}, {NUM_WORKERS} workers; median of {args.repeats} repeats of "
        f"{args.epochs} epochs, images/s:"
    )
    for preset in PRESETS:
        print(
            f"  {preset:10s} zoo {r[f'zoo_{preset}']:7.1f}   torchvision "
            f"{r[f'torchvision_{preset}']:7.1f}   ratio zoo / torchvision {r[f'ratio_{preset}']:.2f}"
        )
    print(f"  setup's file check: {r['check_s'] * 1000:.0f} ms for {args.images} files")


if __name__ == "__main__":
    main()
