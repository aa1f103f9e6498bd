"""The contract every zoo segmenter keeps (torchvision's segmentation models keep it too): a
backbone, a classifier head giving one score map per class, and an upsampling back to the input's
size (Sections 14.9-14.11).

``model(images [B, C, H, W])`` returns ``{"out": [B, num_classes, H, W]}`` logits at the input's
own size, whatever it is, plus ``"aux"`` (same shape) when the model has an auxiliary head. Class
``0`` is the background, which segmenters count (torchvision's convention: 21 classes for VOC).
Images come normalised by the data, as for every zoo model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from zoo.backbones import FeatureExtractor, backbone_stages
from zoo.layers import bilinear_upsampling

__all__ = ["Segmenter", "segmentation_backbone"]

# ResNet's replace_stride_with_dilation (layer2, layer3, layer4) for each output stride.
_DILATIONS = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}


def segmentation_backbone(
    name: str,
    *,
    output_stride: int = 32,
    aux: bool = False,
    in_channels: int = 3,
    weights: str | None = None,
    frozen_bn: bool = False,
    trainable_stages: int | None = None,
    owner: str = "segmenter",
) -> FeatureExtractor:
    """A zoo classifier's stages returning the deepest map (and, with ``aux``, the one before it,
    which an auxiliary head reads) at ``output_stride``.

    Output strides 16 and 8 dilate ResNet's last one or two stages instead of striding
    (``replace_stride_with_dilation``; Chen et al., 2017): the maps stay 2 or 4 times larger
    while the receptive fields, and any pretrained weights, stay the same. See
    :func:`zoo.backbones.backbone_stages` for the other arguments.
    """
    if output_stride not in _DILATIONS:
        raise ValueError(f"{owner}: output_stride={output_stride} must be one of 8, 16 or 32")
    kwargs = {}
    if output_stride != 32:
        if not name.startswith("resnet"):
            raise ValueError(
                f"{owner}: output_stride={output_stride} dilates a ResNet's last stages, and "
                f"{name!r} is not a ResNet; choose a resnet backbone or output_stride=32"
            )
        kwargs["replace_stride_with_dilation"] = _DILATIONS[output_stride]
    stages, info = backbone_stages(
        name,
        in_channels=in_channels,
        weights=weights,
        frozen_bn=frozen_bn,
        trainable_stages=trainable_stages,
        owner=owner,
        **kwargs,
    )
    if len(info) < 2 and aux:
        raise ValueError(f"{owner}: backbone {name!r} has one feature map, no room for aux_loss")
    return FeatureExtractor(stages, info[-2:] if aux else info[-1:])


class Segmenter(nn.Module):
    """Backbone -> classifier -> upsampling to the input's size, plus an optional auxiliary head.

    Args:
        backbone: returns the maps as an ``OrderedDict``, the deepest last (the auxiliary head
            reads the first when there are two); see :func:`segmentation_backbone`.
        classifier: head on the deepest map; its last module is the convolution that gives one
            score map per class (what :meth:`reset_classifier` replaces).
        num_classes: classes, background included.
        in_channels: image channels.
        aux_classifier: head on the shallower map, trained with a down-weighted loss and dropped
            at inference by users who do not need it (torchvision's ``aux_loss``).
        upsampling: ``"bilinear"`` interpolates the scores to the input's size (torchvision);
            ``"transposed"`` learns a transposed convolution initialised to bilinear
            interpolation (the course's FCN, Section 14.11), then crops to the input's size.
        output_stride: the backbone's stride: the transposed convolution's factor.
    """

    def __init__(
        self,
        backbone: FeatureExtractor,
        classifier: nn.Sequential,
        num_classes: int,
        in_channels: int,
        aux_classifier: nn.Sequential | None = None,
        upsampling: str = "bilinear",
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(
                f"{type(self).__name__}: num_classes={num_classes} must be at least 2 (the "
                "background and one class)"
            )
        if upsampling not in ("bilinear", "transposed"):
            raise ValueError(
                f"{type(self).__name__}: upsampling={upsampling!r} must be 'bilinear' or "
                "'transposed'"
            )
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.upsampling = upsampling
        self.output_stride = output_stride
        self.upsample = (
            bilinear_upsampling(num_classes, output_stride) if upsampling == "transposed" else None
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        size = x.shape[-2:]
        maps = list(self.backbone(x).values())
        result: dict[str, Tensor] = OrderedDict()
        result["out"] = self._upsample(self.classifier(maps[-1]), size)
        if self.aux_classifier is not None:
            scores = self.aux_classifier(maps[0])
            result["aux"] = F.interpolate(scores, size, mode="bilinear", align_corners=False)
        return result

    def _upsample(self, scores: Tensor, size: tuple[int, int]) -> Tensor:
        if self.upsample is not None:
            scores = self.upsample(scores)
            if scores.shape[-2] >= size[0] and scores.shape[-1] >= size[1]:
                # ResNet's padded strides give maps of ceil(H / stride), upsampled to at least H:
                # the extra rows and columns lie beyond the bottom and right edges.
                return scores[..., : size[0], : size[1]]
        return F.interpolate(scores, size, mode="bilinear", align_corners=False)

    def get_classifier(self) -> nn.Conv2d:
        """The convolution that scores each class: rows are classes (what zoo.adapt copies)."""
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        """Fresh class layers for ``num_classes`` classes (fine-tuning, Section 14.2): the last
        convolution of the classifier and of the auxiliary head, and the transposed convolution
        (bilinear again); the backbone and the rest of the heads are kept."""
        if num_classes < 2:
            raise ValueError(
                f"{type(self).__name__}: num_classes={num_classes} must be at least 2 (the "
                "background and one class)"
            )
        self.num_classes = num_classes
        for head in (self.classifier, self.aux_classifier):
            if head is not None:
                old = head[-1]
                head[-1] = nn.Conv2d(old.in_channels, num_classes, 1).to(old.weight.device)
        if self.upsample is not None:
            device = self.upsample.weight.device
            self.upsample = bilinear_upsampling(num_classes, self.output_stride).to(device)

    def num_classes_in(self, state: Mapping[str, Tensor]) -> int:
        """The classes a state dict (zoo keys) of this model scores: rows of its last conv."""
        return state[f"classifier.{len(self.classifier) - 1}.weight"].shape[0]
