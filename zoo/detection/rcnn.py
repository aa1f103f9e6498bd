"""The R-CNN family on zoo backbones: Faster R-CNN (Ren et al., 2015) and Mask R-CNN (He et al.,
2017), Section 14.8 of the course.

Faster R-CNN replaces the selective search of R-CNN and Fast R-CNN by a *region proposal network*
(RPN) that slides over the backbone's feature map, scores anchors as object or background and
regresses them into proposals; *RoI align* cuts a fixed-size feature window out of each proposal,
and a two-layer head classifies it and refines its box. Mask R-CNN adds a small fully
convolutional head that predicts a mask per class inside each box.

All of that is torchvision's (``RegionProposalNetwork``, ``MultiScaleRoIAlign``, ``RoIHeads``, its
losses and sampling); the zoo supplies the backbone: a zoo classifier's stages, with a feature
pyramid (Lin et al., 2017) over the strides 4-32 or, without one, the single stride-16 map of
the original papers. The classes subclass torchvision's, so their state dicts have torchvision's
keys apart from the backbone's stem, and torchvision's COCO weights load (``weights="torchvision"``).

Like every zoo detector they take images already normalised (by the data module or
``pretrained_cfg.transforms()``); resizing (the shorter side to ``min_size``, 800 for COCO) and
batching stay inside the model, so images of any size, in a list, are fine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection import faster_rcnn, mask_rcnn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from zoo._registry import register_model
from zoo.backbones import FeatureExtractor, backbone_stages, pick_taps
from zoo.classification.resnet import _torchvision_key as _resnet_key
from zoo.detection._base import Detections, Detector, ResizeTransform, Targets, image_list

__all__ = ["FasterRCNN", "MaskRCNN", "fasterrcnn_resnet50", "fasterrcnn_resnet50_fpn",
           "maskrcnn_resnet50_fpn", "rcnn_backbone"]  # fmt: skip

# torchvision's detectors normalise with ImageNet's statistics inside; zoo's leave it to the data.
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
FPN_STRIDES = (4, 8, 16, 32)
# One anchor size per pyramid level P2-P6 (torchvision's), or all of them on the single map.
DEFAULT_ANCHOR_SIZES = (32, 64, 128, 256, 512)


class _SingleMap(FeatureExtractor):
    """A backbone tapped at one stride: torchvision's R-CNN heads want ``out_channels`` an int."""

    def __init__(self, stages: nn.Sequential, tap) -> None:
        super().__init__(stages, [tap])
        self.out_channels = tap.channels


def rcnn_backbone(
    name: str,
    *,
    in_channels: int = 3,
    weights: str | None = None,
    fpn: bool = True,
    fpn_channels: int = 256,
    frozen_bn: bool = False,
    trainable_stages: int | None = None,
) -> nn.Module:
    """A zoo classifier as an R-CNN backbone: with ``fpn``, a feature pyramid over its stages at
    strides 4, 8, 16, 32 (plus a max-pooled level, maps ``"0"``-``"3"`` and ``"pool"``, as
    torchvision's ``resnet_fpn_backbone``); without, its deepest stage at stride 16 (map ``"0"``,
    the "C4" layout of the original Faster R-CNN on ResNet). See
    :func:`zoo.backbones.backbone_stages` for the other arguments."""
    stages, info = backbone_stages(
        name,
        in_channels=in_channels,
        weights=weights,
        frozen_bn=frozen_bn,
        trainable_stages=trainable_stages,
        owner="R-CNN",
    )
    if not fpn:
        return _SingleMap(stages, pick_taps(info, (16,), "R-CNN")[0])
    taps = pick_taps(info, FPN_STRIDES, "R-CNN with an FPN")
    return BackboneWithFPN(
        stages,
        {tap.name: str(i) for i, tap in enumerate(taps)},
        [tap.channels for tap in taps],
        fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )


def _rpn_and_pool(
    fpn: bool, anchor_sizes: Sequence[int], aspect_ratios: Sequence[float]
) -> tuple[AnchorGenerator, MultiScaleRoIAlign]:
    """Anchors (one size per pyramid level, or every size on the single map) and 7 x 7 RoI align
    over the maps the backbone returns."""
    ratios = tuple(float(r) for r in aspect_ratios)
    if fpn:
        anchors = AnchorGenerator(
            tuple((int(s),) for s in anchor_sizes), (ratios,) * len(anchor_sizes)
        )
        names = [str(i) for i in range(len(FPN_STRIDES))]
    else:
        anchors = AnchorGenerator((tuple(int(s) for s in anchor_sizes),), (ratios,))
        names = ["0"]
    return anchors, MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2)


class _RCNN(Detector):
    """What the zoo adds to torchvision's two-stage detectors: its input convention (normalised
    images, a batch tensor or a list), label checks, and the fine-tuning surface."""

    roi_heads: Any
    transform: ResizeTransform
    trains_on_masks = False

    def _zoo_setup(self, num_classes: int, in_channels: int, min_size: int, max_size: int) -> None:
        self.num_classes = num_classes
        self.in_channels = in_channels
        # Resize and batch as torchvision does, without its normalisation: the data did that.
        self.transform = ResizeTransform(min_size, max_size, in_channels)

    def forward(
        self, images: Tensor | Sequence[Tensor], targets: Targets | None = None
    ) -> dict[str, Tensor] | Detections:
        images = image_list(images, type(self).__name__)
        if self.training:
            targets = self.check_targets(targets)
            if self.trains_on_masks and any("masks" not in target for target in targets):
                raise ValueError(
                    f"{type(self).__name__} trains on instance masks, and these targets have "
                    "none: set the data module's masks: true (--data.init_args.masks true)"
                )
        return super().forward(images, targets)

    def get_classifier(self) -> nn.Module:
        """The box predictor (class scores and class-specific box offsets)."""
        return self.roi_heads.box_predictor

    def reset_classifier(self, num_classes: int) -> None:
        """Fresh class-specific layers for ``num_classes`` object classes (the course's
        fine-tuning, Section 14.2, and torchvision's detection fine-tuning tutorial): the box
        predictor (and the mask predictor's last layer); backbone, RPN and heads stay."""
        if num_classes < 1:
            raise ValueError(f"{type(self).__name__}: num_classes={num_classes} must be >= 1")
        predictor = self.roi_heads.box_predictor
        device = predictor.cls_score.weight.device
        self.roi_heads.box_predictor = faster_rcnn.FastRCNNPredictor(
            predictor.cls_score.in_features, num_classes + 1
        ).to(device)
        self.num_classes = num_classes

    def num_classes_in(self, state: Mapping[str, Tensor]) -> int:
        return state["roi_heads.box_predictor.cls_score.weight"].shape[0] - 1


class FasterRCNN(_RCNN, faster_rcnn.FasterRCNN):
    """Faster R-CNN (Ren et al., 2015) with a zoo backbone: torchvision's RPN, RoI align and
    two-layer box head (Section 14.8.3).

    Args:
        num_classes: object classes, background excluded.
        in_channels: image channels.
        backbone: a zoo classifier's registry name (``resnet50``, ``resnet18``, ``vgg16``...).
        backbone_weights: its pretrained weights (``"torchvision"``, a file, a URL).
        fpn: a feature pyramid over strides 4-32 (Lin et al., 2017); ``False`` uses the single
            stride-16 map of the original paper.
        fpn_channels: channels of the pyramid's maps.
        frozen_bn: freeze batch norm into a fixed affine map, as torchvision does whenever it
            starts from pretrained weights (small detection batches estimate statistics badly).
        trainable_backbone_layers: backbone stages, counted from the deepest, that train
            (torchvision uses 3 with pretrained weights); ``None`` trains all.
        min_size, max_size: images are resized so that the shorter side is ``min_size`` unless
            the longer would pass ``max_size`` (COCO: 800 and 1333); boxes come back in the
            input's pixels.
        anchor_sizes, aspect_ratios: the RPN's anchors, one size per pyramid level with ``fpn``.
        representation_size: width of the two-layer box head (1024 in the paper's FPN setup).
        **kwargs: torchvision's ``FasterRCNN`` options (``rpn_*``, ``box_score_thresh``,
            ``box_nms_thresh``, ``box_detections_per_img``, ``box_batch_size_per_image``, ...).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: str = "resnet50",
        backbone_weights: str | None = None,
        fpn: bool = True,
        fpn_channels: int = 256,
        frozen_bn: bool = False,
        trainable_backbone_layers: int | None = None,
        min_size: int = 800,
        max_size: int = 1333,
        anchor_sizes: Sequence[int] = DEFAULT_ANCHOR_SIZES,
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        representation_size: int = 1024,
        **kwargs: Any,
    ) -> None:
        body = rcnn_backbone(
            backbone,
            in_channels=in_channels,
            weights=backbone_weights,
            fpn=fpn,
            fpn_channels=fpn_channels,
            frozen_bn=frozen_bn,
            trainable_stages=trainable_backbone_layers,
        )
        anchors, pool = _rpn_and_pool(fpn, anchor_sizes, aspect_ratios)
        self._init_torchvision(
            body,
            rpn_anchor_generator=anchors,
            box_roi_pool=pool,
            box_head=faster_rcnn.TwoMLPHead(body.out_channels * 7**2, representation_size),
            box_predictor=faster_rcnn.FastRCNNPredictor(representation_size, num_classes + 1),
            **kwargs,
        )
        self._zoo_setup(num_classes, in_channels, min_size, max_size)

    def _init_torchvision(self, backbone: nn.Module, **parts: Any) -> None:
        """torchvision's constructor, with the zoo's backbone and heads."""
        faster_rcnn.FasterRCNN.__init__(self, backbone, **parts)


class MaskRCNN(FasterRCNN, mask_rcnn.MaskRCNN):
    """Mask R-CNN (He et al., 2017): Faster R-CNN with RoI align and a mask head that predicts a
    28 x 28 mask per class inside each box (Section 14.8.4).

    Training targets need ``masks`` (``[N, H, W]`` uint8, one per box: set the data module's
    ``masks: true``). In eval mode each detection dict also has ``masks``: ``[K, 1, H, W]``
    probabilities pasted into the input image (threshold at 0.5 for a binary mask).

    Args: as :class:`FasterRCNN`, and ``mask_channels``: width of the mask head's four 3x3
    convolutions and its up-sampling (256 in the paper; the head runs on every positive region,
    so it dominates the cost of small models). ``**kwargs`` also takes torchvision's ``mask_*``
    options.
    """

    trains_on_masks = True

    def _init_torchvision(
        self, backbone: nn.Module, mask_channels: int = 256, **parts: Any
    ) -> None:
        # RoI align at 14 x 14 over the maps the box head reads, and a predictor per class.
        names = parts["box_roi_pool"].featmap_names
        num_classes = parts["box_predictor"].cls_score.out_features  # background included
        mask_rcnn.MaskRCNN.__init__(
            self,
            backbone,
            mask_roi_pool=MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2),
            mask_head=mask_rcnn.MaskRCNNHeads(backbone.out_channels, (mask_channels,) * 4, 1),
            mask_predictor=mask_rcnn.MaskRCNNPredictor(mask_channels, mask_channels, num_classes),
            **parts,
        )

    def get_classifier(self) -> nn.ModuleDict:
        """The class-specific layers: the box predictor and the mask predictor's last layer."""
        return nn.ModuleDict(
            {
                "box_predictor": self.roi_heads.box_predictor,
                "mask_logits": self.roi_heads.mask_predictor.mask_fcn_logits,
            }
        )

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        old = self.roi_heads.mask_predictor
        self.roi_heads.mask_predictor = mask_rcnn.MaskRCNNPredictor(
            old.conv5_mask.in_channels, old.conv5_mask.out_channels, num_classes + 1
        ).to(old.conv5_mask.weight.device)


def _torchvision_key(key: str) -> str:
    """torchvision's R-CNN key -> the zoo's: only the ResNet stem is named differently
    (``backbone.body.conv1`` / ``bn1`` are the zoo stem's conv-BN unit)."""
    prefix = "backbone.body."
    if not key.startswith(prefix):
        return key
    return prefix + _resnet_key(key[len(prefix) :]).removeprefix("features.")


_RCNN_WEIGHTS = {
    # Built as torchvision builds them for its weights: frozen BN, three trainable stages.
    "torchvision_kwargs": {"frozen_bn": True, "trainable_backbone_layers": 3},
    "torchvision_key_map": _torchvision_key,
    "torchvision_mean_std": IMAGENET_MEAN_STD,
}


@register_model(
    task="detection",
    input_size=(3, 800, 800),
    family="rcnn",
    torchvision_weights="FasterRCNN_ResNet50_FPN_Weights.COCO_V1",
    **_RCNN_WEIGHTS,
)
def fasterrcnn_resnet50_fpn(
    *, num_classes: int = 90, in_channels: int = 3, backbone: str = "resnet50", **kwargs
) -> FasterRCNN:
    """Faster R-CNN (Section 14.8.3) with a ResNet-50 FPN backbone: torchvision's
    ``fasterrcnn_resnet50_fpn``, whose COCO weights ``weights="torchvision"`` loads (box mAP
    37.0); ``backbone=`` takes any zoo classifier with stages at strides 4-32."""
    return FasterRCNN(num_classes, in_channels, backbone, fpn=True, **kwargs)


@register_model(task="detection", input_size=(3, 800, 800), family="rcnn")
def fasterrcnn_resnet50(
    *, num_classes: int = 90, in_channels: int = 3, backbone: str = "resnet50", **kwargs
) -> FasterRCNN:
    """Faster R-CNN (Section 14.8.3) on the single stride-16 map of a ResNet-50, without FPN as
    in the original paper: fifteen anchors per position, RoI align, and torchvision's two-layer
    box head where He et al. (2016) ran ResNet's last stage on each region."""
    return FasterRCNN(num_classes, in_channels, backbone, fpn=False, **kwargs)


@register_model(
    task="detection",
    input_size=(3, 800, 800),
    family="rcnn",
    torchvision_weights="MaskRCNN_ResNet50_FPN_Weights.COCO_V1",
    **_RCNN_WEIGHTS,
)
def maskrcnn_resnet50_fpn(
    *, num_classes: int = 90, in_channels: int = 3, backbone: str = "resnet50", **kwargs
) -> MaskRCNN:
    """Mask R-CNN (Section 14.8.4) with a ResNet-50 FPN backbone: torchvision's
    ``maskrcnn_resnet50_fpn``, whose COCO weights ``weights="torchvision"`` loads (box mAP 37.9,
    mask mAP 34.6)."""
    return MaskRCNN(num_classes, in_channels, backbone, fpn=True, **kwargs)
