"""Detection loader throughput: ``datamodules.COCO``'s SSD training loader against torchvision's.

A COCO tree in the real format (``train2017/<id>.jpg`` and
``annotations/instances_train2017.json``) is written to a temporary folder: JPEG photos (random
crops of the photos that ship with scikit-image and matplotlib, longer side 480-640 pixels as
COCO's) with 2-8 boxes each of 10-60% of the image's sides, in four categories. Two loaders
read it with the same settings: SSD's augmentation, 300 x 300 images, batch 32, 2 workers,
shuffled.

- zoo: ``datamodules.COCO(train_transforms="ssd", image_size=300)``: pycocotools, PIL decode,
  albumentations (colour jitter, zoom-out onto a mean-colour canvas, a random crop that keeps
  the boxes, resize, flip), batches of one stacked tensor and a list of target dicts.
- torchvision: ``datasets.CocoDetection`` wrapped by ``wrap_dataset_for_transforms_v2`` and
  its detection reference's SSD pipeline in ``transforms.v2`` (RandomPhotometricDistort,
  RandomZoomOut, RandomIoUCrop, RandomHorizontalFlip), then Resize to 300 x 300, ToImage,
  ToDtype, Normalize and SanitizeBoundingBoxes; PIL decode and PIL resampling as the reference
  does it by default; batches collated as lists, as the reference's ``collate_fn``.

Before timing, both datasets are checked to read the same images and boxes: without
augmentation, the same image ids, labels and boxes (to 1e-3 pixels) after the resize to 300;
with it, ``[3, 300, 300]`` float32 images and float32 ``[N, 4]`` ``x1, y1, x2, y2`` boxes
inside the image with int64 labels. The two crops keep different boxes (torchvision's IoU crop
drops the boxes whose centre falls outside it, the zoo's keeps every box but those less than
30% in view), so the boxes per image each side yields are recorded, not required equal.

A trial builds a fresh loader, runs one untimed epoch (worker start-up, page cache) and times
the next ``epochs``; trials alternate between the loaders (``_report.compare``). Both read the
same images, so the per-trial ratio of torchvision's seconds to the zoo's is the zoo's images/s
over torchvision's: above 1, the zoo is faster. Never a CI gate: ``run(size)`` feeds ``make
bench``, or run it by hand.

    python -m tests.benchmarks.detection_loader [--size quick] [--images N] [--epochs E]
        [--trials T] [--workers W]
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from datamodules import COCO
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD
from tests.benchmarks._report import Measurement
from tests.benchmarks.loader import (
    BATCH_SIZE,
    NUM_WORKERS,
    EpochTimer,
    Settings,
    like_a_worker,
    print_throughput,
    random_photos,
    settings_from_args,
    throughput,
)

IMAGE_SIZE = 300  # SSD300's input
SPLIT = "train2017"
CATEGORIES = ("astronaut", "cat", "coffee", "hopper")  # ids 1..4: COCO's ids are the labels
# Detection costs more per image than classification (larger files, the zoom-out canvas):
# fewer images than loader.py's for the same budgets.
SETTINGS = {
    "tiny": Settings(images=12, epochs=1, trials=1, workers=0),
    "quick": Settings(images=64, epochs=1, trials=3, workers=NUM_WORKERS),
    "full": Settings(images=128, epochs=2, trials=5, workers=NUM_WORKERS),
}


def write_coco_tree(root: Path, num_images: int, seed: int = 0) -> list[int]:
    """``root/train2017/<id>.jpg`` and ``root/annotations/instances_train2017.json``: the
    photos of :func:`~tests.benchmarks.loader.random_photos` (longer side 480-640 pixels), with
    2-8 seeded boxes each (10-60% of each side, float pixel coordinates as COCO's). Returns the
    number of boxes of each image, in the order of their ids (1, 2, ...)."""
    rng = np.random.default_rng(seed)
    (root / SPLIT).mkdir(parents=True)
    images, annotations, counts = [], [], []
    for image_id, (_, image) in enumerate(random_photos(num_images, seed, (480, 640)), 1):
        name = f"{image_id:012d}.jpg"
        image.save(root / SPLIT / name, quality=90)
        width, height = image.size
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        counts.append(int(rng.integers(2, 9)))
        for _ in range(counts[-1]):
            w, h = rng.uniform(0.1, 0.6, 2) * (width, height)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            x, y, w, h = (round(float(v), 2) for v in (x, y, w, h))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": int(rng.integers(1, len(CATEGORIES) + 1)),
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
            })  # fmt: skip
    categories = [{"id": k, "name": name} for k, name in enumerate(CATEGORIES, 1)]
    dataset = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations").mkdir()
    (root / "annotations" / f"instances_{SPLIT}.json").write_text(json.dumps(dataset))
    return counts


def zoo_datamodule(root: Path, preset: str, num_workers: int) -> COCO:
    datamodule = COCO(
        str(root),
        train_split=SPLIT,
        val_split=None,
        val_fraction=0,
        image_size=IMAGE_SIZE,
        train_transforms=preset,
        batch_size=BATCH_SIZE,
        num_workers=num_workers,
    )
    datamodule.setup("fit")
    return datamodule


def torchvision_dataset(root: Path, augment: bool) -> Dataset:
    """CocoDetection + the v2 wrapper + the reference's SSD pipeline (``augment``) or only the
    resize, then tensors standardised as the zoo's."""
    # The reference fills the zoom-out canvas with the mean colour; PIL wants 0-255 ints.
    fill = [round(255 * m) for m in IMAGENET_MEAN]
    steps: list[Any] = []
    if augment:
        steps = [
            v2.RandomPhotometricDistort(),
            v2.RandomZoomOut(fill=fill),
            v2.RandomIoUCrop(),
            v2.RandomHorizontalFlip(),
        ]
    transforms = v2.Compose([
        *steps,
        v2.Resize((IMAGE_SIZE, IMAGE_SIZE)),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        # drops boxes the crop left empty or outside, with their labels; also what
        # RandomIoUCrop requires after it
        v2.SanitizeBoundingBoxes(),
    ])  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' "loading annotations..."
        dataset = torchvision.datasets.CocoDetection(
            str(root / SPLIT),
            str(root / "annotations" / f"instances_{SPLIT}.json"),
            transforms=transforms,
        )
    return torchvision.datasets.wrap_dataset_for_transforms_v2(
        dataset, target_keys=("image_id", "boxes", "labels")
    )


def collate_lists(batch: Sequence[tuple[Tensor, dict]]) -> tuple[tuple, tuple]:
    """torchvision's detection reference's collate: a tuple of images, a tuple of targets."""
    return tuple(zip(*batch, strict=True))  # type: ignore[return-value]


def torchvision_loader(root: Path, num_workers: int) -> DataLoader:
    return DataLoader(
        torchvision_dataset(root, augment=True),
        batch_size=BATCH_SIZE,
        shuffle=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,  # as the zoo's datamodules do
        collate_fn=collate_lists,
    )


def _check_sample(side: str, image: Tensor, target: dict) -> None:
    boxes, labels = target["boxes"], target["labels"]
    assert image.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and image.dtype == torch.float32, side
    assert boxes.dtype == torch.float32 and boxes.shape == (len(labels), 4), side
    known = (labels >= 1) & (labels <= len(CATEGORIES))
    assert labels.dtype == torch.int64 and bool(known.all()), side
    inside = (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= IMAGE_SIZE).all()
    assert inside and bool((boxes[:, 2:] > boxes[:, :2]).all()), f"{side}: boxes {boxes}"


def check_agreement(root: Path, boxes_per_image: list[int], count: int = 8) -> None:
    """Both datasets hold every image of the JSON (the zoo's parse every box of it); without
    augmentation, ``count`` of them give the same image ids, labels and boxes, all the JSON's;
    with it, samples of the format a detector takes."""
    num_images = len(boxes_per_image)
    zoo = zoo_datamodule(root, "none", 0).train_dataset
    theirs = torchvision_dataset(root, augment=False)
    assert len(zoo) == len(theirs) == num_images, (len(zoo), len(theirs), num_images)
    assert sum(len(annotation.boxes) for annotation in zoo.targets) == sum(boxes_per_image)
    for index in range(min(count, num_images)):
        image, target = zoo[index]
        image_id = int(target["image_id"])
        their_image, their_target = theirs[image_id - 1]  # ids 1..N, CocoDetection's order
        assert their_target["image_id"] == image_id
        assert target["labels"].tolist() == their_target["labels"].tolist(), image_id
        assert len(target["labels"]) == boxes_per_image[image_id - 1], image_id
        torch.testing.assert_close(
            target["boxes"], their_target["boxes"].as_subclass(Tensor), atol=1e-3, rtol=0
        )
        _check_sample("zoo", image, target)
        _check_sample("torchvision", their_image, their_target)
    zoo = zoo_datamodule(root, "ssd", 0).train_dataset
    theirs = torchvision_dataset(root, augment=True)
    for index in range(min(count, num_images)):
        _check_sample("zoo, ssd", *zoo[index])
        _check_sample("torchvision, ssd", *theirs[index])


def measure(settings: Settings) -> list[Measurement]:
    """The zoo's images/s over torchvision's, per trial, with the boxes each side kept."""
    with like_a_worker(), tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        boxes_per_image = write_coco_tree(root, settings.images)
        num_boxes = sum(boxes_per_image)
        check_agreement(root, boxes_per_image)
        zoo = EpochTimer(
            lambda: zoo_datamodule(root, "ssd", settings.workers).train_dataloader(),
            settings.epochs,
        )
        theirs = EpochTimer(lambda: torchvision_loader(root, settings.workers), settings.epochs)
        measurement = throughput(
            f"COCO detection train loader, ssd, {settings.images} JPEGs ({num_boxes} boxes) -> "
            f"{IMAGE_SIZE} px, batch {BATCH_SIZE}, {settings.workers} workers",
            "zoo / torchvision CocoDetection + transforms.v2 images/s",
            zoo,
            theirs,
            settings.trials,
            {"epochs": settings.epochs, "boxes_in_json": num_boxes},
        )
    # How many boxes survive each side's augmentation, per image seen: not equal by design.
    for side, timer in (("zoo", zoo), ("torchvision", theirs)):
        measurement.details[f"{side}_boxes_per_image"] = sum(timer.boxes) / sum(timer.images)
    measurement.details["json_boxes_per_image"] = num_boxes / settings.images
    return [measurement]


def run(size: str) -> list[Measurement]:
    return measure(SETTINGS[size])


def main() -> None:
    settings = settings_from_args(__doc__.splitlines()[0], SETTINGS)
    results = measure(settings)
    d = results[0].details
    print(
        f"{settings.images} JPEG photos (longer side 480-640 px); median of {settings.trials} "
        f"trials of {settings.epochs} epochs (after one untimed), ratio zoo / torchvision:"
    )
    print_throughput(results)
    print(
        f"  boxes per image: {d['json_boxes_per_image']:.2f} in the JSON, after augmentation "
        f"zoo {d['zoo_boxes_per_image']:.2f}, torchvision {d['torchvision_boxes_per_image']:.2f}"
    )


if __name__ == "__main__":
    main()
