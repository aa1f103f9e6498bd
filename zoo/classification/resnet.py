"""ResNet (He et al., 2016) from the course's residual blocks (Section 8.6).

The blocks carry torchvision's module names, so torchvision's ImageNet weights load with the stem
and the stages moved under ``features`` (:func:`_torchvision_key`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from zoo._registry import register_model
from zoo.classification._base import Classifier, FeatureInfo
from zoo.layers import BasicBlock, Bottleneck, Conv2dNormActivation, narrow

__all__ = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


def _stage(
    block: type[BasicBlock | Bottleneck],
    in_channels: int,
    channels: int,
    depth: int,
    stride: int,
    dilation: tuple[int, int] = (1, 1),
):
    """``depth`` blocks; ``dilation`` is (first block's, the others'), as torchvision dilates: a
    stage whose stride became a dilation keeps the previous dilation in its first block."""
    first, rest = dilation
    blocks = [block(in_channels, channels, stride, first)]
    blocks += [block(channels * block.expansion, channels, 1, rest) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


def _build_resnet(
    block: type[BasicBlock | Bottleneck],
    layers: Sequence[int],
    *,
    num_classes: int,
    in_channels: int,
    width_divisor: int = 1,
    zero_init_residual: bool = False,
    replace_stride_with_dilation: Sequence[bool] = (False, False, False),
    **kwargs,
) -> Classifier:
    """Stem (7x7/2 conv-BN-ReLU, 3x3/2 max-pool), four stages of residual blocks, global pool.

    ``width_divisor`` divides every convolution's channels (the stem's 64 and the stages'
    64-128-256-512, never below 1; bottlenecks still expand them 4 times): the course trains
    VGG-11 on Fashion-MNIST with ``4`` to keep it affordable (Section 8.2.3), and the same
    narrowing lets a ResNet learn small data in seconds.
    ``zero_init_residual`` starts every block's last BN at zero so each block begins as the
    identity (Goyal et al., 2017), which helps large-batch training.
    ``replace_stride_with_dilation`` (torchvision's argument) turns the stride 2 of layer2,
    layer3, layer4 into a dilation of the following 3x3 convolutions: the maps stay larger, the
    receptive fields grow as before, and the weights are unchanged (DeepLab's atrous
    convolution; ``(False, True, True)`` gives output stride 8, what FCN and DeepLabV3 use).
    """
    if len(replace_stride_with_dilation) != 3:
        raise ValueError(
            f"replace_stride_with_dilation={list(replace_stride_with_dilation)} needs 3 "
            "booleans, one each for layer2, layer3 and layer4"
        )
    stem_width, *widths = narrow((64, 64, 128, 256, 512), width_divisor)
    stem = nn.Sequential(
        Conv2dNormActivation(in_channels, stem_width, kernel_size=7, stride=2, padding=3),
        nn.MaxPool2d(3, stride=2, padding=1),
    )
    stages: dict[str, nn.Module] = {"stem": stem}
    info = []
    channels_in = stem_width
    total_stride, dilation = 4, 1
    dilate = (False, *replace_stride_with_dilation)
    for i, (depth, width) in enumerate(zip(layers, widths, strict=True), start=1):
        stride = 1 if i == 1 else 2
        previous = dilation
        if dilate[i - 1]:
            dilation, stride = dilation * stride, 1
        total_stride *= stride
        stages[f"layer{i}"] = _stage(block, channels_in, width, depth, stride, (previous, dilation))
        channels_in = width * block.expansion
        info.append(FeatureInfo(f"layer{i}", channels_in, total_stride))
    pre_logits = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = Classifier(
        nn.Sequential(OrderedDict(stages)),
        pre_logits,
        channels_in,
        num_classes,
        in_channels,
        info,
        **kwargs,
    )
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and kwargs.get("init", "default") == "default":
            # torchvision's ResNet initialisation (He et al., 2015): PyTorch's default is tuned
            # for no normalisation and trains these deep stacks more slowly.
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if zero_init_residual:
        for module in model.modules():
            last_bn = getattr(module, "bn3" if isinstance(module, Bottleneck) else "bn2", None)
            if isinstance(module, (BasicBlock, Bottleneck)) and last_bn is not None:
                nn.init.zeros_(last_bn.weight)
    return model


def _torchvision_key(key: str) -> str:
    """torchvision's ResNet key -> the zoo's: ``conv1``/``bn1`` are the stem's conv-BN unit,
    ``layer1``..``layer4`` are stages of ``features``; ``fc`` keeps its name."""
    module, _, rest = key.partition(".")
    if module in ("conv1", "bn1"):
        return f"features.stem.0.{0 if module == 'conv1' else 1}.{rest}"
    return f"features.{key}" if module.startswith("layer") else key


# Block, stage depths, and torchvision's weights (its best ImageNet entry for each depth).
_ARCHS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), "ResNet18_Weights.IMAGENET1K_V1"),
    "resnet34": (BasicBlock, (3, 4, 6, 3), "ResNet34_Weights.IMAGENET1K_V1"),
    "resnet50": (Bottleneck, (3, 4, 6, 3), "ResNet50_Weights.IMAGENET1K_V2"),
    "resnet101": (Bottleneck, (3, 4, 23, 3), "ResNet101_Weights.IMAGENET1K_V2"),
    "resnet152": (Bottleneck, (3, 8, 36, 3), "ResNet152_Weights.IMAGENET1K_V2"),
}


def _variant(name: str):
    block, layers, torchvision_weights = _ARCHS[name]

    def builder(
        *, num_classes: int = 1000, in_channels: int = 3, width_divisor: int = 1, **kwargs
    ) -> Classifier:
        return _build_resnet(
            block,
            layers,
            num_classes=num_classes,
            in_channels=in_channels,
            width_divisor=width_divisor,
            **kwargs,
        )

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (
        f"ResNet-{name[6:]}: {block.__name__} stages of depth {layers} (Section 8.6). "
        "Keyword arguments: ``width_divisor``, ``zero_init_residual``, "
        "``replace_stride_with_dilation``, ``init``. "
        f"``weights='torchvision'`` loads {torchvision_weights}."
    )
    return register_model(
        task="classification",
        input_size=(3, 224, 224),
        torchvision_weights=torchvision_weights,
        torchvision_key_map=_torchvision_key,
    )(builder)


resnet18 = _variant("resnet18")
resnet34 = _variant("resnet34")
resnet50 = _variant("resnet50")
resnet101 = _variant("resnet101")
resnet152 = _variant("resnet152")
