"""Memory of the detector's validation mAP across epochs: bounded, not growing.

``tasks.ObjectDetector`` scores validation with torchmetrics' ``MeanAveragePrecision``, whose
states are lists holding every image's boxes, scores and labels until the epoch's ``compute``;
the task resets it at the epoch's end. This runs ``trainer.validate`` on the real task several
times (the epochs), with a stand-in network that returns ``--boxes`` detections per image and
data of ``--images`` images with ``--boxes`` objects each in ``--classes`` classes (random
boxes in 512 x 512 pixels, seeded), so only the metric's path is measured: ``validation_step``
-> ``update``, ``on_validation_epoch_end`` -> ``compute`` -> ``reset``. After each epoch it
prints the process's peak resident memory (``ru_maxrss``), the current one, the seconds the
epoch took and the number of images the metric still holds (0 after the reset). Never a CI
gate: run it by hand. On a shared 2-core CPU (pycocotools, the defaults): peak RSS 837 MiB
before, 1,678 MiB after the first epoch and 1,683 MiB after the fifth; current RSS 1,095 to
1,156 MiB between epochs; 76-135 s per epoch; 0 images held after every reset.

    python -m tests.benchmarks.map_memory [--images 2000] [--boxes 100] [--epochs 5]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tasks import ObjectDetector
from tasks.detection import _MAP_BACKEND
from tests._trainers import cpu_trainer
from tests.benchmarks._report import Measurement

IMAGE_SIZE = 512


def _boxes(generator: torch.Generator, count: int, num_classes: int) -> dict[str, torch.Tensor]:
    corners = torch.rand(count, 2, generator=generator) * (IMAGE_SIZE - 64)
    sizes = 16 + torch.rand(count, 2, generator=generator) * 48
    return {
        "boxes": torch.cat([corners, corners + sizes], dim=1),
        "labels": torch.randint(1, num_classes + 1, (count,), generator=generator),
    }


class SyntheticScenes(Dataset):
    """Image ``i``: a 1-pixel stand-in image carrying its index, and ``boxes`` seeded objects."""

    def __init__(self, num_images: int, boxes: int, num_classes: int) -> None:
        self.num_images, self.boxes, self.num_classes = num_images, boxes, num_classes

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int):
        target = _boxes(torch.Generator().manual_seed(index), self.boxes, self.num_classes)
        target["iscrowd"] = torch.zeros(self.boxes, dtype=torch.long)
        return torch.full((3, 1, 1), float(index)), target


def collate(samples):
    images, targets = zip(*samples, strict=True)
    return torch.stack(images), list(targets)


class StandInDetector(nn.Module):
    """Per image, its objects moved by a few pixels (so about half match at IoU 0.5), with
    ``boxes`` scores; a zoo detector's eval-mode output format."""

    def __init__(self, boxes: int, num_classes: int) -> None:
        super().__init__()
        self.boxes, self.num_classes = boxes, num_classes
        self.unused = nn.Parameter(torch.zeros(()))  # Lightning wants a parameter

    def forward(self, images: torch.Tensor, targets=None) -> list[dict[str, torch.Tensor]]:
        detections = []
        for image in images:
            index = int(image[0, 0, 0])
            generator = torch.Generator().manual_seed(index)
            truth = _boxes(generator, self.boxes, self.num_classes)
            shift = torch.randn(self.boxes, 4, generator=torch.Generator().manual_seed(-index - 1))
            detections.append(
                {
                    "boxes": truth["boxes"] + 6 * shift,
                    "scores": torch.rand(self.boxes, generator=generator),
                    "labels": truth["labels"],
                }
            )
        return detections


def _rss_mib() -> tuple[float, float]:
    """(peak, current) resident memory of this process in MiB (Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return peak, pages * resource.getpagesize() / 2**20


def measure(num_images: int, boxes: int, num_classes: int, epochs: int, batch_size: int):
    """Yield ``(epoch, peak MiB, current MiB, seconds, images held, map_50)`` per epoch."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    names = [f"class{k}" for k in range(1, num_classes + 1)]
    task = ObjectDetector(
        StandInDetector(boxes, num_classes), num_classes=num_classes, class_names=names
    )
    data = DataLoader(
        SyntheticScenes(num_images, boxes, num_classes), batch_size=batch_size, collate_fn=collate
    )
    with tempfile.TemporaryDirectory() as root:
        trainer = cpu_trainer(root)
        for epoch in range(epochs):
            start = time.perf_counter()
            results = trainer.validate(task, data, verbose=False)
            seconds = time.perf_counter() - start
            held = len(task.val_map.detection_box)
            yield (epoch, *_rss_mib(), seconds, held, results[0]["val/map_50"])


# (images, boxes per image, epochs) per size of `make bench`.
SIZES = {"tiny": (20, 10, 2), "quick": (200, 50, 3), "full": (500, 100, 4)}


def run(size: str) -> list[Measurement]:
    """Peak memory added by the epochs after the first (bounded: near 0 MiB), and the images the
    metric still holds after each reset (0)."""
    num_images, boxes, epochs = SIZES[size]
    rows = list(measure(num_images, boxes, 10, epochs, batch_size=50))
    peaks = [row[1] for row in rows]
    return [
        Measurement(
            group="detection internals",
            name=f"validation mAP memory, {num_images} images x {boxes} boxes, {epochs} epochs",
            compared="peak RSS growth after the first epoch",
            trials=[peak - peaks[0] for peak in peaks[1:]],
            unit="MiB",
            goal="<= 50",
            higher_is_better=False,
            details={
                "backend": _MAP_BACKEND,
                "peak_mib": peaks,
                "seconds": [row[3] for row in rows],
                "images_held_after_reset": [row[4] for row in rows],
                "map_50": rows[-1][5],
            },
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--boxes", type=int, default=100, help="objects and detections per image")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=50)
    args = parser.parse_args()
    print(
        f"ObjectDetector validation mAP ({_MAP_BACKEND}), {args.images} images x {args.boxes} "
        f"objects and detections, {args.classes} classes, {args.epochs} epochs"
    )
    print(f"before: peak RSS {_rss_mib()[0]:.0f} MiB")
    for epoch, peak, current, seconds, held, map_50 in measure(
        args.images, args.boxes, args.classes, args.epochs, args.batch_size
    ):
        print(
            f"epoch {epoch}: peak RSS {peak:7.0f} MiB, current {current:7.0f} MiB, "
            f"{seconds:6.1f} s, images held after reset {held}, map_50 {map_50:.3f}"
        )


if __name__ == "__main__":
    main()
