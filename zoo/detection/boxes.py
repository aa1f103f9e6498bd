"""Bounding boxes: formats, areas, IoU, resizing and clipping (Section 14.3).

The course writes a box either by its corners ``(x1, y1, x2, y2)`` ("xyxy", the format every
detector here consumes and returns) or by its centre, width and height ``(cx, cy, w, h)``
("cxcywh", the format the anchor offsets of Section 14.4.3 are defined in). Everything below takes
boxes in the last dimension, with any leading dimensions, and is a thin layer over
``torchvision.ops`` where torchvision has the operation.
"""

from __future__ import annotations

from torch import Tensor
from torchvision.ops import box_area, box_convert, box_iou, clip_boxes_to_image, nms

__all__ = [
    "BOX_FORMATS",
    "box_area",
    "box_center_to_corner",
    "box_corner_to_center",
    "box_iou",
    "clip_boxes",
    "convert_boxes",
    "nms",
    "scale_boxes",
]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def _check_last_dim(boxes: Tensor, name: str = "boxes") -> None:
    if boxes.shape[-1:] != (4,):
        raise ValueError(
            f"{name} must have 4 coordinates in the last dimension, got shape {tuple(boxes.shape)}; "
            "reshape to [..., 4]"
        )


def convert_boxes(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"`` (Section 14.3.1).

    Args:
        boxes: ``[..., 4]`` boxes in ``in_fmt``.
        in_fmt: format of ``boxes``.
        out_fmt: format wanted.

    Returns:
        ``[..., 4]`` boxes in ``out_fmt`` (a new tensor, even when the formats agree).
    """
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"unknown box format {name}={fmt!r}; choose one of {BOX_FORMATS}")
    _check_last_dim(boxes)
    return box_convert(boxes, in_fmt=in_fmt, out_fmt=out_fmt)


def box_corner_to_center(boxes: Tensor) -> Tensor:
    """``(x1, y1, x2, y2)`` to ``(cx, cy, w, h)`` over the last dimension (Section 14.3.1)."""
    return convert_boxes(boxes, "xyxy", "cxcywh")


def box_center_to_corner(boxes: Tensor) -> Tensor:
    """``(cx, cy, w, h)`` to ``(x1, y1, x2, y2)`` over the last dimension (Section 14.3.1)."""
    return convert_boxes(boxes, "cxcywh", "xyxy")


def _check_size(size: tuple[int, int], name: str) -> tuple[int, int]:
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"{name} must be a positive (height, width) pair, got {size!r}")
    return int(size[0]), int(size[1])


def scale_boxes(boxes: Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> Tensor:
    """The same xyxy boxes after their image is resized from ``from_size`` to ``to_size``.

    Args:
        boxes: ``[..., 4]`` xyxy boxes in pixels of an image of ``from_size``.
        from_size: ``(height, width)`` of the image the boxes are given in.
        to_size: ``(height, width)`` of the resized image.

    Returns:
        ``[..., 4]`` xyxy boxes in pixels of the resized image (floating point).
    """
    _check_last_dim(boxes)
    (h0, w0), (h1, w1) = _check_size(from_size, "from_size"), _check_size(to_size, "to_size")
    boxes = boxes if boxes.is_floating_point() else boxes.float()
    scale = boxes.new_tensor([w1 / w0, h1 / h0, w1 / w0, h1 / h0])
    return boxes * scale


def clip_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clamp xyxy boxes into an image of ``size = (height, width)``: x into [0, W], y into [0, H].

    Args:
        boxes: ``[..., 4]`` xyxy boxes in pixels.
        size: ``(height, width)`` of the image.

    Returns:
        ``[..., 4]`` clipped boxes (boxes entirely outside collapse to zero width or height).
    """
    _check_last_dim(boxes)
    return clip_boxes_to_image(boxes, _check_size(size, "size"))
