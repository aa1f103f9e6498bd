"""Boxes and anchors (d2l Sections 14.3-14.4), pinned to the course's hand-worked results.

Expected values come from the course's printed outputs and from its formulas written out here
in plain Python, never from the library itself.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops

import zoo.detection as det

DOG = [60.0, 45.0, 378.0, 516.0]  # Section 14.3.1, pixels of the catdog image
CAT = [400.0, 112.0, 655.0, 493.0]

# Section 14.4.3.3: two ground truths and five anchors, normalised xyxy
GT_BOXES = [[0.1, 0.08, 0.52, 0.92], [0.55, 0.2, 0.9, 0.88]]
GT_LABELS = [1, 2]  # the course's classes 0 (dog) and 1 (cat), shifted to 1-based
ANCHORS = [
    [0.0, 0.1, 0.2, 0.3],
    [0.15, 0.2, 0.4, 0.4],
    [0.63, 0.05, 0.88, 0.98],
    [0.66, 0.45, 0.8, 0.8],
    [0.57, 0.3, 0.92, 0.9],
]

# Section 14.4.4: four predicted boxes, dog and cat probabilities
NMS_BOXES = [[0.1, 0.08, 0.52, 0.92], [0.08, 0.2, 0.56, 0.95], [0.15, 0.3, 0.62, 0.91]]
NMS_BOXES.append([0.55, 0.2, 0.9, 0.88])
DOG_PROBS = [0.9, 0.8, 0.7, 0.1]
CAT_PROBS = [0.1, 0.2, 0.3, 0.9]


def _iou(a, b) -> float:
    """Intersection over union of two xyxy boxes (Section 14.4.2), by hand."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _offset(anchor, box) -> list[float]:
    """Section 14.4.3.2's standardised offset of ``box`` from ``anchor``, by hand."""
    acx, acy = (anchor[0] + anchor[2]) / 2, (anchor[1] + anchor[3]) / 2
    aw, ah = anchor[2] - anchor[0], anchor[3] - anchor[1]
    bcx, bcy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    bw, bh = box[2] - box[0], box[3] - box[1]
    return [
        10 * (bcx - acx) / aw,
        10 * (bcy - acy) / ah,
        5 * math.log(1e-6 + bw / aw),
        5 * math.log(1e-6 + bh / ah),
    ]


def _greedy_reference(gt, anchors, threshold=0.5) -> list[int]:
    """Section 14.4.3.1 one pair at a time: the largest IoU left wins, its row and column go."""
    iou = [[_iou(a, g) for g in gt] for a in anchors]
    assigned = [-1] * len(anchors)
    rows, cols = set(range(len(anchors))), set(range(len(gt)))
    while rows and cols:
        best, i, j = max((iou[i][j], i, j) for i in sorted(rows) for j in sorted(cols))
        if best <= 0:
            break
        assigned[i] = j
        rows.discard(i)
        cols.discard(j)
    for i in range(len(anchors)):
        if assigned[i] < 0 and gt:
            j = max(range(len(gt)), key=lambda j: iou[i][j])
            if iou[i][j] >= threshold:
                assigned[i] = j
    return assigned


def _random_boxes(n: int, generator: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * 0.8 * scale
    wh = (torch.rand(n, 2, generator=generator) * 0.4 + 0.02) * scale
    return torch.cat((xy, xy + wh), dim=1)


# --------------------------------------------------------------------------------------------
# boxes.py (Section 14.3)
# --------------------------------------------------------------------------------------------


def test_dog_and_cat_boxes_round_trip_through_center_form():
    boxes = torch.tensor([DOG, CAT])
    centre = det.box_corner_to_center(boxes)
    x1, y1, x2, y2 = DOG
    expected = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]  # (219, 280.5, 318, 471)
    torch.testing.assert_close(centre[0], torch.tensor(expected))
    assert torch.equal(det.box_center_to_corner(centre), boxes)


@pytest.mark.parametrize("in_fmt", ["xyxy", "xywh", "cxcywh"])
@pytest.mark.parametrize("out_fmt", ["xyxy", "xywh", "cxcywh"])
def test_convert_boxes_agrees_with_torchvision_and_round_trips(in_fmt, out_fmt):
    boxes = _random_boxes(24, torch.Generator().manual_seed(0), scale=100.0).reshape(2, 3, 4, 4)
    converted = det.convert_boxes(boxes, in_fmt, out_fmt)
    assert converted.shape == (2, 3, 4, 4)  # leading dimensions kept
    expected = torchvision.ops.box_convert(boxes.reshape(-1, 4), in_fmt, out_fmt)
    torch.testing.assert_close(converted.reshape(-1, 4), expected)
    torch.testing.assert_close(det.convert_boxes(converted, out_fmt, in_fmt), boxes)


def test_convert_boxes_names_an_unknown_format():
    with pytest.raises(ValueError, match="'yxyx'.*xyxy"):
        det.convert_boxes(torch.zeros(1, 4), "yxyx", "xyxy")
    with pytest.raises(ValueError, match="last dimension"):
        det.box_corner_to_center(torch.zeros(2, 3))


def test_reexports_are_torchvisions():
    assert det.box_iou is torchvision.ops.box_iou
    assert det.nms is torchvision.ops.nms
    assert det.box_area is torchvision.ops.box_area
    assert det.box_area(torch.tensor([DOG])).item() == pytest.approx(318 * 471)


def test_scale_boxes_follows_the_resize():
    # a 480 x 640 (H x W) image resized to 240 x 160: x scales by 1/4, y by 1/2
    boxes = torch.tensor([[[64.0, 48.0, 320.0, 240.0]]])
    scaled = det.scale_boxes(boxes, (480, 640), (240, 160))
    torch.testing.assert_close(scaled, torch.tensor([[[16.0, 24.0, 80.0, 120.0]]]))
    torch.testing.assert_close(det.scale_boxes(scaled, (240, 160), (480, 640)), boxes)
    assert det.scale_boxes(torch.tensor([[2, 2, 4, 4]]), (4, 4), (2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match="from_size"):
        det.scale_boxes(boxes, (0, 640), (240, 160))


def test_clip_boxes_clamps_x_to_width_and_y_to_height():
    boxes = torch.tensor([[-5.0, -3.0, 700.0, 600.0], [10.0, 20.0, 30.0, 40.0]])
    clipped = det.clip_boxes(boxes, (561, 728))  # (H, W) of the catdog image
    torch.testing.assert_close(
        clipped, torch.tensor([[0.0, 0.0, 700.0, 561.0], [10.0, 20.0, 30.0, 40.0]])
    )


# --------------------------------------------------------------------------------------------
# multibox_prior (Section 14.4.1)
# --------------------------------------------------------------------------------------------


def test_multibox_prior_matches_the_courses_printed_anchor():
    anchors = det.multibox_prior((561, 728), sizes=[0.75, 0.5, 0.25], ratios=[1, 2, 0.5])
    assert anchors.shape == (2_042_040, 4) and anchors.dtype == torch.float32
    first = anchors.reshape(561, 728, 5, 4)[250, 250, 0]
    torch.testing.assert_close(first, torch.tensor([0.06, 0.07, 0.63, 0.82]), atol=0.005, rtol=0)


def test_multibox_prior_orders_anchors_and_centres_like_the_course():
    h, w = 3, 5
    sizes, ratios = [0.75, 0.5, 0.25], [1.0, 2.0, 0.5]
    anchors = det.multibox_prior((h, w), sizes, ratios).reshape(h, w, 5, 4)
    pairs = [(0.75, 1.0), (0.5, 1.0), (0.25, 1.0), (0.75, 2.0), (0.75, 0.5)]  # the course's order
    expected_w = torch.tensor([s * math.sqrt(r) * h / w for s, r in pairs])
    expected_h = torch.tensor([s / math.sqrt(r) for s, r in pairs])
    for i, j in [(0, 0), (1, 3), (2, 4)]:
        pixel = anchors[i, j]
        torch.testing.assert_close(pixel[:, 2] - pixel[:, 0], expected_w)
        torch.testing.assert_close(pixel[:, 3] - pixel[:, 1], expected_h)
        centre = torch.tensor([(j + 0.5) / w, (i + 0.5) / h]).expand(5, 2)
        torch.testing.assert_close((pixel[:, :2] + pixel[:, 2:]) / 2, centre)
    # ratio 1 is square in pixels of the map: width * w == height * h
    square = anchors[1, 1, 0]
    assert (square[2] - square[0]) * w == pytest.approx(float(square[3] - square[1]) * h)


def test_multibox_prior_follows_device_and_dtype():
    anchors = det.multibox_prior((2, 2), [0.5], [1.0, 2.0], dtype=torch.float64)
    assert anchors.shape == (8, 4) and anchors.dtype == torch.float64
    with pytest.raises(ValueError, match="positive size"):
        det.multibox_prior((2, 2), [], [1.0])


# --------------------------------------------------------------------------------------------
# Labelling (Section 14.4.3)
# --------------------------------------------------------------------------------------------


def test_multibox_target_reproduces_the_courses_labelling_example():
    anchors = torch.tensor(ANCHORS)
    target = {"boxes": torch.tensor(GT_BOXES), "labels": torch.tensor(GT_LABELS)}
    offsets, mask, labels = det.multibox_target(anchors, [target])
    assert offsets.shape == mask.shape == (1, 5, 4) and labels.shape == (1, 5)
    assert labels.dtype == torch.long and mask.dtype == offsets.dtype == torch.float32
    assert labels[0].tolist() == [0, 1, 2, 0, 2]  # the course's printed class labels
    assert mask[0].tolist() == [[0.0] * 4, [1.0] * 4, [1.0] * 4, [0.0] * 4, [1.0] * 4]
    # the formula by hand: anchor 1 -> dog, anchors 2 and 4 -> cat, the rest 0
    expected = [[0.0] * 4, _offset(ANCHORS[1], GT_BOXES[0]), _offset(ANCHORS[2], GT_BOXES[1])]
    expected += [[0.0] * 4, _offset(ANCHORS[4], GT_BOXES[1])]
    torch.testing.assert_close(offsets[0], torch.tensor(expected), atol=1e-4, rtol=1e-5)
    # and the course's printed numbers
    printed = torch.tensor(
        [[1.40, 10.0, 2.59, 7.18], [-1.20, 0.269, 1.68, -1.57], [-0.571, -1.00, 0.0000042, 0.626]]
    )
    torch.testing.assert_close(offsets[0, [1, 2, 4]], printed, atol=6e-3, rtol=0)


def test_assign_anchors_on_the_courses_example():
    assigned = det.assign_anchors(torch.tensor(GT_BOXES), torch.tensor(ANCHORS))
    assert assigned.tolist() == [-1, 0, 1, -1, 1] == _greedy_reference(GT_BOXES, ANCHORS)


def test_greedy_assignment_differs_from_plain_argmax():
    """Both boxes' best anchor is anchor 0: the greedy pass gives box 0 anchor 0 and then box 1
    its next best (anchor 1, IoU 5/17 < 0.5), where a plain per-anchor argmax with the threshold
    leaves box 1 without any anchor."""
    gt = [[0.0, 0.0, 10.0, 1.0], [3.0, 0.0, 13.0, 1.0]]
    anchors = [[1.0, 0.0, 11.0, 1.0], [8.0, 0.0, 20.0, 1.0]]
    iou = [[_iou(a, g) for g in gt] for a in anchors]
    assert iou[0][0] > iou[0][1] > iou[1][1] and iou[1][1] == pytest.approx(5 / 17)
    argmax = [max(range(2), key=lambda j: row[j]) for row in iou]
    argmax = [j if row[j] >= 0.5 else -1 for j, row in zip(argmax, iou, strict=True)]
    assert argmax == [0, -1]
    greedy = det.assign_anchors(torch.tensor(gt), torch.tensor(anchors))
    assert greedy.tolist() == [0, 1] == _greedy_reference(gt, anchors)


def test_a_box_that_overlaps_no_anchor_takes_none():
    """A deliberate departure from the course, whose greedy pass would pair such a box with the
    first anchor left (IoU 0) and train that anchor towards a far-away box."""
    gt = torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.8, 0.8, 0.9, 0.9]])
    anchors = torch.tensor([[0.0, 0.0, 0.2, 0.25], [0.1, 0.1, 0.3, 0.3]])
    assert det.assign_anchors(gt, anchors).tolist() == [0, -1]


def test_assignment_matches_the_one_pair_at_a_time_reference_on_random_boxes():
    g = torch.Generator().manual_seed(3)
    for num_gt in (1, 3, 7):
        gt, anchors = _random_boxes(num_gt, g), _random_boxes(40, g)
        expected = _greedy_reference(gt.tolist(), anchors.tolist(), threshold=0.3)
        assert det.assign_anchors(gt, anchors, iou_threshold=0.3).tolist() == expected
    # more boxes than anchors: min(N, A) rounds, each anchor taken once
    gt, anchors = _random_boxes(6, g), _random_boxes(3, g)
    expected = _greedy_reference(gt.tolist(), anchors.tolist())
    assert det.assign_anchors(gt, anchors).tolist() == expected


def test_a_batch_labels_each_image_as_it_would_alone_including_an_empty_one():
    g = torch.Generator().manual_seed(4)
    anchors = det.multibox_prior((4, 4), [0.4, 0.2], [1.0, 2.0, 0.5])
    targets = [
        {"boxes": _random_boxes(3, g), "labels": torch.tensor([1, 3, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
        {"boxes": _random_boxes(1, g), "labels": torch.tensor([5])},
    ]
    offsets, mask, labels = det.multibox_target(anchors, targets)
    assert offsets.shape == (3, 64, 4)
    assert not mask[1].any() and not labels[1].any() and not offsets[1].any()
    for i, target in enumerate(targets):
        alone = det.multibox_target(anchors, [target])
        for batched, single in zip((offsets, mask, labels), alone, strict=True):
            assert torch.equal(batched[i], single[0])
        assigned = torch.tensor(_greedy_reference(target["boxes"].tolist(), anchors.tolist()))
        hit = assigned >= 0
        assert torch.equal(labels[i] > 0, hit) and torch.equal(mask[i, :, 0] > 0, hit)
        if hit.any():
            assert torch.equal(labels[i, hit], target["labels"][assigned[hit]])
            expected = det.offset_boxes(anchors[hit], target["boxes"][assigned[hit]])
            torch.testing.assert_close(offsets[i, hit], expected)


def test_multibox_target_with_no_objects_anywhere():
    anchors = torch.tensor(ANCHORS, dtype=torch.float64)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    offsets, mask, labels = det.multibox_target(anchors, [empty, empty])
    assert offsets.shape == mask.shape == (2, 5, 4) and labels.shape == (2, 5)
    assert offsets.dtype == mask.dtype == torch.float64 and labels.dtype == torch.long
    assert not offsets.any() and not mask.any() and not labels.any()
    assert det.assign_anchors(torch.zeros(0, 4), anchors).tolist() == [-1] * 5


def test_multibox_target_rejects_background_labels_and_bad_shapes():
    anchors = torch.tensor(ANCHORS)
    with pytest.raises(ValueError, match="1..K"):
        det.multibox_target(
            anchors, [{"boxes": torch.tensor(GT_BOXES), "labels": torch.tensor([0, 1])}]
        )
    with pytest.raises(ValueError, match="one label per box"):
        det.multibox_target(
            anchors, [{"boxes": torch.tensor(GT_BOXES), "labels": torch.tensor([1])}]
        )
    with pytest.raises(KeyError, match="labels"):
        det.multibox_target(anchors, [{"boxes": torch.tensor(GT_BOXES)}])


def test_offset_inverse_undoes_offset_boxes():
    g = torch.Generator().manual_seed(5)
    anchors, boxes = _random_boxes(50, g), _random_boxes(50, g)
    offsets = det.offset_boxes(anchors, boxes)
    assert offsets[0].tolist() == pytest.approx(
        _offset(anchors[0].tolist(), boxes[0].tolist()), rel=1e-4
    )
    torch.testing.assert_close(det.offset_inverse(anchors, offsets), boxes, atol=1e-5, rtol=1e-5)
    batched = det.offset_inverse(anchors, offsets.expand(3, 50, 4))  # any leading dims
    torch.testing.assert_close(batched, boxes.expand(3, 50, 4), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Decoding with non-maximum suppression (Section 14.4.4)
# --------------------------------------------------------------------------------------------


def _nms_example():
    probs = torch.tensor([[0.0] * 4, DOG_PROBS, CAT_PROBS]).T[None]  # [1, A, K+1]
    return probs, torch.zeros(1, 4, 4), torch.tensor(NMS_BOXES)


def _as_set(detection) -> set[tuple[int, float, tuple[float, ...]]]:
    return {
        (int(label), round(float(score), 4), tuple(round(v, 4) for v in box.tolist()))
        for box, score, label in zip(
            detection["boxes"], detection["scores"], detection["labels"], strict=True
        )
    }


def test_course_decoding_keeps_dog_on_anchor_0_and_cat_on_anchor_3():
    probs, offsets, anchors = _nms_example()
    (out,) = det.multibox_detection(probs, offsets, anchors, nms_threshold=0.5, per_class=False)
    # the course's table: dog 0.9 on box 0, cat 0.9 on box 3, the other two rows -1
    assert _as_set(out) == {(1, 0.9, tuple(NMS_BOXES[0])), (2, 0.9, tuple(NMS_BOXES[3]))}
    assert out["labels"].dtype == torch.long and out["boxes"].shape == (2, 4)


def test_class_wise_decoding_of_the_courses_example_by_hand():
    # every (box, class) pair is a candidate; NMS within each class at IoU 0.5
    iou = lambda i, j: _iou(NMS_BOXES[i], NMS_BOXES[j])  # noqa: E731
    assert iou(0, 1) > 0.5 and iou(0, 2) > 0.5 and iou(0, 3) == 0  # dog: 0 suppresses 1 and 2
    assert iou(3, 2) < 0.5 and iou(2, 1) > 0.5 and iou(2, 0) > 0.5  # cat: 3 and 2 stay
    expected = {
        (1, 0.9, tuple(NMS_BOXES[0])),
        (1, 0.1, tuple(NMS_BOXES[3])),  # no overlap with box 0, so it survives
        (2, 0.9, tuple(NMS_BOXES[3])),
        (2, 0.3, tuple(NMS_BOXES[2])),
    }
    probs, offsets, anchors = _nms_example()
    (out,) = det.multibox_detection(probs, offsets, anchors, nms_threshold=0.5)
    assert _as_set(out) == expected
    assert out["scores"].tolist() == sorted(out["scores"].tolist(), reverse=True)
    (top2,) = det.multibox_detection(probs, offsets, anchors, top_k=2)
    assert top2["scores"].tolist() == pytest.approx([0.9, 0.9])


@pytest.mark.parametrize("per_class", [True, False])
def test_single_class_decoding_is_torchvisions_nms(per_class):
    g = torch.Generator().manual_seed(6)
    boxes = _random_boxes(300, g)
    scores = torch.rand(300, generator=g) * 0.9 + 0.05
    probs = torch.stack((1 - scores, scores), dim=1)[None]
    (out,) = det.multibox_detection(
        probs,
        torch.zeros(1, 300, 4),
        boxes,
        0.45,
        score_threshold=0.0,
        top_k=300,
        per_class=per_class,
    )
    keep = torchvision.ops.nms(boxes, scores, 0.45)
    assert torch.equal(out["scores"], scores[keep])  # the same boxes kept, in the same order
    torch.testing.assert_close(out["boxes"], boxes[keep])  # decoded: equal up to rounding
    assert (out["labels"] == 1).all()


def test_class_wise_nms_never_suppresses_across_classes():
    g = torch.Generator().manual_seed(7)
    num_anchors, num_classes = 120, 3
    anchors = _random_boxes(num_anchors, g)
    probs = torch.softmax(3 * torch.randn(2, num_anchors, num_classes + 1, generator=g), dim=-1)
    outs = det.multibox_detection(probs, torch.zeros(2, num_anchors, 4), anchors, 0.5, 0.05, 1000)
    for b, out in enumerate(outs):
        for label in range(1, num_classes + 1):
            scores = probs[b, :, label]
            candidates = (scores > 0.05).nonzero().squeeze(1)
            keep = candidates[torchvision.ops.nms(anchors[candidates], scores[candidates], 0.5)]
            mine = out["labels"] == label
            assert torch.equal(out["scores"][mine], scores[keep])
            torch.testing.assert_close(out["boxes"][mine], anchors[keep])
    # the same box twice, once per class: both survive class-wise, one survives the course's way
    box = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5]])
    probs = torch.tensor([[[0.2, 0.8, 0.0], [0.3, 0.0, 0.7]]])
    (both,) = det.multibox_detection(probs, torch.zeros(1, 2, 4), box)
    assert both["labels"].tolist() == [1, 2]
    (one,) = det.multibox_detection(probs, torch.zeros(1, 2, 4), box, per_class=False)
    assert one["labels"].tolist() == [1]


def test_detection_of_nothing_gives_empty_tensors_of_the_right_types():
    probs = torch.tensor([[[1.0, 0.0, 0.0]] * 5, [[0.0, 0.6, 0.4]] * 5])  # image 0: background
    offsets = torch.zeros(2, 5, 4, dtype=torch.float64)
    anchors = torch.tensor(ANCHORS, dtype=torch.float64)
    for per_class in (True, False):
        empty, full = det.multibox_detection(probs, offsets, anchors, per_class=per_class)
        assert empty["boxes"].shape == (0, 4) and empty["boxes"].dtype == torch.float64
        assert empty["scores"].shape == (0,) and empty["scores"].dtype == torch.float32
        assert empty["labels"].shape == (0,) and empty["labels"].dtype == torch.long
        assert len(full["scores"]) > 0
    # only the background column: no classes, no detections
    (only_bg,) = det.multibox_detection(torch.ones(1, 5, 1), offsets[:1], anchors)
    assert only_bg["boxes"].shape == (0, 4) and only_bg["labels"].dtype == torch.long
    with pytest.raises(ValueError, match="permute"):
        det.multibox_detection(probs.transpose(1, 2), offsets, anchors)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_everything_stays_on_the_gpu():
    anchors = det.multibox_prior((8, 8), [0.3, 0.15], [1.0, 2.0, 0.5], device="cuda")
    target = {"boxes": torch.tensor(GT_BOXES), "labels": torch.tensor(GT_LABELS)}  # CPU targets
    offsets, mask, labels = det.multibox_target(anchors, [target, target])
    assert offsets.is_cuda and mask.is_cuda and labels.is_cuda
    cpu = det.multibox_target(anchors.cpu(), [target, target])
    for on_gpu, on_cpu in zip((offsets, mask, labels), cpu, strict=True):
        torch.testing.assert_close(on_gpu.cpu(), on_cpu)
    probs = torch.softmax(torch.randn(2, len(anchors), 3, device="cuda"), dim=-1)
    for out in det.multibox_detection(probs, offsets, anchors):
        assert out["boxes"].is_cuda and out["labels"].is_cuda and len(out["labels"]) > 0
