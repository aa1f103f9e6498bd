"""TinySSD, the course's single-shot multibox detector (Section 14.7; Liu et al., 2016).

A base network turns the image into a feature map at stride 8; down-sampling blocks halve it
again and again; a global max-pool ends at 1x1. At every one of these scales, anchors from
:func:`~zoo.detection.anchors.multibox_prior` are centred on each pixel, and two 3x3 convolutions
predict, per anchor, the class scores (background first) and the four offsets of
:func:`~zoo.detection.anchors.offset_boxes`. Training labels the anchors with
:func:`~zoo.detection.anchors.multibox_target`; detection decodes with
:func:`~zoo.detection.anchors.multibox_detection`.

The base network is the course's three down-sampling blocks by default, or the stages of any zoo
classifier (``backbone="resnet18"``, optionally pretrained), tapped through its ``feature_info``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo._registry import register_model
from zoo.backbones import FeatureExtractor, backbone_stages, pick_taps
from zoo.classification._base import FeatureInfo
from zoo.detection._base import Detections, Detector, Targets, stack_images
from zoo.detection.anchors import multibox_detection, multibox_prior, multibox_target
from zoo.layers import vgg_block

__all__ = ["COURSE_RATIOS", "COURSE_SIZES", "TinySSD", "down_sample_blk", "tinyssd"]

# Section 14.7.2: five scales, sizes growing linearly from 0.2 to 0.88 with the geometric mean of
# neighbours as the second size; ratios 1, 2 and 1/2 everywhere: 2 + 3 - 1 = 4 anchors per pixel.
COURSE_SIZES = ((0.2, 0.272), (0.37, 0.447), (0.54, 0.619), (0.71, 0.79), (0.88, 0.961))
COURSE_RATIOS = ((1.0, 2.0, 0.5),) * 5


def down_sample_blk(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU layers and a 2x2 max-pool: halves height and width (Section 14.7.1.3).

    It is the VGG block with batch norm (Section 8.2), so it is that block.
    """
    return vgg_block(2, in_channels, out_channels, batch_norm=True)


def _course_base_net(in_channels: int) -> tuple[FeatureExtractor, list[int], int]:
    channels = [in_channels, 16, 32, 64]
    stages = nn.Sequential(
        OrderedDict(
            (f"block{i + 1}", down_sample_blk(channels[i], channels[i + 1])) for i in range(3)
        )
    )
    return FeatureExtractor(stages, [FeatureInfo("block3", 64, 8)]), [64], 8


def _backbone_taps(
    name: str, in_channels: int, weights: str | None, max_taps: int
) -> tuple[FeatureExtractor, list[int], int]:
    """A zoo classifier's stages, tapped at the deepest stage of each stride from 8 on; their
    channels; the stride of the deepest tap."""
    stages, info = backbone_stages(name, in_channels=in_channels, weights=weights, owner="TinySSD")
    strides = sorted({item.stride for item in info if item.stride >= 8})[-max_taps:]
    if not strides:
        raise ValueError(f"TinySSD: backbone {name!r} has no feature map at stride 8 or more")
    extractor = FeatureExtractor(stages, pick_taps(info, strides, "TinySSD"))
    return extractor, list(extractor.out_channels), strides[-1]


class TinySSD(Detector):
    """Multiscale anchors, a class predictor and a box predictor per scale (Section 14.7).

    Args:
        num_classes: object classes, background excluded.
        in_channels: image channels.
        backbone: a zoo classifier's registry name to use instead of the course's base network;
            its stages at strides 8, 16, 32 are tapped (as many as the scales leave room for)
            and down-sampling blocks continue from the deepest.
        backbone_weights: pretrained weights for the backbone (``"torchvision"``, a file, a URL).
        sizes, ratios: anchor sizes and ratios per scale (fractions of the image side); their
            number sets the number of scales (the last one is a global max-pool to 1x1).
        nms_threshold, score_threshold, detections_per_image, per_class_nms: decoding, see
            :func:`~zoo.detection.anchors.multibox_detection`. ``per_class_nms=False`` is the
            course's decoding (one class per anchor, NMS across classes).
        iou_threshold: anchors whose best IoU with a ground truth reaches it are labelled with it.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: str | None = None,
        backbone_weights: str | None = None,
        sizes: Sequence[Sequence[float]] = COURSE_SIZES,
        ratios: Sequence[Sequence[float]] = COURSE_RATIOS,
        nms_threshold: float = 0.5,
        score_threshold: float = 0.01,
        detections_per_image: int = 100,
        per_class_nms: bool = True,
        iou_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"TinySSD: num_classes={num_classes} must be at least 1")
        if len(sizes) != len(ratios) or len(sizes) < 2:
            raise ValueError(
                f"TinySSD: {len(sizes)} scales of sizes and {len(ratios)} of ratios; give the "
                "same number (two or more) of each, one entry per scale"
            )
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.sizes = [tuple(map(float, s)) for s in sizes]
        self.ratios = [tuple(map(float, r)) for r in ratios]
        self.nms_threshold = nms_threshold
        self.score_threshold = score_threshold
        self.detections_per_image = detections_per_image
        self.per_class_nms = per_class_nms
        self.iou_threshold = iou_threshold

        num_scales = len(sizes)
        if backbone is None:
            if backbone_weights is not None:
                raise ValueError("TinySSD: backbone_weights needs a backbone (e.g. resnet18)")
            self.base_net, channels, self.base_stride = _course_base_net(in_channels)
        else:
            self.base_net, channels, self.base_stride = _backbone_taps(
                backbone, in_channels, backbone_weights, max_taps=num_scales - 1
            )
        # The course's blocks 1-3 (64 -> 128, then 128 -> 128) and its global max-pool.
        blocks: list[nn.Module] = []
        while len(channels) < num_scales - 1:
            blocks.append(down_sample_blk(channels[-1], 128))
            channels.append(128)
        blocks.append(nn.AdaptiveMaxPool2d((1, 1)))
        channels.append(channels[-1])
        self.blocks = nn.ModuleList(blocks)

        self.scale_channels = channels
        self.anchors_per_pixel = [
            len(s) + len(r) - 1 for s, r in zip(self.sizes, self.ratios, strict=True)
        ]
        self.cls_predictors = self._predictors(num_classes + 1)
        self.bbox_predictors = self._predictors(4)
        self._anchor_cache: dict[tuple, Tensor] = {}

    def _predictors(self, outputs_per_anchor: int) -> nn.ModuleList:
        """One 3x3 convolution per scale, ``outputs_per_anchor`` channels for each anchor."""
        pairs = zip(self.scale_channels, self.anchors_per_pixel, strict=True)
        return nn.ModuleList(
            nn.Conv2d(c, a * outputs_per_anchor, kernel_size=3, padding=1) for c, a in pairs
        )

    def get_classifier(self) -> nn.ModuleList:
        """The class predictors of every scale: what a new set of classes replaces."""
        return self.cls_predictors

    def reset_classifier(self, num_classes: int) -> None:
        """Fresh class predictors for ``num_classes`` object classes (fine-tuning on new data,
        e.g. through :func:`zoo.adapt`); the base network, blocks and box predictors stay."""
        if num_classes < 1:
            raise ValueError(f"TinySSD: num_classes={num_classes} must be at least 1")
        device = self.bbox_predictors[0].weight.device
        self.num_classes = num_classes
        self.cls_predictors = self._predictors(num_classes + 1).to(device)

    def num_classes_in(self, state) -> int:
        return state["cls_predictors.0.weight"].shape[0] // self.anchors_per_pixel[0] - 1

    @property
    def min_size(self) -> int:
        """The smallest input side: every down-sampling block needs a map of 2 pixels or more."""
        return self.base_stride * 2 ** (len(self.blocks) - 1)

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        """The maps of every scale, finest first."""
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"TinySSD with {len(self.sizes)} scales needs images of at least "
                f"{self.min_size} x {self.min_size} pixels, got {tuple(x.shape[-2:])}: raise "
                "the data module's image_size"
            )
        maps = list(self.base_net(x).values())
        for block in self.blocks:
            maps.append(block(maps[-1]))
        return maps

    def anchors_for(self, maps: Sequence[Tensor]) -> Tensor:
        """``[A, 4]`` normalised xyxy anchors of all scales, in the predictions' order."""
        # float32 whatever the maps' dtype: under bf16-mixed, bf16 anchors would move box
        # edges by a few thousandths and match and decode with them.
        key = (tuple(m.shape[-2:] for m in maps), maps[0].device)
        if key not in self._anchor_cache:
            self._anchor_cache.clear()  # one input size at a time is the norm
            self._anchor_cache[key] = torch.cat(
                [
                    multibox_prior(tuple(m.shape[-2:]), s, r, device=m.device)
                    for m, s, r in zip(maps, self.sizes, self.ratios, strict=True)
                ]
            )
        return self._anchor_cache[key]

    def forward_head(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(anchors [A, 4], class logits [B, A, K+1], offsets [B, A, 4])`` for a batch."""
        maps = self.feature_maps(x)
        batch = x.shape[0]
        # Channels last, then flattened: pixel-major with the anchors of a pixel together, the
        # order of multibox_prior (Section 14.7.1.2's concatenation of predictions).
        cls = [p(m).permute(0, 2, 3, 1).reshape(batch, -1, self.num_classes + 1)
               for p, m in zip(self.cls_predictors, maps, strict=True)]  # fmt: skip
        box = [p(m).permute(0, 2, 3, 1).reshape(batch, -1, 4)
               for p, m in zip(self.bbox_predictors, maps, strict=True)]  # fmt: skip
        return self.anchors_for(maps), torch.cat(cls, dim=1), torch.cat(box, dim=1)

    def forward(
        self, images: Tensor | Sequence[Tensor], targets: Targets | None = None
    ) -> dict[str, Tensor] | Detections:
        x = stack_images(images, "TinySSD")
        height, width = x.shape[-2:]
        scale = x.new_tensor([width, height, width, height])
        anchors, cls_logits, offsets = self.forward_head(x)
        if self.training:
            targets = self.check_targets(targets)
            normalised = [{"boxes": t["boxes"] / scale, "labels": t["labels"]} for t in targets]
            return self.loss(anchors, cls_logits, offsets, normalised)
        detections = multibox_detection(
            cls_logits.softmax(dim=-1),
            offsets,
            anchors,
            nms_threshold=self.nms_threshold,
            score_threshold=self.score_threshold,
            top_k=self.detections_per_image,
            per_class=self.per_class_nms,
        )
        for detection in detections:
            boxes = detection["boxes"] * scale
            detection["boxes"] = torch.minimum(boxes.clamp(min=0), scale)
        return detections

    def loss(
        self, anchors: Tensor, cls_logits: Tensor, offsets: Tensor, targets: Targets
    ) -> dict[str, Tensor]:
        """The course's loss (Section 14.7.2.2): cross-entropy over every anchor's class, L1 over
        the offsets of anchors assigned an object, each averaged per image then over the batch."""
        box_offsets, box_mask, class_labels = multibox_target(
            anchors, targets, iou_threshold=self.iou_threshold
        )
        cls = F.cross_entropy(cls_logits.flatten(0, 1), class_labels.flatten(), reduction="none")
        bbox = F.l1_loss(offsets * box_mask, box_offsets * box_mask, reduction="none")
        return {"loss_cls": cls.mean(), "loss_bbox": bbox.mean()}


@register_model(task="detection", input_size=(3, 256, 256))
def tinyssd(
    *,
    num_classes: int = 1,
    in_channels: int = 3,
    backbone: str | None = None,
    backbone_weights: str | None = None,
    **kwargs,
) -> TinySSD:
    """TinySSD as the course builds it for the banana data set (Section 14.7): the three-block
    base network, five scales, four anchors per pixel; ``backbone=`` swaps in a zoo classifier."""
    return TinySSD(num_classes, in_channels, backbone, backbone_weights, **kwargs)
