"""Loader throughput: ``ImageFolder``'s training loader against torchvision's of the same files.

A folder of real photos (random crops of the photos that ship with scikit-image and
matplotlib, so no two files are alike, saved as JPEG) is read by two loaders with the same
settings: 224-pixel random-resized crops, flips and (for ``course``) colour jitter, batch 32,
2 workers, shuffled.

- zoo: ``datamodules.ImageFolder(train_transforms=preset)``: PIL decode, albumentations.
- torchvision: ``torchvision.datasets.ImageFolder`` + ``transforms.v2`` (RandomResizedCrop,
  RandomHorizontalFlip, ColorJitter, ToImage, ToDtype, Normalize), as its reference
  scripts do it: PIL decode, PIL resampling, then tensors.

A trial builds a fresh loader, runs one untimed epoch (worker start-up, page cache) and times
the next ``epochs``; trials alternate between the loaders (``_report.compare``), so a slow
spell of a shared machine hits both. Both read the same files, so the per-trial ratio of
torchvision's seconds to the zoo's is the zoo's images/s over torchvision's: above 1, the zoo
is faster. Never a CI gate: ``run(size)`` feeds ``make bench``, or run it by hand.

    python -m tests.benchmarks.loader [--size quick] [--images N] [--epochs E] [--trials T]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from datamodules import ImageFolder
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD
from tests._image_files import original_photos
from tests.benchmarks._report import SIZES, Measurement, compare, summary

IMAGE_SIZE, BATCH_SIZE, NUM_WORKERS = 224, 32, 2
PRESETS = ("course", "crop_flip")
GROUP = "data pipeline"
GOAL = ">= 1.0"  # the zoo's albumentations pipeline is no slower than torchvision's own


@dataclass(frozen=True)
class Settings:
    """How much one ``run(size)`` reads: ``images`` files, ``epochs`` timed per trial."""

    images: int
    epochs: int
    trials: int
    workers: int


# tiny only smoke-runs the code: no workers (their start-up would be most of its seconds).
# quick fits 40 s and full 2.5 minutes of a shared 2-core CPU, both presets together.
SETTINGS = {
    "tiny": Settings(images=16, epochs=1, trials=1, workers=0),
    "quick": Settings(images=96, epochs=1, trials=3, workers=NUM_WORKERS),
    "full": Settings(images=192, epochs=2, trials=5, workers=NUM_WORKERS),
}


def random_photos(
    num_images: int, seed: int = 0, longer_side: tuple[int, int] = (320, 500)
) -> Iterator[tuple[str, Image.Image]]:
    """``num_images`` (photo name, image) pairs: random crops (40-100% of each side) of four
    photos in turn, rescaled so the longer side is in ``longer_side`` pixels, randomly
    mirrored. Seeded: the same arguments give the same images."""
    photos = list(original_photos().items())
    rng = np.random.default_rng(seed)
    for k in range(num_images):
        name, photo = photos[k % len(photos)]
        height, width = photo.shape[:2]
        crop_h, crop_w = (rng.uniform(0.4, 1.0, 2) * (height, width)).astype(int)
        top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
        image = Image.fromarray(photo[top : top + crop_h, left : left + crop_w])
        scale = rng.uniform(*longer_side) / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        yield name, image


def write_photo_folder(root: Path, num_images: int, seed: int = 0) -> None:
    """``num_images`` JPEGs of :func:`random_photos` in four class folders, one per photo."""
    for k, (name, image) in enumerate(random_photos(num_images, seed)):
        (root / name).mkdir(parents=True, exist_ok=True)
        image.save(root / name / f"{k:04d}.jpg", quality=90)


def zoo_loader(root: Path, preset: str, num_workers: int = NUM_WORKERS) -> DataLoader:
    datamodule = ImageFolder(
        str(root),
        image_size=IMAGE_SIZE,
        train_transforms=preset,
        batch_size=BATCH_SIZE,
        num_workers=num_workers,
        val_fraction=0,
    )
    datamodule.setup("fit")
    return datamodule.train_dataloader()


def torchvision_loader(root: Path, preset: str, num_workers: int = NUM_WORKERS) -> DataLoader:
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
        num_workers=num_workers,
        # as the zoo's datamodules do: workers that outlive an epoch
        persistent_workers=num_workers > 0,
    )


@contextlib.contextmanager
def like_a_worker() -> Iterator[None]:
    """The main process set up as the zoo's DataLoader workers are: one torch thread and one
    OpenCV thread (what a ``workers=0`` run is timed with); warnings and the datamodules'
    one-line split summaries silenced. torch's thread count is restored on exit.

    OpenCV's is left at one, as the zoo's loaders leave it when they start workers (a worker
    forked after the parent's OpenCV pool ran could hang: see ``FileDataModule._dataloader``).
    """
    threads = torch.get_num_threads()
    summaries = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = summaries.level
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    summaries.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.set_num_threads(threads)
        summaries.setLevel(level)


class EpochTimer:
    """A timed function for ``compare``: each call builds a fresh loader with ``build``, runs one
    untimed epoch (worker start-up, page cache), then returns the seconds of ``epochs`` more.
    Keeps, per call, the images seen and the boxes (targets that are lists of dicts with
    ``"boxes"``, as detection batches; 0 otherwise), so the caller can check both sides read
    the same data."""

    def __init__(self, build: Callable[[], DataLoader], epochs: int) -> None:
        self.build, self.epochs = build, epochs
        self.images: list[int] = []
        self.boxes: list[int] = []

    def __call__(self) -> float:
        loader = self.build()
        try:
            for _ in loader:
                pass
            images = boxes = 0
            start = time.perf_counter()
            for _ in range(self.epochs):
                for batch_images, targets in loader:
                    images += len(batch_images)
                    if isinstance(targets, list | tuple):
                        boxes += sum(len(target["boxes"]) for target in targets)
            elapsed = time.perf_counter() - start
        finally:  # stop the persistent workers now rather than at garbage collection
            if loader._iterator is not None:
                loader._iterator._shutdown_workers()
        self.images.append(images)
        self.boxes.append(boxes)
        return elapsed


def throughput(
    name: str,
    compared: str,
    zoo: EpochTimer,
    torchvision_: EpochTimer,
    trials: int,
    details: dict[str, Any],
) -> Measurement:
    """Alternate the two timers over ``trials`` and keep the per-trial ratios torchvision's
    seconds / the zoo's: both read the same images (checked), so that is the zoo's images/s
    over torchvision's, above 1 when the zoo is faster."""
    ratios, zoo_s, torchvision_s = compare(zoo, torchvision_, trials, warmup=False)
    if len(set(zoo.images + torchvision_.images)) != 1:
        raise AssertionError(
            f"{name}: the loaders read different numbers of images per trial (zoo "
            f"{zoo.images}, torchvision {torchvision_.images}); their ratio would mean nothing"
        )
    images = zoo.images[0]
    return Measurement(
        group=GROUP,
        name=name,
        compared=compared,
        trials=ratios,
        goal=GOAL,
        details={
            "zoo_images_per_s": summary([images / s for s in zoo_s]),
            "torchvision_images_per_s": summary([images / s for s in torchvision_s]),
            "images_per_trial": images,
            **details,
        },
    )


def measure(settings: Settings) -> list[Measurement]:
    """One measurement per preset: the zoo's images/s over torchvision's, per trial."""
    results = []
    with like_a_worker(), tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        write_photo_folder(root, settings.images)
        start = time.perf_counter()
        ImageFolder(str(root), val_fraction=0).setup("fit")
        check_s = time.perf_counter() - start
        for preset in PRESETS:
            zoo = EpochTimer(
                lambda p=preset: zoo_loader(root, p, settings.workers), settings.epochs
            )
            theirs = EpochTimer(
                lambda p=preset: torchvision_loader(root, p, settings.workers), settings.epochs
            )
            results.append(
                throughput(
                    f"ImageFolder train loader, {preset}, {settings.images} JPEGs -> "
                    f"{IMAGE_SIZE} px, batch {BATCH_SIZE}, {settings.workers} workers",
                    "zoo / torchvision transforms.v2 images/s",
                    zoo,
                    theirs,
                    settings.trials,
                    # setup's check of every file, paid once per fit, outside the timed epochs
                    {"epochs": settings.epochs, "setup_check_s": check_s},
                )
            )
    return results


def run(size: str) -> list[Measurement]:
    return measure(SETTINGS[size])


def print_throughput(measurements: Sequence[Measurement]) -> None:
    """One line per measurement: both loaders' median images/s, the ratio and its range."""
    for m in measurements:
        trials = summary(m.trials)
        print(f"  {m.name}")
        print(
            f"    zoo {m.details['zoo_images_per_s']['median']:7.1f} images/s   torchvision "
            f"{m.details['torchvision_images_per_s']['median']:7.1f}   ratio {m.value:.2f} "
            f"(trials {trials['min']:.2f}-{trials['max']:.2f}, goal {m.goal}: "
            f"{'met' if m.met else 'not met'})"
        )


def settings_from_args(description: str, presets: dict[str, Settings]) -> Settings:
    """``--size`` picks one of ``presets``; ``--images`` etc. override its fields."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", choices=SIZES, default="quick")
    fields = ("images", "epochs", "trials", "workers")
    for field in fields:
        parser.add_argument(f"--{field}", type=int)
    args = parser.parse_args()
    chosen = presets[args.size]
    return Settings(**{
        field: getattr(chosen, field) if getattr(args, field) is None else getattr(args, field)
        for field in fields
    })  # fmt: skip


def main() -> None:
    settings = settings_from_args(__doc__.splitlines()[0], SETTINGS)
    results = measure(settings)
    print(
        f"{settings.images} JPEG photos (longer side 320-500 px); median of {settings.trials} "
        f"trials of {settings.epochs} epochs (after one untimed), ratio zoo / torchvision:"
    )
    print_throughput(results)
    check_s = results[0].details["setup_check_s"]
    print(f"  setup's file check: {check_s * 1000:.0f} ms for {settings.images} files")


if __name__ == "__main__":
    main()
