"""mAP evaluation: torchmetrics' ``MeanAveragePrecision`` on pycocotools against faster_coco_eval.

``tasks.ObjectDetector`` scores validation with ``MeanAveragePrecision(iou_type="bbox")``, on
faster_coco_eval when it is installed (``tasks.detection._MAP_BACKEND``) and on pycocotools
otherwise. Both are COCOeval: the same matching and the same 101-point precision curve, one in
Python and NumPy, the other in C++. This times a validation epoch's worth of metric work,
``update`` in batches of 16 images then ``compute``, on each backend, from the same seeded
detections and targets: 500 images (``full``; 200 for ``quick``, 20 for ``tiny``) of 640 x 480
pixels with 20-50 objects each in 10 classes; 80% of the objects are found, their boxes moved
by noise of 10% of their sides and their labels wrong one time in ten, plus a third as many
false detections of lower scores, so that mAP is neither 0 nor 1 (about 0.26; mAP@50 0.61).

Trials alternate between the backends (``_report.compare``); the ratio is pycocotools seconds
/ faster_coco_eval seconds, above 1 when faster_coco_eval is faster. Both must give the same
mAP and mAP@50 (to 1e-3), recorded in ``details``. Without faster_coco_eval (``pip install
faster-coco-eval``, the ``bench`` extra) it measures nothing: ``run`` raises ``_report.Skip``
saying why. Never a CI gate: ``run(size)`` feeds ``make bench``, or run it by hand.

    python -m tests.benchmarks.map_backends [--size quick] [--images N] [--trials T]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
import warnings
from collections.abc import Callable

import torch
from torchmetrics.detection import MeanAveragePrecision

from tests.benchmarks._report import SIZES, Measurement, Skip, compare, summary

GROUP = "detection internals"
WIDTH, HEIGHT, NUM_CLASSES, BATCH_SIZE = 640, 480, 10, 16
# size -> (images, trials); pycocotools takes about 3 s for 500 images on a shared 2-core CPU,
# faster_coco_eval about 0.5 s.
SETTINGS = {"tiny": (20, 1), "quick": (200, 5), "full": (500, 7)}
AGREEMENT = 1e-3  # both are COCOeval: any difference beyond rounding is a bug in one of them

Detections = list[dict[str, torch.Tensor]]


def make_data(num_images: int, seed: int = 0) -> tuple[Detections, Detections]:
    """Seeded ``(predictions, targets)`` as a detector and its data module give them."""
    g = torch.Generator().manual_seed(seed)
    corner_range = torch.tensor([WIDTH - 40.0, HEIGHT - 40.0])
    preds, targets = [], []

    def random_boxes(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        corners = torch.rand(count, 2, generator=g) * corner_range
        sizes = 10 + torch.rand(count, 2, generator=g) * 150
        ends = torch.minimum(corners + sizes, torch.tensor([float(WIDTH), float(HEIGHT)]))
        return torch.cat([corners, ends], dim=1), sizes

    def random_labels(count: int) -> torch.Tensor:
        return torch.randint(0, NUM_CLASSES, (count,), generator=g)

    for _ in range(num_images):
        count = int(torch.randint(20, 51, (), generator=g))
        boxes, sizes = random_boxes(count)
        labels = random_labels(count)
        targets.append({"boxes": boxes, "labels": labels})
        found = torch.rand(count, generator=g) < 0.8
        hits = int(found.sum())
        noise = torch.randn(hits, 4, generator=g) * 0.1 * sizes[found].repeat(1, 2)
        right = torch.rand(hits, generator=g) < 0.9
        found_labels = torch.where(right, labels[found], random_labels(hits))
        found_scores = 0.3 + 0.7 * torch.rand(hits, generator=g)
        # false detections, a third as many as the objects, scored lower on the whole
        false = count // 3
        false_boxes, _ = random_boxes(false)
        false_scores = 0.6 * torch.rand(false, generator=g)
        preds.append({
            "boxes": torch.cat([boxes[found] + noise, false_boxes]),
            "labels": torch.cat([found_labels, random_labels(false)]),
            "scores": torch.cat([found_scores, false_scores]),
        })  # fmt: skip
    return preds, targets


def evaluator(
    backend: str, preds: Detections, targets: Detections, results: list[dict]
) -> Callable[[], float]:
    """A timed function for ``compare``: a fresh metric on ``backend``, ``update`` in batches
    (as validation steps call it), ``compute``; appends the result to ``results``."""

    def timed() -> float:
        start = time.perf_counter()
        metric = MeanAveragePrecision(iou_type="bbox", backend=backend)
        for first in range(0, len(preds), BATCH_SIZE):
            last = first + BATCH_SIZE
            metric.update(preds[first:last], targets[first:last])
        result = metric.compute()
        elapsed = time.perf_counter() - start
        results.append({key: float(value) for key, value in result.items() if value.numel() == 1})
        return elapsed

    return timed


def measure(num_images: int, trials: int) -> list[Measurement]:
    """pycocotools seconds / faster_coco_eval seconds per trial.

    Raises:
        Skip: faster_coco_eval is not installed (the runner records why, not a number).
    """
    if importlib.util.find_spec("faster_coco_eval") is None:
        raise Skip(
            "faster_coco_eval is not installed (pip install faster-coco-eval, or the 'bench' "
            "extra): nothing to compare pycocotools with"
        )
    warnings.filterwarnings("ignore")  # torchmetrics' notes on many detections per image
    preds, targets = make_data(num_images)
    ours: list[dict] = []
    theirs: list[dict] = []
    # tiny's one trial is the whole smoke run: no untimed first call of each
    ratios, faster_s, pycoco_s = compare(
        evaluator("faster_coco_eval", preds, targets, ours),
        evaluator("pycocotools", preds, targets, theirs),
        trials,
        warmup=trials > 1,
    )
    for key in ("map", "map_50"):
        if abs(ours[-1][key] - theirs[-1][key]) > AGREEMENT:
            raise AssertionError(
                f"map_backends: {key} differs, faster_coco_eval {ours[-1][key]:.6f}, "
                f"pycocotools {theirs[-1][key]:.6f}; the timing would compare different work"
            )
    boxes = sum(len(t["boxes"]) for t in targets)
    detections = sum(len(p["boxes"]) for p in preds)
    return [
        Measurement(
            group=GROUP,
            name=(
                f"MeanAveragePrecision bbox, {num_images} images, {boxes} objects, {detections} "
                f"detections, {NUM_CLASSES} classes"
            ),
            compared="pycocotools / faster_coco_eval seconds (update + compute)",
            trials=ratios,
            details={
                "pycocotools_s": summary(pycoco_s),
                "faster_coco_eval_s": summary(faster_s),
                **{
                    f"{key}_{name}": result[-1][key]
                    for name, result in (("pycocotools", theirs), ("faster_coco_eval", ours))
                    for key in ("map", "map_50", "map_75")
                },
            },
        )
    ]


def run(size: str) -> list[Measurement]:
    # One thread: COCOeval's work is single-threaded, and the machine is shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return measure(*SETTINGS[size])
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="quick")
    parser.add_argument("--images", type=int)
    parser.add_argument("--trials", type=int)
    args = parser.parse_args()
    images, trials = SETTINGS[args.size]
    torch.set_num_threads(1)
    try:
        measurements = measure(args.images or images, args.trials or trials)
    except Skip as reason:
        print(f"map_backends: skipped: {reason}")
        return
    for m in measurements:
        d = m.details
        print(f"{m.name}; median of {len(m.trials)} trials, seconds:")
        print(f"  pycocotools       {d['pycocotools_s']['median']:7.3f}")
        print(f"  faster_coco_eval  {d['faster_coco_eval_s']['median']:7.3f}")
        print(f"  ratio pycocotools / faster_coco_eval {m.value:.2f}x")
        print(
            f"  mAP {d['map_pycocotools']:.4f} / {d['map_faster_coco_eval']:.4f}, mAP@50 "
            f"{d['map_50_pycocotools']:.4f} / {d['map_50_faster_coco_eval']:.4f} "
            "(pycocotools / faster_coco_eval)"
        )


if __name__ == "__main__":
    main()
