"""SSD, the single-shot multibox detector (Liu et al., 2016; Section 14.7 of the course), on zoo
backbones.

TinySSD is the course's small version; this is the paper's. A base network gives feature maps at
several scales, extra layers halve the last one again and again, and at every scale a 3x3
convolution predicts, for each default box (anchor) of each pixel, the class scores (background
first) and four offsets. Training matches every ground-truth box to the anchors it overlaps by
IoU >= 0.5 (and to its best anchor), and sums a smooth-L1 loss over matched offsets and a
cross-entropy over classes where the negatives are the hardest ones, three per positive (hard
negative mining). Detection keeps, per class, the top-scoring boxes and suppresses overlaps (NMS).

All of that is torchvision's (``SSD``, ``SSDHead``, ``DefaultBoxGenerator``, its matcher, loss and
decoding); the zoo supplies the backbones:

- :func:`ssd300_vgg16`: SSD300 as the paper draws it (its Fig. 2), from the zoo's ``vgg16``:
  conv4_3 with a learnt L2-normalisation scale, then pool5 at stride 1, fc6 and fc7 as (dilated)
  convolutions, and four extra blocks, for maps of 38, 19, 10, 5, 3 and 1 pixels at 300 x 300.
  It loads torchvision's ``ssd300_vgg16`` weights (``weights="torchvision"``).
- :func:`ssd300_resnet50`: any zoo classifier with stages at strides 8, 16 and 32 (ResNet-50 by
  default), then three extra blocks with batch norm; padded, so any input size works.

The classes subclass torchvision's ``SSD``, so state dicts keep torchvision's keys
(``backbone.*``, ``head.classification_head.module_list.*``, ...). Like every zoo detector they
take images already normalised (by the data module, or ``pretrained_cfg.transforms()``): the
resize to the fixed input size stays inside the model, normalisation does not.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import ssd as tv_ssd
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.ops import Conv2dNormActivation

from zoo._registry import register_model
from zoo.backbones import backbone_stages, feature_extractor
from zoo.classification.vgg import VGG_ARCHS, _torchvision_key_map
from zoo.detection._base import Detections, Detector, ResizeTransform, Targets, image_list

__all__ = [
    "SSD",
    "SSD300_ASPECT_RATIOS",
    "SSD300_MEAN_STD",
    "SSD300_SCALES",
    "SSD300_STEPS",
    "SSDBackbone",
    "SSDVGGBackbone",
    "extra_block",
    "ssd300_resnet50",
    "ssd300_vgg16",
]

# SSD300's default boxes (the paper's section 2.2 and 3.1, as torchvision's builder has them): per
# map, ratios 1 and 1/1 at two sizes plus {2, 1/2} (4 boxes) or {2, 1/2, 3, 1/3} (6 boxes); the
# scale of map k is scales[k], its second box at ratio 1 has sqrt(scales[k] * scales[k + 1]).
SSD300_ASPECT_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
SSD300_SCALES = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)
# Pixels between box centres of each map at 300 x 300 (ceil-rounded strides of Caffe's SSD).
SSD300_STEPS = (8, 16, 32, 64, 100, 300)
# torchvision's SSD300 works on 0-255 pixels minus the Caffe VGG mean: in 0-1 units a mean of the
# ImageNet colour and a std of 1/255.
SSD300_MEAN_STD = ((0.48235, 0.45882, 0.40784), (1 / 255, 1 / 255, 1 / 255))


def _xavier_init(module: nn.Module) -> nn.Module:
    # The paper's (Caffe's "xavier") initialisation of the layers VGG's classifier lacks.
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


def extra_block(
    in_channels: int,
    mid_channels: int,
    out_channels: int,
    *,
    stride: int = 2,
    padding: int = 1,
    batch_norm: bool = False,
) -> nn.Sequential:
    """One of SSD's extra feature layers: a 1x1 convolution to ``mid_channels``, then a 3x3 one
    (``stride`` 2 and padded halves the map; stride 1 unpadded trims a pixel each side), each
    followed by ReLU (and batch norm before it with ``batch_norm``)."""
    norm = nn.BatchNorm2d if batch_norm else None
    return nn.Sequential(
        Conv2dNormActivation(in_channels, mid_channels, kernel_size=1, norm_layer=norm),
        Conv2dNormActivation(
            mid_channels, out_channels, 3, stride=stride, padding=padding, norm_layer=norm
        ),
    )


class SSDVGGBackbone(nn.Module):
    """SSD300's base network (the paper's Fig. 2): the zoo's VGG-16 to conv5_3, then fc6 and fc7
    as convolutions and four extra blocks; six maps (38, 19, 10, 5, 3, 1 pixels at 300 x 300).

    VGG's pool3 rounds up (75 -> 38 pixels, as in Caffe), pool5 is 3x3 at stride 1 so fc6, dilated
    6 times (the "atrous" trick that keeps its receptive field), stays at stride 16. conv4_3's
    activations are much larger than the deeper maps', so they are L2-normalised per pixel and
    rescaled by a learnt per-channel factor starting at 20 (Liu et al., 2016, section 3.1).

    Args:
        in_channels: image channels.
        weights: pretrained weights of the zoo's ``vgg16`` (``"torchvision"``, a file, a URL).
        trainable_stages: VGG blocks, counted from the deepest, that train; ``None`` trains all.

    Attributes:
        features: VGG's blocks 1-4 without pool4: conv4_3, the first map.
        scale_weight: the per-channel scale of the normalised conv4_3 map.
        extra: pool4 to fc7 (the second map), then the four extra blocks.
        out_channels: channels of the six maps.
    """

    def __init__(
        self, in_channels: int = 3, weights: str | None = None, trainable_stages: int | None = None
    ) -> None:
        super().__init__()
        stages, _ = backbone_stages(
            "vgg16",
            in_channels=in_channels,
            weights=weights,
            trainable_stages=trainable_stages,
            owner="ssd300_vgg16",
        )
        stages.block3[-1].ceil_mode = True
        # Slicing a Sequential keeps its children's names, so the blocks keep the keys of vgg16.
        self.features = nn.Sequential(
            OrderedDict(
                block1=stages.block1,
                block2=stages.block2,
                block3=stages.block3,
                block4=stages.block4[:-1],
            )
        )
        self.scale_weight = nn.Parameter(torch.full((512,), 20.0))
        fc7 = nn.Sequential(
            OrderedDict(
                pool4=stages.block4[-1],
                block5=stages.block5[:-1],
                pool5=nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
                fc6=Conv2dNormActivation(512, 1024, kernel_size=3, dilation=6, norm_layer=None),
                fc7=Conv2dNormActivation(1024, 1024, kernel_size=1, norm_layer=None),
            )
        )
        _xavier_init(fc7.fc6)
        _xavier_init(fc7.fc7)
        extras = [
            extra_block(1024, 256, 512),  # conv8_2: 19 -> 10
            extra_block(512, 128, 256),  # conv9_2: 10 -> 5
            extra_block(256, 128, 256, stride=1, padding=0),  # conv10_2: 5 -> 3
            extra_block(256, 128, 256, stride=1, padding=0),  # conv11_2: 3 -> 1
        ]
        self.extra = nn.ModuleList([fc7, *map(_xavier_init, extras)])
        self.out_channels = [512, 1024, 512, 256, 256, 256]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        x = self.features(x)
        maps = [self.scale_weight.view(1, -1, 1, 1) * F.normalize(x)]
        for block in self.extra:
            x = block(x)
            maps.append(x)
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


class SSDBackbone(nn.Module):
    """A zoo classifier's stages at strides 8, 16 and 32, then three extra blocks with batch norm
    (1x1 reduce, 3x3 at stride 2, padded): six maps, 38, 19, 10, 5, 3 and 2 pixels at 300 x 300,
    and at least one pixel each for any input. Up to 256 x 256 the last map is 1 x 1, so
    its batch norm needs batches of two or more images in training.

    Args:
        name: the classifier's registry name (``resnet50``, ``resnet18``, ``vgg16``...).
        in_channels: image channels.
        weights: its pretrained weights (``"torchvision"``, a file, a URL).
        frozen_bn: freeze the backbone's batch norm (see
            :func:`~zoo.backbones.freeze_batch_norm`); the extra blocks' stays live.
        trainable_stages: backbone stages, counted from the deepest, that train; ``None``: all.
        extra_channels: ``(reduced, output)`` channels of each extra block.

    Attributes:
        body: the tapped stages (a :class:`~zoo.backbones.FeatureExtractor`).
        extra: the extra blocks.
        out_channels: channels of the six maps.
    """

    def __init__(
        self,
        name: str,
        in_channels: int = 3,
        weights: str | None = None,
        frozen_bn: bool = False,
        trainable_stages: int | None = None,
        extra_channels: Sequence[tuple[int, int]] = ((256, 512), (128, 256), (128, 256)),
    ) -> None:
        super().__init__()
        self.body = feature_extractor(
            name,
            (8, 16, 32),
            in_channels=in_channels,
            weights=weights,
            frozen_bn=frozen_bn,
            trainable_stages=trainable_stages,
            owner="SSD",
        )
        channels = list(self.body.out_channels)
        blocks = []
        for mid, out in extra_channels:
            blocks.append(_xavier_init(extra_block(channels[-1], mid, out, batch_norm=True)))
            channels.append(out)
        self.extra = nn.ModuleList(blocks)
        self.out_channels = channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps = list(self.body(x).values())
        for block in self.extra:
            maps.append(block(maps[-1]))
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


class SSD(Detector, tv_ssd.SSD):
    """torchvision's SSD (default boxes, heads, matching, hard-negative-mining loss, decoding) on
    a zoo backbone, with the zoo's detector contract (:class:`~zoo.detection._base.Detector`).

    Images (a ``[B, C, H, W]`` tensor or a list of ``[C, H, W]`` tensors of any sizes, already
    normalised) are resized to ``size``; boxes, in training targets and in detections, are in
    the pixels of the images as given.

    Args:
        backbone: returns an ``OrderedDict`` of maps, shallow to deep, and has ``out_channels``.
        num_classes: object classes, background excluded (torchvision's head has one more).
        in_channels: image channels.
        size: ``(height, width)`` every image is resized to.
        aspect_ratios: per map, the ratios besides 1 (each ``r`` adds ``r`` and ``1/r``).
        scales: the default boxes' scale per map (fractions of the image side), plus one more
            for the second box at ratio 1 of the last map.
        steps: pixels between box centres per map; ``None`` spreads them evenly over each map.
        score_thresh, nms_thresh, detections_per_img, topk_candidates: decoding: a class's
            boxes scoring above ``score_thresh``, at most ``topk_candidates`` of them, go
            through NMS at ``nms_thresh``; the best ``detections_per_img`` of all classes stay.
        iou_thresh: anchors overlapping a ground truth this much are matched to it.
        positive_fraction: hard negative mining keeps ``(1 - f) / f`` negatives per positive
            (0.25: the paper's 3:1).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        in_channels: int = 3,
        size: tuple[int, int] = (300, 300),
        aspect_ratios: Sequence[Sequence[int]] = SSD300_ASPECT_RATIOS,
        scales: Sequence[float] = SSD300_SCALES,
        steps: Sequence[int] | None = None,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.45,
        detections_per_img: int = 200,
        iou_thresh: float = 0.5,
        topk_candidates: int = 400,
        positive_fraction: float = 0.25,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"SSD: num_classes={num_classes} must be at least 1")
        height, width = size
        anchor_generator = DefaultBoxGenerator(
            [list(r) for r in aspect_ratios],
            scales=list(scales),
            steps=list(steps) if steps is not None else None,
        )
        super().__init__(
            backbone,
            anchor_generator,
            (width, height),  # torchvision's SSD takes (width, height)
            num_classes + 1,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
            iou_thresh=iou_thresh,
            topk_candidates=topk_candidates,
            positive_fraction=positive_fraction,
        )
        self.num_classes = num_classes
        self.in_channels = in_channels
        # torchvision's fixed_size is (width, height) too.
        self.transform = ResizeTransform(
            min(size), max(size), in_channels, fixed_size=(width, height), size_divisible=1
        )

    def get_classifier(self) -> nn.Module:
        """The class predictors of every map: what a new set of classes replaces."""
        return self.head.classification_head

    def reset_classifier(self, num_classes: int) -> None:
        """Fresh class predictors for ``num_classes`` object classes (fine-tuning on new data,
        e.g. through :func:`zoo.adapt`, Section 14.2); backbone and box predictors stay."""
        if num_classes < 1:
            raise ValueError(f"SSD: num_classes={num_classes} must be at least 1")
        reference = self.head.regression_head.module_list[0].weight
        head = tv_ssd.SSDClassificationHead(
            self.backbone.out_channels,
            self.anchor_generator.num_anchors_per_location(),
            num_classes + 1,
        )
        self.head.classification_head = head.to(reference)
        self.num_classes = num_classes

    def num_classes_in(self, state: Mapping[str, Tensor]) -> int:
        anchors = self.anchor_generator.num_anchors_per_location()[0]
        return state["head.classification_head.module_list.0.weight"].shape[0] // anchors - 1

    def forward(
        self, images: Tensor | Sequence[Tensor], targets: Targets | None = None
    ) -> dict[str, Tensor] | Detections:
        if self.training:
            targets = list(self.check_targets(targets))
        return super().forward(image_list(images, "SSD"), targets)


# torchvision's SSD300 keys -> the zoo's. Its backbone is one flat VGG ``features`` to conv4_3,
# then ``extra.0`` = pool4, conv5_1-3 (at 1, 3, 5), fc (7: fc6 at 1, fc7 at 3), and extra blocks
# 1-4 with their convolutions at 0 and 2; the zoo keeps vgg16's named blocks and wraps every
# convolution in a Conv2dNormActivation. The heads and scale_weight keep their keys.
_VGG16_KEY = _torchvision_key_map(VGG_ARCHS["vgg16"], batch_norm=False)
_POOL4 = 23  # pool4's index in torchvision's flat VGG-16 features


def _torchvision_ssd300_key(key: str) -> str:
    prefix, param = "backbone.", key.rpartition(".")[2]
    if key.startswith(prefix + "features."):
        return prefix + _VGG16_KEY(key[len(prefix) :])
    if match := re.fullmatch(r"backbone\.extra\.0\.([135])\.(weight|bias)", key):
        vgg = _VGG16_KEY(f"features.{_POOL4 + int(match[1])}.{param}")  # features.block5.N.0.*
        return prefix + "extra.0." + vgg.removeprefix("features.")
    if match := re.fullmatch(r"backbone\.extra\.0\.7\.([13])\.(weight|bias)", key):
        return f"{prefix}extra.0.{'fc6' if match[1] == '1' else 'fc7'}.0.{param}"
    if match := re.fullmatch(r"backbone\.extra\.(\d+)\.([02])\.(weight|bias)", key):
        return f"{prefix}extra.{match[1]}.{int(match[2]) // 2}.0.{param}"
    return key


@register_model(
    task="detection",
    input_size=(3, 300, 300),
    torchvision_weights="SSD300_VGG16_Weights.COCO_V1",
    torchvision_key_map=_torchvision_ssd300_key,
    torchvision_mean_std=SSD300_MEAN_STD,
)
def ssd300_vgg16(
    *,
    num_classes: int = 90,
    in_channels: int = 3,
    backbone_weights: str | None = None,
    trainable_backbone_layers: int | None = None,
    **kwargs,
) -> SSD:
    """SSD300 with the paper's VGG-16 base (Liu et al., 2016, Fig. 2; Section 14.7), 8732
    default boxes at 300 x 300, the size it is built for (the last extra layers are unpadded).

    Args:
        num_classes: object classes, background excluded (90 for torchvision's COCO weights).
        in_channels: image channels.
        backbone_weights: the zoo ``vgg16``'s weights, e.g.
            ``"torchvision:VGG16_Weights.IMAGENET1K_FEATURES"``, what torchvision's SSD300
            starts from (inputs then normalised with :data:`SSD300_MEAN_STD`).
        trainable_backbone_layers: VGG blocks, counted from the deepest, that train (torchvision
            uses 4 with pretrained weights, freezing block 1); ``None`` trains all.
        **kwargs: :class:`SSD`'s decoding and matching options (``score_thresh``,
            ``nms_thresh``, ``detections_per_img``, ``topk_candidates``, ``iou_thresh``,
            ``positive_fraction``).

    ``weights="torchvision"`` loads torchvision's COCO weights (``SSD300_VGG16_Weights.COCO_V1``).
    """
    for fixed in ("size", "steps", "scales", "aspect_ratios"):
        if fixed in kwargs:
            raise ValueError(
                f"ssd300_vgg16: {fixed} is fixed by the architecture (300 x 300 input); use "
                "ssd300_resnet50 (any zoo backbone, any size) for another one"
            )
    backbone = SSDVGGBackbone(in_channels, backbone_weights, trainable_backbone_layers)
    return SSD(backbone, num_classes, in_channels, (300, 300), steps=SSD300_STEPS, **kwargs)


@register_model(task="detection", input_size=(3, 300, 300))
def ssd300_resnet50(
    *,
    num_classes: int = 90,
    in_channels: int = 3,
    backbone: str = "resnet50",
    backbone_weights: str | None = None,
    size: int | Sequence[int] = (300, 300),
    trainable_backbone_layers: int | None = None,
    frozen_bn: bool = False,
    **kwargs,
) -> SSD:
    """SSD (Section 14.7) with a ResNet, or any zoo classifier with stages at strides 8, 16 and
    32, tapped at those strides and three extra blocks; SSD300's default boxes, any input size.

    Args:
        num_classes: object classes, background excluded.
        in_channels: image channels.
        backbone: the classifier's registry name.
        backbone_weights: its pretrained weights (``"torchvision"``, a file, a URL).
        size: ``(height, width)`` (or one side) every image is resized to; any size works
            (64 and up is sensible), since the default boxes are spread evenly over each map.
        trainable_backbone_layers: backbone stages, counted from the deepest, that train
            (torchvision uses 3 for a pretrained ResNet: layer2-layer4); ``None`` trains all.
        frozen_bn: freeze the backbone's batch norm, as torchvision does with pretrained weights.
        **kwargs: :class:`SSD`'s decoding and matching options (``score_thresh``,
            ``nms_thresh``, ``detections_per_img``, ``topk_candidates``, ``iou_thresh``,
            ``positive_fraction``) and default boxes (``aspect_ratios``, ``scales``).
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"ssd300_resnet50: size={size} must be (height, width) or one side")
    body = SSDBackbone(
        backbone,
        in_channels,
        weights=backbone_weights,
        frozen_bn=frozen_bn,
        trainable_stages=trainable_backbone_layers,
    )
    return SSD(body, num_classes, in_channels, size, **kwargs)
