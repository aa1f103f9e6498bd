"""Zoo classifiers as detection and segmentation backbones: their named stages, tapped through
``feature_info``.

Every detector and segmenter family takes its backbone by registry name (``backbone="resnet50"``)
and gets the classifier's ``features`` back as a torchvision ``IntermediateLayerGetter``: the stages
up to the deepest one tapped, returning an ``OrderedDict`` of the tapped maps keyed ``"0"``, ``"1"``,
... (torchvision's convention, which its FPN, RoI pooling and SSD heads read). The options are
torchvision's for its detection and segmentation backbones: batch norm frozen into a fixed affine
map (what small detection batches need, and what torchvision's detection weights were trained
with), the number of trainable stages counted from the deepest (``trainable_backbone_layers``), and
builder arguments such as ResNet's ``replace_stride_with_dilation`` (segmentation's output stride).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

from zoo._registry import create_model
from zoo.classification._base import FeatureInfo
from zoo.weights import WeightsUnavailable

__all__ = ["FeatureExtractor", "freeze_batch_norm", "backbone_stages", "feature_extractor"]


class FeatureExtractor(IntermediateLayerGetter):
    """The stages of a backbone up to the deepest tap; ``forward`` returns the tapped maps as an
    ``OrderedDict`` keyed ``"0"``, ``"1"``, ... shallow to deep.

    Attributes:
        feature_info: the tapped stages (name, channels, stride), in output order.
        out_channels: their channels, in output order.
    """

    def __init__(self, stages: nn.Sequential, taps: Sequence[FeatureInfo]) -> None:
        super().__init__(stages, {info.name: str(i) for i, info in enumerate(taps)})
        self.feature_info = list(taps)
        self.out_channels = [info.channels for info in taps]


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Every ``BatchNorm2d`` in ``module`` replaced by a ``FrozenBatchNorm2d`` with its statistics
    and affine weights, in place (returns ``module``, or the replacement when it is a BN itself).

    Frozen BN normalises with the stored statistics in training too and has no parameters: what
    torchvision's detection models use, since batches of 2-16 large images give poor estimates.
    """
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        if module.track_running_stats:
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen.to(module.running_mean.device if module.track_running_stats else "cpu")
    for name, child in module.named_children():
        replaced = freeze_batch_norm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


def backbone_stages(
    name: str,
    *,
    in_channels: int = 3,
    weights: str | None = None,
    frozen_bn: bool = False,
    trainable_stages: int | None = None,
    owner: str = "detector",
    **builder_kwargs: Any,
) -> tuple[nn.Sequential, list[FeatureInfo]]:
    """A zoo classifier's named stages (``features``) and their ``feature_info``.

    Args:
        name: registry name of a convolutional classifier (``resnet50``, ``vgg16``, ...).
        in_channels: image channels; pretrained first layers are adapted by :func:`zoo.adapt`.
        weights: the classifier's weights (``"torchvision"``, a file, a URL), or ``None``.
        frozen_bn: replace batch norm by :func:`freeze_batch_norm`.
        trainable_stages: how many stages, counted from the deepest, keep trainable parameters
            (torchvision's ``trainable_backbone_layers``: 3 trains ResNet's layer2-layer4);
            ``None`` trains all of them.
        owner: the detector or segmenter asking, named in errors.
        **builder_kwargs: further arguments of the classifier's builder, e.g. ResNet's
            ``replace_stride_with_dilation``.
    """
    try:
        model = create_model(name, weights=weights, in_channels=in_channels, **builder_kwargs)
    except WeightsUnavailable as error:  # the detector's argument, not the classifier's
        raise error.for_argument("model_kwargs.backbone_weights") from error.reason
    info = list(getattr(model, "feature_info", None) or [])
    if not info or not isinstance(getattr(model, "features", None), nn.Sequential):
        raise ValueError(
            f"{owner}: backbone {name!r} lists no feature maps (feature_info), so it cannot feed "
            f"{owner}; choose a convolutional classifier such as resnet18 or vgg16"
        )
    stages = model.features
    if frozen_bn:
        freeze_batch_norm(stages)
    if trainable_stages is not None:
        children = list(stages.children())
        if not 0 <= trainable_stages <= len(children):
            raise ValueError(
                f"{owner}: trainable_backbone_layers={trainable_stages} is outside 0..{len(children)}"
                f" (the stages of {name}: {[n for n, _ in stages.named_children()]})"
            )
        for stage in children[: len(children) - trainable_stages]:
            stage.requires_grad_(False)
    return stages, info


def pick_taps(info: Sequence[FeatureInfo], strides: Sequence[int], owner: str) -> list[FeatureInfo]:
    """The deepest stage of each stride in ``strides``, or an error naming the strides there are."""
    by_stride = {item.stride: item for item in info}  # later (deeper) stages win
    missing = [stride for stride in strides if stride not in by_stride]
    if missing:
        raise ValueError(
            f"{owner}: the backbone has no feature map at stride {missing} (it has "
            f"{sorted(by_stride)}); choose a backbone with stages at strides {list(strides)}"
        )
    return [by_stride[stride] for stride in strides]


def feature_extractor(
    name: str,
    strides: Sequence[int],
    *,
    in_channels: int = 3,
    weights: str | None = None,
    frozen_bn: bool = False,
    trainable_stages: int | None = None,
    owner: str = "detector",
    **builder_kwargs: Any,
) -> FeatureExtractor:
    """A zoo classifier tapped at ``strides`` (e.g. ``(8, 16, 32)``): see :func:`backbone_stages`
    for the other arguments and :class:`FeatureExtractor` for the output."""
    stages, info = backbone_stages(
        name,
        in_channels=in_channels,
        weights=weights,
        frozen_bn=frozen_bn,
        trainable_stages=trainable_stages,
        owner=owner,
        **builder_kwargs,
    )
    return FeatureExtractor(stages, pick_taps(info, strides, owner))
