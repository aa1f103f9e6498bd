"""Object detection (Chapter 14): boxes and anchors of the course on ``torchvision.ops``, the
detector contract (:class:`Detector`) and the detector families, one file each."""

from zoo.detection import rcnn, ssd, tinyssd, yolo  # noqa: F401  (register the families)
from zoo.detection._base import Detector
from zoo.detection.anchors import (
    assign_anchors,
    multibox_detection,
    multibox_prior,
    multibox_target,
    offset_boxes,
    offset_inverse,
)
from zoo.detection.boxes import (
    box_area,
    box_center_to_corner,
    box_corner_to_center,
    box_iou,
    clip_boxes,
    convert_boxes,
    nms,
    scale_boxes,
)

__all__ = [
    "Detector",
    "assign_anchors",
    "box_area",
    "box_center_to_corner",
    "box_corner_to_center",
    "box_iou",
    "clip_boxes",
    "convert_boxes",
    "multibox_detection",
    "multibox_prior",
    "multibox_target",
    "nms",
    "offset_boxes",
    "offset_inverse",
    "scale_boxes",
]
