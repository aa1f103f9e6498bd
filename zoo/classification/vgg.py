"""VGG (Simonyan & Zisserman, 2015) built from the course's VGG block (Section 8.2).

The layers are torchvision's, grouped into named blocks, so torchvision's ImageNet weights load
once its flat ``features`` indices are renamed (:func:`_torchvision_key_map`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from torch import nn

from zoo._registry import register_model
from zoo.classification._base import Classifier, FeatureInfo
from zoo.layers import narrow, vgg_block

__all__ = [
    "VGG_ARCHS",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]

# (number of convolutions, output channels) per block, from Table 1 of the paper (A, B, D, E).
VGG_ARCHS: dict[str, tuple[tuple[int, int], ...]] = {
    "vgg11": ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512)),
    "vgg13": ((2, 64), (2, 128), (2, 256), (2, 512), (2, 512)),
    "vgg16": ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)),
    "vgg19": ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512)),
}


def _build_vgg(
    arch: Sequence[tuple[int, int]],
    *,
    num_classes: int,
    in_channels: int,
    batch_norm: bool,
    width_divisor: int = 1,
    dropout: float = 0.5,
    **kwargs,
) -> Classifier:
    """Five VGG blocks (stride 2 each), a 7x7 adaptive pool and the 4096-4096 dense head.

    ``width_divisor`` divides every block's channels: the course trains VGG-11 on Fashion-MNIST
    with ``4`` to keep it affordable (Section 8.2.3).
    """
    stages: dict[str, nn.Module] = {}
    info = []
    channels = in_channels
    widths = narrow([width for _, width in arch], width_divisor)
    for i, ((num_convs, _), width) in enumerate(zip(arch, widths, strict=True), start=1):
        stages[f"block{i}"] = vgg_block(num_convs, channels, width, batch_norm)
        info.append(FeatureInfo(f"block{i}", width, 2**i))
        channels = width
    pre_logits = nn.Sequential(
        nn.AdaptiveAvgPool2d(7),
        nn.Flatten(),
        nn.Linear(channels * 7 * 7, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    )
    return Classifier(
        nn.Sequential(OrderedDict(stages)),
        pre_logits,
        4096,
        num_classes,
        in_channels,
        info,
        **kwargs,
    )


def _torchvision_key_map(arch: Sequence[tuple[int, int]], batch_norm: bool) -> Callable[[str], str]:
    """torchvision's VGG key -> the zoo's, for one configuration.

    torchvision's ``features`` is one flat ``Sequential``: per convolution ``conv, [bn], relu``,
    and a max-pool closing each block; its ``classifier`` is ``linear, relu, dropout`` twice and
    the last linear layer, which are ``pre_logits.2``, ``pre_logits.5`` and ``fc`` here.
    """
    modules = {"classifier.0": "pre_logits.2", "classifier.3": "pre_logits.5", "classifier.6": "fc"}
    index = 0
    for block, (num_convs, _) in enumerate(arch, start=1):
        for conv in range(num_convs):
            modules[f"features.{index}"] = f"features.block{block}.{conv}.0"
            if batch_norm:
                modules[f"features.{index + 1}"] = f"features.block{block}.{conv}.1"
            index += 3 if batch_norm else 2
        index += 1  # the block's max-pool

    def rename(key: str) -> str:
        module, _, param = key.rpartition(".")
        return f"{modules.get(module, module)}.{param}"

    return rename


def _variant(name: str, batch_norm: bool):
    def builder(*, num_classes: int = 1000, in_channels: int = 3, **kwargs) -> Classifier:
        return _build_vgg(
            VGG_ARCHS[name],
            num_classes=num_classes,
            in_channels=in_channels,
            batch_norm=batch_norm,
            **kwargs,
        )

    depth = name[3:]
    suffix = "_bn" if batch_norm else ""
    # torchvision names the enums VGG11_Weights, VGG11_BN_Weights, ...
    torchvision_weights = f"VGG{depth}{suffix.upper()}_Weights.IMAGENET1K_V1"
    builder.__name__ = builder.__qualname__ = name + suffix
    builder.__doc__ = (
        f"VGG-{depth}{' with batch norm after every convolution' if batch_norm else ''} "
        f"(configuration {VGG_ARCHS[name]}, Section 8.2). "
        "Keyword arguments: ``width_divisor``, ``dropout``, ``init``. "
        f"``weights='torchvision'`` loads {torchvision_weights}."
    )
    return register_model(
        task="classification",
        input_size=(3, 224, 224),
        torchvision_weights=torchvision_weights,
        torchvision_key_map=_torchvision_key_map(VGG_ARCHS[name], batch_norm),
    )(builder)


vgg11 = _variant("vgg11", batch_norm=False)
vgg13 = _variant("vgg13", batch_norm=False)
vgg16 = _variant("vgg16", batch_norm=False)
vgg19 = _variant("vgg19", batch_norm=False)
vgg11_bn = _variant("vgg11", batch_norm=True)
vgg13_bn = _variant("vgg13", batch_norm=True)
vgg16_bn = _variant("vgg16", batch_norm=True)
vgg19_bn = _variant("vgg19", batch_norm=True)
