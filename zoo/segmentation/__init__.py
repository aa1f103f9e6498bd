"""Semantic segmentation (Sections 14.9-14.11): the segmenter contract (:class:`Segmenter`), the
course's FCN and its torchvision relatives, and DeepLabV3, one file per family."""

from zoo.segmentation import deeplabv3, fcn  # noqa: F401  (register the families)
from zoo.segmentation._base import Segmenter, segmentation_backbone

__all__ = ["Segmenter", "segmentation_backbone"]
