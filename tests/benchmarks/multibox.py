"""Anchor labelling and decoding: ``zoo.detection`` against a per-anchor Python loop.

A 32 x 32 feature map with 5 anchors per pixel (5,120 anchors; sizes 0.2, 0.272 as the course's
first TinySSD scale, plus 0.1, and ratios 1, 2, 0.5), a batch of images with a few objects each.
The loop is the course's formulas one anchor at a time in plain Python: an IoU per anchor-box
pair, the greedy assignment of Section 14.4.3.1, the offsets of 14.4.3.2, per-anchor decoding
and a Python NMS over all anchors (Section 14.4.4). Both compute the same targets and the same
detections (checked before timing); the ratio is loop time / zoo time, so higher is better. Never
a CI gate: run it by hand.

    python -m tests.benchmarks.multibox [--images 4] [--objects 3] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from zoo.detection import multibox_detection, multibox_prior, multibox_target

FEATURE_MAP = (32, 32)
SIZES = (0.2, 0.272, 0.1)
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
# Timing
# --------------------------------------------------------------------------------------------


def make_batch(num_images: int, num_objects: int, seed: int = 0):
    """Anchors, targets and predictions of a batch."""
    g = torch.Generator().manual_seed(seed)
    anchors = multibox_prior(FEATURE_MAP, SIZES, RATIOS)
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
    # per_class=True keeps its default pre_nms_top_k=1000 of the 15,360 (anchor, class) pairs;
    # the course's decoding (per_class=False) runs NMS over every anchor, like the loop.
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


def _seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(num_images: int = 4, num_objects: int = 3, repeats: int = 5) -> dict[str, float]:
    """Median seconds of one labelling + decoding step each way, and the ratios."""
    batch = make_batch(num_images, num_objects)
    check_agreement(batch)
    zoo_step(*batch, per_class=False)  # warm-up
    result = {
        "anchors": len(batch[0]),
        "zoo_course": _seconds(lambda: zoo_step(*batch, per_class=False), repeats),
        "zoo_per_class": _seconds(lambda: zoo_step(*batch, per_class=True), repeats),
        "zoo_target": _seconds(lambda: multibox_target(batch[0], batch[1]), repeats),
        "loop": _seconds(lambda: loop_step(*batch), max(1, repeats // 2)),
    }
    anchor_list = batch[0].tolist()
    target_list = [(t["boxes"].tolist(), t["labels"].tolist()) for t in batch[1]]
    result["loop_target"] = _seconds(lambda: loop_target(anchor_list, target_list), repeats)
    result["ratio_course"] = result["loop"] / result["zoo_course"]
    result["ratio_per_class"] = result["loop"] / result["zoo_per_class"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 0 = default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    r = measure(args.images, args.objects, args.repeats)
    print(
        f"multibox_target + multibox_detection, {int(r['anchors'])} anchors, {args.images} "
        f"images x {args.objects} objects, median seconds (outputs checked equal first):"
    )
    print(f"  per-anchor Python loop (course's decoding)   {r['loop']:8.4f}")
    print(
        f"  zoo, per_class=False (course's decoding)     {r['zoo_course']:8.4f}   "
        f"ratio {r['ratio_course']:7.1f}x"
    )
    print(
        f"  zoo, per_class=True (pre-NMS top 1000)       {r['zoo_per_class']:8.4f}   "
        f"ratio {r['ratio_per_class']:7.1f}x"
    )
    print(
        f"  multibox_target alone: loop {r['loop_target']:.4f}, zoo {r['zoo_target']:.4f}   "
        f"ratio {r['loop_target'] / r['zoo_target']:7.1f}x"
    )


if __name__ == "__main__":
    main()
