"""Fully convolutional networks (Long et al., 2015; Section 14.11): a classifier's convolutional
stages, a convolution to one score map per class, and an upsampling to the input's size.

The course's FCN (:func:`fcn_resnet18`) keeps ResNet-18 without its pooling and dense layer, scores
the stride-32 map with a 1x1 convolution and upsamples 32 times with a transposed convolution
initialised to bilinear interpolation. At stride 32 a 64-pixel image is a 2x2 map, too coarse for
small objects: :func:`fcn_resnet18_os8` dilates the last two stages instead (output stride 8).
:func:`fcn_resnet50` is torchvision's FCN (dilated ResNet-50, a 3x3 head, an auxiliary head, bilinear
upsampling) and loads its weights.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.segmentation.fcn import FCNHead

from zoo._registry import register_model
from zoo.classification.resnet import _torchvision_key as _resnet_key
from zoo.segmentation._base import Segmenter, segmentation_backbone

__all__ = [
    "FCN",
    "fcn_resnet18",
    "fcn_resnet18_os8",
    "fcn_resnet50",
    "torchvision_segmentation_key",
]


class FCN(Segmenter):
    """A fully convolutional network on any zoo backbone.

    Args:
        num_classes: classes, background included (21 for VOC).
        in_channels: image channels.
        backbone: registry name of the classifier whose stages are the encoder.
        backbone_weights: its weights (``"torchvision"``, a file), or None.
        output_stride: 32 (the backbone as is), 16 or 8 (ResNet's last stages dilated).
        head: ``"conv"``, the course's 1x1 convolution to the classes; ``"fcn"``, torchvision's
            ``FCNHead`` (3x3 convolution to a quarter of the channels, BN, ReLU, dropout 0.1,
            then the 1x1 convolution).
        upsampling: ``"transposed"`` (the course's, learnt from a bilinear start) or
            ``"bilinear"`` (torchvision's fixed interpolation); see :class:`Segmenter`.
        aux_loss: add torchvision's auxiliary ``FCNHead`` on the second-deepest stage.
        frozen_bn: freeze the backbone's batch norm (small batches).
        trainable_backbone_layers: backbone stages, from the deepest, that train (None: all).
    """

    def __init__(
        self,
        *,
        num_classes: int = 21,
        in_channels: int = 3,
        backbone: str = "resnet18",
        backbone_weights: str | None = None,
        output_stride: int = 32,
        head: str = "conv",
        upsampling: str = "transposed",
        aux_loss: bool = False,
        frozen_bn: bool = False,
        trainable_backbone_layers: int | None = None,
    ) -> None:
        if head not in ("conv", "fcn"):
            raise ValueError(f"FCN: head={head!r} must be 'conv' (the course's) or 'fcn'")
        body = segmentation_backbone(
            backbone,
            output_stride=output_stride,
            aux=aux_loss,
            in_channels=in_channels,
            weights=backbone_weights,
            frozen_bn=frozen_bn,
            trainable_stages=trainable_backbone_layers,
            owner="FCN",
        )
        channels = body.out_channels[-1]
        classifier = (
            FCNHead(channels, num_classes)
            if head == "fcn"
            else nn.Sequential(nn.Conv2d(channels, num_classes, kernel_size=1))
        )
        aux = FCNHead(body.out_channels[0], num_classes) if aux_loss else None
        super().__init__(body, classifier, num_classes, in_channels, aux, upsampling, output_stride)


def torchvision_segmentation_key(key: str) -> str:
    """torchvision's segmentation key -> the zoo's: the ResNet stem is renamed as the classifier's
    (``backbone.conv1`` -> ``backbone.stem.0.0``), heads keep their names."""
    module, _, rest = key.partition(".")
    if module != "backbone":
        return key
    return "backbone." + _resnet_key(rest).removeprefix("features.")


@register_model(task="segmentation", input_size=(3, 320, 480))
def fcn_resnet18(*, num_classes: int = 21, in_channels: int = 3, **kwargs) -> FCN:
    """The course's FCN (Section 14.11): ResNet-18's stages, a 1x1 convolution to the classes and
    a 32x transposed convolution (kernel 64, padding 16) initialised to bilinear upsampling.
    Keyword arguments: those of :class:`FCN` (``backbone`` swaps ResNet-18 for another)."""
    return FCN(
        num_classes=num_classes, in_channels=in_channels, **({"backbone": "resnet18"} | kwargs)
    )


@register_model(task="segmentation", input_size=(3, 320, 480))
def fcn_resnet18_os8(*, num_classes: int = 21, in_channels: int = 3, **kwargs) -> FCN:
    """The course's FCN (Section 14.11) at output stride 8: ResNet-18's layer3 and layer4
    dilated (Chen et al., 2017), an 8x bilinear-initialised transposed convolution. Resolves
    objects a stride-32 map cannot (a 64-pixel image is 8x8 here, 2x2 there).
    Keyword arguments: those of :class:`FCN`."""
    options = {"backbone": "resnet18", "output_stride": 8}
    return FCN(num_classes=num_classes, in_channels=in_channels, **(options | kwargs))


@register_model(
    task="segmentation",
    input_size=(3, 520, 520),
    torchvision_weights="FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1",
    torchvision_key_map=torchvision_segmentation_key,
    torchvision_kwargs={"aux_loss": True},
)
def fcn_resnet50(*, num_classes: int = 21, in_channels: int = 3, **kwargs) -> FCN:
    """torchvision's FCN-ResNet50 (Section 14.11; Long et al., 2015): ResNet-50 dilated to output
    stride 8, ``FCNHead``, bilinear upsampling, an auxiliary head on layer3 (``aux_loss``).
    ``weights='torchvision'`` loads FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1 (21 VOC classes,
    with the auxiliary head). Keyword arguments: those of :class:`FCN`."""
    options = {"output_stride": 8, "head": "fcn", "upsampling": "bilinear", "backbone": "resnet50"}
    return FCN(num_classes=num_classes, in_channels=in_channels, **(options | kwargs))
