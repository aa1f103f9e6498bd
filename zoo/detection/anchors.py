"""Anchor boxes: generation, labelling, offset coding and decoding with NMS (Section 14.4).

All boxes here are xyxy in the anchors' frame, normally normalised to [0, 1] (multiply by the
image's width and height for pixels). The course's functions work one image and one anchor at a
time in places; these do the same arithmetic on whole tensors: the greedy assignment runs
``min(N, A)`` rounds of one argmax over the ``[B, A, N]`` IoU tensor of the whole batch, and
decoding runs one (class-wise) NMS for the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_iou

from zoo.detection.boxes import box_center_to_corner, box_corner_to_center

__all__ = [
    "assign_anchors",
    "multibox_detection",
    "multibox_prior",
    "multibox_target",
    "offset_boxes",
    "offset_inverse",
]

# Section 14.4.3.2: offsets are standardised with means 0 and these standard deviations.
CENTRE_STD = 0.1
SIZE_STD = 0.2
# Decoding clamps log-size offsets as torchvision's BoxCoder does, so that an untrained head
# cannot overflow exp() into inf boxes (which NMS would turn into NaN IoUs): at most 62.5x.
_MAX_LOG_SCALE = math.log(1000.0 / 16)


# --------------------------------------------------------------------------------------------
# Generating anchors (Section 14.4.1)
# --------------------------------------------------------------------------------------------


def multibox_prior(
    feature_map_size: tuple[int, int],
    sizes: Sequence[float],
    ratios: Sequence[float],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Anchors centred on every pixel of a feature map (Section 14.4.1).

    Each pixel gets ``n + m - 1`` anchors from ``n`` sizes and ``m`` ratios, in the course's
    order: ``(s1, r1), ..., (sn, r1), (s1, r2), ..., (s1, rm)``. An anchor of size ``s`` and ratio
    ``r`` has height ``s / sqrt(r)`` and width ``s * sqrt(r) * h / w`` (the course's correction,
    so that ratio 1 is square in pixels of an ``h x w`` map), both relative to the map.

    Args:
        feature_map_size: ``(h, w)`` of the feature map (or the image) the anchors tile.
        sizes: anchor scales in (0, 1], relative to the map.
        ratios: width-to-height ratios, > 0.
        device: where to build the anchors.
        dtype: floating dtype of the anchors.

    Returns:
        ``[h * w * (n + m - 1), 4]`` normalised xyxy anchors, pixels row-major, pixel ``(i, j)``
        centred at ``((j + 0.5) / w, (i + 0.5) / h)``.
    """
    if len(feature_map_size) != 2 or min(feature_map_size) <= 0:
        raise ValueError(
            f"feature_map_size must be a positive (height, width) pair, got {feature_map_size!r}"
        )
    sizes, ratios = [float(s) for s in sizes], [float(r) for r in ratios]
    if not sizes or not ratios or min(sizes) <= 0 or min(ratios) <= 0:
        raise ValueError(
            f"multibox_prior needs at least one positive size and ratio, got sizes={sizes}, "
            f"ratios={ratios}"
        )
    height, width = int(feature_map_size[0]), int(feature_map_size[1])
    # The n + m - 1 (size, ratio) pairs that contain s1 or r1, in the course's order.
    pairs = [(s, ratios[0]) for s in sizes] + [(sizes[0], r) for r in ratios[1:]]
    half_extents = torch.tensor(
        [
            [-w / 2, -h / 2, w / 2, h / 2]
            for w, h in ((s * math.sqrt(r) * height / width, s / math.sqrt(r)) for s, r in pairs)
        ],
        device=device,
        dtype=dtype,
    )
    centre_y = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    centre_x = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(centre_y, centre_x, indexing="ij")
    centres = torch.stack((grid_x, grid_y, grid_x, grid_y), dim=-1).reshape(-1, 1, 4)
    return (centres + half_extents).reshape(-1, 4)


# --------------------------------------------------------------------------------------------
# Labelling anchors (Section 14.4.3)
# --------------------------------------------------------------------------------------------


def _check_boxes(boxes: Tensor, name: str) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must be [N, 4] xyxy boxes, got shape {tuple(boxes.shape)}")


def _check_fraction(value: float, name: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


def _greedy_assign(iou: Tensor, iou_threshold: float) -> Tensor:
    """Ground-truth index per anchor (-1 = background) from a ``[B, A, N]`` IoU tensor whose
    padding columns hold -1 (Section 14.4.3.1)."""
    batch, num_anchors, num_gt = iou.shape
    assigned = iou.new_full((batch, num_anchors), -1, dtype=torch.long)
    if num_gt == 0 or num_anchors == 0:
        return assigned
    # The threshold rule reads the IoUs before any row or column is discarded. An IoU of 0 is
    # no match here either: with iou_threshold 0 an anchor overlapping nothing would take a box
    # it does not touch (an empty or inverted one too, whose log-size offset is NaN).
    best_iou, best_gt = iou.max(dim=2)
    overlaps = (best_iou >= iou_threshold) & (best_iou > 0)
    by_threshold = torch.where(overlaps, best_gt, assigned)
    work = iou.clone()
    flat = work.view(batch, num_anchors * num_gt)
    rows = torch.arange(batch, device=iou.device)
    for _ in range(min(num_gt, num_anchors)):
        index = flat.argmax(dim=1)  # the first of equal maxima, like the course's argmax
        found = flat.gather(1, index[:, None]).squeeze(1) > 0
        anchor, gt = index // num_gt, index % num_gt
        # A pair of IoU 0 is no match: the course would still pair a box that overlaps no
        # anchor left with the first anchor left; we leave both unassigned instead.
        assigned[rows, anchor] = torch.where(found, gt, assigned[rows, anchor])
        # Discard the anchor's row and the box's column (harmless when nothing was found:
        # everything left is <= 0 then).
        work[rows, anchor, :] = -1
        work[rows, :, gt] = -1
    return torch.where(assigned >= 0, assigned, by_threshold)


def assign_anchors(gt_boxes: Tensor, anchors: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """The course's greedy assignment of ground-truth boxes to anchors (Section 14.4.3.1).

    Repeatedly take the largest IoU left in the ``A x N`` matrix, assign that pair and discard
    its row and column; then each anchor still unassigned takes its best ground truth if that
    IoU is at least ``iou_threshold`` and above 0 (an anchor never takes a box it misses).
    Every box that overlaps some anchor thus gets at least one anchor, even when its best
    anchor is also another box's best.

    Args:
        gt_boxes: ``[N, 4]`` xyxy ground-truth boxes.
        anchors: ``[A, 4]`` xyxy anchors, in the same frame.
        iou_threshold: IoU from which an unassigned anchor takes its best box.

    Returns:
        ``[A]`` long: index of the box assigned to each anchor, -1 for background.
    """
    _check_boxes(gt_boxes, "gt_boxes")
    _check_boxes(anchors, "anchors")
    _check_fraction(iou_threshold, "iou_threshold")
    iou = box_iou(anchors, gt_boxes.to(device=anchors.device, dtype=anchors.dtype))
    return _greedy_assign(iou[None], iou_threshold)[0]


def offset_boxes(anchors: Tensor, assigned_boxes: Tensor, eps: float = 1e-6) -> Tensor:
    """Offsets of boxes from their anchors, standardised (Section 14.4.3.2).

    ``(10 (cx_b - cx_a) / w_a, 10 (cy_b - cy_a) / h_a, 5 log(eps + w_b / w_a),
    5 log(eps + h_b / h_a))``: means 0, standard deviations 0.1 (centres) and 0.2 (log sizes).

    Args:
        anchors: ``[A, 4]`` xyxy anchors (or any shape broadcasting with ``assigned_boxes``).
        assigned_boxes: ``[..., A, 4]`` xyxy boxes, one per anchor.
        eps: keeps the log finite for a zero-size box.

    Returns:
        ``[..., A, 4]`` offsets.
    """
    anchor = box_corner_to_center(anchors)
    box = box_corner_to_center(assigned_boxes)
    centre = (box[..., :2] - anchor[..., :2]) / anchor[..., 2:] / CENTRE_STD
    size = torch.log(eps + box[..., 2:] / anchor[..., 2:]) / SIZE_STD
    return torch.cat((centre, size), dim=-1)


def offset_inverse(anchors: Tensor, offset_preds: Tensor) -> Tensor:
    """Boxes from their anchors and (predicted) offsets: the inverse of :func:`offset_boxes`
    (Section 14.4.4).

    Args:
        anchors: ``[A, 4]`` xyxy anchors.
        offset_preds: ``[..., A, 4]`` offsets; log-size offsets are clamped at log(62.5) / 0.2
            so that wild predictions of an untrained head stay finite.

    Returns:
        ``[..., A, 4]`` xyxy boxes.
    """
    anchor = box_corner_to_center(anchors)
    centre = offset_preds[..., :2] * CENTRE_STD * anchor[..., 2:] + anchor[..., :2]
    log_scale = (offset_preds[..., 2:] * SIZE_STD).clamp(max=_MAX_LOG_SCALE)
    size = torch.exp(log_scale) * anchor[..., 2:]
    return box_center_to_corner(torch.cat((centre, size), dim=-1))


def multibox_target(
    anchors: Tensor, targets: Sequence[Mapping[str, Tensor]], iou_threshold: float = 0.5
) -> tuple[Tensor, Tensor, Tensor]:
    """Training targets of every anchor for a batch of images (Section 14.4.3).

    The course's ``multibox_target`` with 1-based labels (the course adds 1 to its 0-based
    classes; ours arrive 1-based, 0 being background) and unflattened shapes.

    Args:
        anchors: ``[A, 4]`` xyxy anchors, shared by the batch.
        targets: one ``{"boxes": [N, 4] xyxy in the anchors' frame, "labels": [N] long in
            1..K}`` per image; ``N`` may be 0.
        iou_threshold: IoU from which an anchor not taken by the greedy pass takes its best box.

    Returns:
        ``(box_offsets [B, A, 4], box_mask [B, A, 4], class_labels [B, A])``: offsets to the
        assigned boxes (0 for background anchors), 1.0 where an anchor was assigned an object,
        and the assigned box's label (long, 0 = background).
    """
    _check_boxes(anchors, "anchors")
    _check_fraction(iou_threshold, "iou_threshold")
    device, dtype = anchors.device, anchors.dtype
    num_images, num_anchors = len(targets), anchors.shape[0]
    boxes, labels = [], []
    for i, target in enumerate(targets):
        if "boxes" not in target or "labels" not in target:
            raise KeyError(f"targets[{i}] needs 'boxes' and 'labels', got keys {sorted(target)}")
        _check_boxes(target["boxes"], f"targets[{i}]['boxes']")
        if target["labels"].shape != target["boxes"].shape[:1]:
            raise ValueError(
                f"targets[{i}] has {target['boxes'].shape[0]} boxes but labels of shape "
                f"{tuple(target['labels'].shape)}; give one label per box"
            )
        boxes.append(target["boxes"].to(device=device, dtype=dtype))
        labels.append(target["labels"].to(device=device, dtype=torch.long))
    box_offsets = anchors.new_zeros(num_images, num_anchors, 4)
    class_labels = torch.zeros(num_images, num_anchors, dtype=torch.long, device=device)
    most = max((len(b) for b in boxes), default=0)
    if most == 0:
        return box_offsets, box_offsets.clone(), class_labels
    if bool((torch.cat(labels) < 1).any()):
        raise ValueError(
            "target labels must be classes 1..K (0 is the background): shift 0-based class "
            "indices by 1 before calling multibox_target"
        )
    # Pad to the largest N so that the whole batch is assigned in one pass; padding columns get
    # IoU -1, below anything a real box can reach.
    gt = anchors.new_zeros(num_images, most, 4)
    gt_labels = torch.zeros(num_images, most, dtype=torch.long, device=device)
    real = torch.zeros(num_images, most, dtype=torch.bool, device=device)
    for i, (image_boxes, image_labels) in enumerate(zip(boxes, labels, strict=True)):
        gt[i, : len(image_boxes)] = image_boxes
        gt_labels[i, : len(image_labels)] = image_labels
        real[i, : len(image_boxes)] = True
    iou = box_iou(anchors[None], gt).to(dtype)  # [B, A, N]
    iou = torch.where(real[:, None, :], iou, -1.0)
    assigned = _greedy_assign(iou, iou_threshold)
    matched = assigned >= 0
    index = assigned.clamp(min=0)
    matched_boxes = gt.gather(1, index[..., None].expand(-1, -1, 4))
    class_labels = torch.where(matched, gt_labels.gather(1, index), class_labels)
    box_offsets = torch.where(matched[..., None], offset_boxes(anchors, matched_boxes), box_offsets)
    box_mask = matched[..., None].expand(-1, -1, 4).to(dtype)
    return box_offsets, box_mask, class_labels


# --------------------------------------------------------------------------------------------
# Predicting boxes with non-maximum suppression (Section 14.4.4)
# --------------------------------------------------------------------------------------------


def multibox_detection(
    cls_probs: Tensor,
    offset_preds: Tensor,
    anchors: Tensor,
    nms_threshold: float = 0.5,
    score_threshold: float = 0.01,
    top_k: int = 100,
    per_class: bool = True,
    pre_nms_top_k: int = 1000,
) -> list[dict[str, Tensor]]:
    """Detections from class probabilities and offsets of every anchor (Section 14.4.4).

    Note the layout: ``cls_probs`` is ``[B, A, K + 1]`` (the course's is ``[B, K + 1, A]``) and
    ``offset_preds`` is ``[B, A, 4]`` (the course's is flattened to ``[B, A * 4]``).

    ``per_class=True`` (the default, better on our data): every (anchor, class) pair with a
    probability above ``score_threshold`` is a candidate, the ``pre_nms_top_k`` best of each
    image are kept, then NMS runs class by class (``torchvision.ops.batched_nms``), so a box
    never suppresses one of another class. ``per_class=False`` is the course's decoding: each
    anchor takes its most likely non-background class, NMS runs over all boxes of an image
    regardless of class (``torchvision.ops.nms``), and scores below ``score_threshold`` are
    dropped.

    Args:
        cls_probs: ``[B, A, K + 1]`` probabilities; column 0 is the background.
        offset_preds: ``[B, A, 4]`` predicted offsets (:func:`offset_boxes`).
        anchors: ``[A, 4]`` xyxy anchors.
        nms_threshold: boxes overlapping a better one with IoU above this are suppressed.
        score_threshold: the least score a detection may have.
        top_k: most detections returned per image.
        per_class: class-wise candidates and NMS (True) or the course's decoding (False).
        pre_nms_top_k: candidates per image entering NMS when ``per_class`` is True.

    Returns:
        One ``{"boxes" [k, 4] xyxy in the anchors' frame, "scores" [k], "labels" [k] long in
        1..K}`` per image, sorted by decreasing score, ``k <= top_k``.
    """
    if cls_probs.dim() != 3 or offset_preds.shape != (*cls_probs.shape[:2], 4):
        raise ValueError(
            f"expected cls_probs [B, A, K+1] and offset_preds [B, A, 4], got "
            f"{tuple(cls_probs.shape)} and {tuple(offset_preds.shape)}; a [B, K+1, A] layout "
            "needs .permute(0, 2, 1), a flat [B, A*4] one .reshape(B, -1, 4)"
        )
    _check_boxes(anchors, "anchors")
    if anchors.shape[0] != cls_probs.shape[1]:
        raise ValueError(
            f"{anchors.shape[0]} anchors but predictions for {cls_probs.shape[1]}; generate the "
            "anchors for the same feature maps as the predictions"
        )
    _check_fraction(nms_threshold, "nms_threshold")
    if top_k < 1 or pre_nms_top_k < 1:
        raise ValueError(f"top_k and pre_nms_top_k must be >= 1, got {top_k}, {pre_nms_top_k}")
    num_images, num_anchors, num_columns = cls_probs.shape
    num_classes = num_columns - 1
    decoded = offset_inverse(anchors, offset_preds)  # [B, A, 4]
    scores = cls_probs[..., 1:]
    if num_classes < 1:
        image = torch.zeros(0, dtype=torch.long, device=cls_probs.device)
        return _split_by_image(
            num_images, image, image, decoded.new_zeros(0, 4), scores.new_zeros(0), image, top_k
        )
    if per_class:
        top, index = scores.reshape(num_images, -1).topk(
            min(pre_nms_top_k, num_anchors * num_classes), dim=1
        )
        candidate = top > score_threshold
        image = torch.arange(num_images, device=cls_probs.device)[:, None].expand_as(index)
        image, index, score = image[candidate], index[candidate], top[candidate]
        anchor, label = index // num_classes, index % num_classes + 1
        group = image * num_columns + label  # NMS within each (image, class)
    else:
        best, label = scores.max(dim=2)
        # Dropping low scores before NMS instead of after changes nothing: NMS visits boxes by
        # decreasing score, so a box below the threshold can only suppress boxes below it too.
        image, anchor = torch.nonzero(best >= score_threshold, as_tuple=True)
        score, label = best[image, anchor], label[image, anchor] + 1
        group = image  # NMS within each image, across classes, as the course's
    boxes = decoded[image, anchor]
    keep = batched_nms(boxes, score.to(boxes.dtype), group, nms_threshold)
    return _split_by_image(num_images, image[keep], keep, boxes, score, label, top_k)


def _split_by_image(
    num_images: int,
    image: Tensor,
    keep: Tensor,
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    top_k: int,
) -> list[dict[str, Tensor]]:
    """One dict per image from the kept candidates (``keep``, sorted by decreasing score, with
    their image indices ``image``)."""
    # A stable sort by image keeps each image's detections in decreasing score.
    order = torch.sort(image, stable=True).indices
    keep = keep[order]
    counts = torch.bincount(image, minlength=num_images).tolist()
    detections = []
    for chunk in keep.split(counts):
        chunk = chunk[:top_k]
        detections.append({"boxes": boxes[chunk], "scores": scores[chunk], "labels": labels[chunk]})
    return detections
