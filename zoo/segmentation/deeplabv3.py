"""DeepLabV3 (Chen et al., 2017): a dilated backbone and atrous spatial pyramid pooling (ASPP),
parallel 3x3 convolutions of several dilation rates plus the image's mean feature, so each pixel
sees context at several scales. The stronger segmenter beside the course's FCN (Section 14.11),
composed from a zoo backbone and torchvision's ``DeepLabHead``, whose keys its weights use.
"""

from __future__ import annotations

from collections.abc import Sequence

from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from zoo._registry import register_model
from zoo.segmentation._base import Segmenter, segmentation_backbone
from zoo.segmentation.fcn import torchvision_segmentation_key

__all__ = ["DeepLabV3", "deeplabv3_resnet50"]


class DeepLabV3(Segmenter):
    """DeepLabV3 on any zoo ResNet: ASPP on the dilated last stage, upsampled to the input.

    Args:
        num_classes: classes, background included (21 for VOC).
        in_channels: image channels.
        backbone: registry name of the encoder (a ResNet for output strides 8 and 16).
        backbone_weights: its weights (``"torchvision"``, a file), or None.
        output_stride: 8 (the paper's best, torchvision's), 16 or 32.
        atrous_rates: ASPP's three dilation rates, in pixels of the last map. The paper's
            (12, 24, 36) at stride 8 suit 500-pixel images; a rate past the map's side only
            sees padding, so small images need small rates (e.g. (2, 4, 6) for an 8x8 map).
        aux_loss: add torchvision's auxiliary ``FCNHead`` on the second-deepest stage.
        upsampling: ``"bilinear"`` (the paper's, torchvision's) or ``"transposed"`` (learnt from
            a bilinear start, as the course's FCN; see :class:`~zoo.segmentation.Segmenter`).
        frozen_bn: freeze the backbone's batch norm (small batches).
        trainable_backbone_layers: backbone stages, from the deepest, that train (None: all).

    ASPP's image-pooling branch normalises a 1x1 map over the batch, so training needs batches
    of 2 or more.
    """

    def __init__(
        self,
        *,
        num_classes: int = 21,
        in_channels: int = 3,
        backbone: str = "resnet50",
        backbone_weights: str | None = None,
        output_stride: int = 8,
        atrous_rates: Sequence[int] = (12, 24, 36),
        aux_loss: bool = False,
        upsampling: str = "bilinear",
        frozen_bn: bool = False,
        trainable_backbone_layers: int | None = None,
    ) -> None:
        if len(atrous_rates) != 3 or min(atrous_rates) < 1:
            raise ValueError(
                f"DeepLabV3: atrous_rates={list(atrous_rates)} must be three positive dilation "
                "rates, e.g. (12, 24, 36)"
            )
        body = segmentation_backbone(
            backbone,
            output_stride=output_stride,
            aux=aux_loss,
            in_channels=in_channels,
            weights=backbone_weights,
            frozen_bn=frozen_bn,
            trainable_stages=trainable_backbone_layers,
            owner="DeepLabV3",
        )
        classifier = DeepLabHead(body.out_channels[-1], num_classes, tuple(atrous_rates))
        aux = FCNHead(body.out_channels[0], num_classes) if aux_loss else None
        super().__init__(body, classifier, num_classes, in_channels, aux, upsampling, output_stride)


@register_model(
    task="segmentation",
    input_size=(3, 520, 520),
    torchvision_weights="DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1",
    torchvision_key_map=torchvision_segmentation_key,
    torchvision_kwargs={"aux_loss": True},
)
def deeplabv3_resnet50(*, num_classes: int = 21, in_channels: int = 3, **kwargs) -> DeepLabV3:
    """torchvision's DeepLabV3-ResNet50 (Chen et al., 2017; a stronger model than Section 14.11's
    FCN): ResNet-50 dilated to output stride 8, ASPP at rates 12/24/36, bilinear upsampling.
    ``weights='torchvision'`` loads DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1 (21 VOC
    classes, with the auxiliary head). Keyword arguments: those of :class:`DeepLabV3`, e.g.
    ``backbone="resnet18"`` and smaller ``atrous_rates`` for small images."""
    return DeepLabV3(num_classes=num_classes, in_channels=in_channels, **kwargs)
