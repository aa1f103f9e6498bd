"""Anchor labelling and decoding: ``zoo.detection`` against a per-anchor Python loop.

A feature map with 5 anchors per pixel (sizes 0.2, 0.272 as the course's first TinySSD scale,
plus 0.1, and ratios 1, 2, 0.5): 32 x 32 (5,120 anchors) for ``full``, 16 x 16 for ``quick``
and 8 x 8 for ``tiny``, as the loop's NMS grows with the square of the anchors; a batch of
4 images with 3 objects each. The loop is the course's formulas one anchor at a time in plain
Python: an IoU per anchor-box pair, the greedy assignment of Section 14.4.3.1, the offsets of
14.4.3.2, per-anchor decoding and a Python NMS over all anchors (Section 14.4.4). Both compute
the same targets and the same detections (checked before timing, which also warms both up).

Trials alternate between the loop and the zoo (``_report.compare``); the ratio is loop time /
zoo time, so higher is better, for the course's decoding (``per_class=False``, the same output
as the loop) and for the zoo's default (``per_class=True``: NMS per class over the 1,000 best
(anchor, class) pairs), each with labelling (``multibox_target``) included. Never a CI gate:
``run(size)`` feeds ``make bench``, or run it by hand.

    python -m tests.benchmarks.multibox [--size quick] [--feature-map 32] [--images 4]
        [--objects 3] [--trials 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tests.benchmarks._report import SIZES, Measurement, compare, summary
from zoo.detection import multibox_detection, multibox_prior, multibox_target

FEATURE_MAP = (32, 32)
ANCHOR_SIZES = (0.2, 0.272, 0.1)
RATIOS = (1.0, 2.0, 0.5)
NUM_CLASSES = 3
NMS_THRESHOLD, SCORE_THRESHOLD = 0.5, 0.01


# --------------------------------------------------------------------------------------------
# The per-anchor loop
# --------------------------------------------------------------------------------------------


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _centre(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]


def loop_target(anchors: list, targets: list, iou_threshold: float = 0.5):
    """Offsets, masks and labels of every anchor, one anchor (and one pair) at a time."""
    offsets, masks, labels = [], [], []
    for gt_boxes, gt_labels in targets:
        iou = [[_iou(a, g) for g in gt_boxes] for a in anchors]
        assigned = [-1] * len(anchors)
        free_anchors, free_boxes = set(range(len(anchors))), set(range(len(gt_boxes)))
        while free_anchors and free_boxes:  # the greedy pass: largest IoU left wins
            best, best_i, best_j = 0.0, -1, -1
            for i in free_anchors:
                for j in free_boxes:
                    if iou[i][j] > best:
                        best, best_i, best_j = iou[i][j], i, j
            if best_i < 0:
                break
            assigned[best_i] = best_j
            free_anchors.discard(best_i)
            free_boxes.discard(best_j)
        image_offsets, image_masks, image_labels = [], [], []
        for i, anchor in enumerate(anchors):
            if assigned[i] < 0 and gt_boxes:
                j = max(range(len(gt_boxes)), key=lambda j, row=iou[i]: row[j])
                if iou[i][j] >= iou_threshold:
                    assigned[i] = j
            if assigned[i] < 0:
                image_offsets.append([0.0] * 4)
                image_masks.append([0.0] * 4)
                image_labels.append(0)
                continue
            acx, acy, aw, ah = _centre(anchor)
            bcx, bcy, bw, bh = _centre(gt_boxes[assigned[i]])
            image_offsets.append(
                [
                    10 * (bcx - acx) / aw,
                    10 * (bcy - acy) / ah,
                    5 * math.log(1e-6 + bw / aw),
                    5 * math.log(1e-6 + bh / ah),
                ]
            )
            image_masks.append([1.0] * 4)
            image_labels.append(gt_labels[assigned[i]])
        offsets.append(image_offsets)
        masks.append(image_masks)
        labels.append(image_labels)
    return offsets, masks, labels


def loop_detection(cls_probs: list, offset_preds: list, anchors: list, top_k: int = 100):
    """The course's decoding per anchor: best non-background class, decode, NMS over all."""
    detections = []
    for probs, offsets in zip(cls_probs, offset_preds, strict=True):
        candidates = []
        for anchor, prob, offset in zip(anchors, probs, offsets, strict=True):
            label = max(range(1, len(prob)), key=lambda k, p=prob: p[k])
            acx, acy, aw, ah = _centre(anchor)
            cx, cy = offset[0] * aw / 10 + acx, offset[1] * ah / 10 + acy
            w = math.exp(min(offset[2] / 5, math.log(1000 / 16))) * aw
            h = math.exp(min(offset[3] / 5, math.log(1000 / 16))) * ah
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            candidates.append((prob[label], label, box))
        candidates.sort(key=lambda c: -c[0])
        kept = []
        while candidates:
            best = candidates.pop(0)
            kept.append(best)
            candidates = [c for c in candidates if _iou(best[2], c[2]) <= NMS_THRESHOLD]
        detections.append([c for c in kept if c[0] >= SCORE_THRESHOLD][:top_k])
    return detections


# --------------------------------------------------------------------------------------------
# The batch, and one step each way
# --------------------------------------------------------------------------------------------


def make_batch(
    num_images: int,
    num_objects: int,
    seed: int = 0,
    feature_map: tuple[int, int] = FEATURE_MAP,
):
    """Anchors, targets and predictions of a batch."""
    g = torch.Generator().manual_seed(seed)
    anchors = multibox_prior(feature_map, ANCHOR_SIZES, RATIOS)
    targets = []
    for _ in range(num_images):
        xy = torch.rand(num_objects, 2, generator=g) * 0.7
        wh = torch.rand(num_objects, 2, generator=g) * 0.25 + 0.05
        labels = torch.randint(1, NUM_CLASSES + 1, (num_objects,), generator=g)
        targets.append({"boxes": torch.cat((xy, xy + wh), dim=1), "labels": labels})
    logits = torch.randn(num_images, len(anchors), NUM_CLASSES + 1, generator=g)
    cls_probs = torch.softmax(2 * logits, dim=-1)
    offset_preds = 0.5 * torch.randn(num_images, len(anchors), 4, generator=g)
    return anchors, targets, cls_probs, offset_preds


def zoo_step(anchors, targets, cls_probs, offset_preds, per_class: bool):
    target = multibox_target(anchors, targets)
    # per_class=True keeps its default pre_nms_top_k=1000 of the (anchor, class) pairs (15,360
    # at 32 x 32); the course's decoding (per_class=False) runs NMS over every anchor, like the loop.
    detections = multibox_detection(
        cls_probs, offset_preds, anchors, NMS_THRESHOLD, SCORE_THRESHOLD, per_class=per_class
    )
    return target, detections


def loop_step(anchors, targets, cls_probs, offset_preds):
    anchor_list = anchors.tolist()
    target_list = [(t["boxes"].tolist(), t["labels"].tolist()) for t in targets]
    target = loop_target(anchor_list, target_list)
    return target, loop_detection(cls_probs.tolist(), offset_preds.tolist(), anchor_list)


def check_agreement(batch) -> None:
    """The zoo and the loop compute the same targets and the course's detections."""
    (offsets, mask, labels), detections = zoo_step(*batch, per_class=False)
    (loop_offsets, loop_mask, loop_labels), loop_detections = loop_step(*batch)
    torch.testing.assert_close(offsets, torch.tensor(loop_offsets), atol=1e-4, rtol=1e-4)
    assert mask.tolist() == loop_mask and labels.tolist() == loop_labels
    for ours, theirs in zip(detections, loop_detections, strict=True):
        assert ours["labels"].tolist() == [c[1] for c in theirs]
        torch.testing.assert_close(ours["scores"], torch.tensor([c[0] for c in theirs]))
        torch.testing.assert_close(ours["boxes"], torch.tensor([c[2] for c in theirs]).view(-1, 4))


# --------------------------------------------------------------------------------------------
# Trials and measurements
# --------------------------------------------------------------------------------------------

GROUP = "detection internals"
# The vectorised code exists because the course's loop is too slow to train with: an order of
# magnitude is the bar that makes it worth being harder to read. It was 46x (course's decoding)
# and 427x (per class) at 32 x 32 on this 2-core CPU, so 10 leaves room for a loaded machine
# yet fails if a per-anchor Python loop creeps back in. (At 8 x 8, tiny's size, the zoo's fixed
# overhead weighs more and the ratio is near 20: tiny's numbers mean nothing anyway.)
GOAL = ">= 10"


@dataclass(frozen=True)
class Settings:
    """One ``run(size)``: the feature map's side, the batch, the alternating trials."""

    feature_map: int
    images: int
    objects: int
    trials: int


# The loop's seconds grow with the square of the anchors (its NMS): 0.17 s at 8 x 8, 1.7 s at
# 16 x 16 and 6-13 s at 32 x 32 here, paid once for the check and once per trial.
SETTINGS = {
    "tiny": Settings(feature_map=8, images=4, objects=3, trials=1),
    "quick": Settings(feature_map=16, images=4, objects=3, trials=5),
    "full": Settings(feature_map=32, images=4, objects=3, trials=5),
}


def _timed(fn: Callable[[], object], into: list[float]) -> None:
    start = time.perf_counter()
    fn()
    into.append(time.perf_counter() - start)


def measure(settings: Settings) -> list[Measurement]:
    """Loop time / zoo time per trial, for the course's decoding and the per-class one. A trial
    times the zoo's two variants back to back (and ``multibox_target`` alone) and the loop's
    labelling and decoding separately, for the breakdown in ``details``."""
    side = settings.feature_map
    batch = make_batch(settings.images, settings.objects, feature_map=(side, side))
    check_agreement(batch)  # also the untimed first call of each side
    anchor_list = batch[0].tolist()
    times: dict[str, list[float]] = {
        key: [] for key in ("zoo_per_class", "zoo_target", "loop_target", "loop_detection")
    }

    def zoo() -> float:
        start = time.perf_counter()
        zoo_step(*batch, per_class=False)
        course = time.perf_counter() - start
        _timed(lambda: zoo_step(*batch, per_class=True), times["zoo_per_class"])
        _timed(lambda: multibox_target(batch[0], batch[1]), times["zoo_target"])
        return course

    def loop() -> float:
        # loop_step's work in its two halves, with its conversions to lists counted in
        target_list = [(t["boxes"].tolist(), t["labels"].tolist()) for t in batch[1]]
        _timed(lambda: loop_target(batch[0].tolist(), target_list), times["loop_target"])
        probs, offsets = batch[2].tolist(), batch[3].tolist()
        _timed(lambda: loop_detection(probs, offsets, anchor_list), times["loop_detection"])
        return times["loop_target"][-1] + times["loop_detection"][-1]

    ratios, zoo_s, loop_s = compare(zoo, loop, settings.trials, warmup=False)
    setting = (
        f"{len(batch[0])} anchors ({side} x {side} x 5), {settings.images} images x "
        f"{settings.objects} objects"
    )
    details = {
        "anchors": len(batch[0]),
        "loop_s": summary(loop_s),
        "loop_target_s": summary(times["loop_target"]),
        "zoo_target_s": summary(times["zoo_target"]),
        "target_ratio": summary(
            [t / z for t, z in zip(times["loop_target"], times["zoo_target"], strict=True)]
        ),
    }
    return [
        Measurement(
            group=GROUP,
            name=f"multibox_target + multibox_detection (course's decoding), {setting}",
            compared="per-anchor Python loop / zoo, seconds (outputs checked equal)",
            trials=ratios,
            goal=GOAL,
            details={"zoo_s": summary(zoo_s), **details},
        ),
        Measurement(
            group=GROUP,
            name=f"multibox_target + multibox_detection (per_class=True), {setting}",
            compared="per-anchor Python loop (course's decoding) / zoo, seconds",
            trials=[lp / z for lp, z in zip(loop_s, times["zoo_per_class"], strict=True)],
            goal=GOAL,
            details={"zoo_s": summary(times["zoo_per_class"]), **details},
        ),
    ]


def run(size: str) -> list[Measurement]:
    # One thread: the loop has one, and a shared 2-core machine has no more to give.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return measure(SETTINGS[size])
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="quick")
    parser.add_argument("--feature-map", type=int, help="side of the feature map")
    parser.add_argument("--images", type=int)
    parser.add_argument("--objects", type=int)
    parser.add_argument("--trials", type=int)
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 0 = default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = SETTINGS[args.size]
    settings = Settings(
        feature_map=args.feature_map or chosen.feature_map,
        images=args.images or chosen.images,
        objects=args.objects or chosen.objects,
        trials=args.trials or chosen.trials,
    )
    course, per_class = measure(settings)
    d = course.details
    print(
        f"{int(d['anchors'])} anchors, {settings.images} images x {settings.objects} objects, "
        f"median of {settings.trials} trials, seconds (outputs checked equal first):"
    )
    print(f"  per-anchor Python loop (course's decoding)   {d['loop_s']['median']:8.4f}")
    for label, m in (
        ("per_class=False (course's)", course),
        ("per_class=True (top 1000)", per_class),
    ):
        print(
            f"  zoo, {label:27s}             {m.details['zoo_s']['median']:8.4f}   ratio "
            f"{m.value:7.1f}x (goal {m.goal})"
        )
    print(
        f"  multibox_target alone: loop {d['loop_target_s']['median']:.4f}, zoo "
        f"{d['zoo_target_s']['median']:.4f}   ratio {d['target_ratio']['median']:7.1f}x"
    )


if __name__ == "__main__":
    main()
