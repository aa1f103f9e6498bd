"""GoogLeNet (Szegedy et al., 2015) as the course builds it (Section 8.4): nine Inception blocks;
and as torchvision ships it with ImageNet weights, with batch norm."""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from torch import Tensor, nn

from zoo._registry import register_model
from zoo.classification._base import Classifier, FeatureInfo
from zoo.layers import Conv2dNormActivation, Inception, InitScheme, narrow

__all__ = ["InceptionBN", "googlenet", "googlenet_torchvision"]

# torchvision's BasicConv2d: conv (no bias) -> BN with eps 1e-3 (the ported weights' value) -> ReLU.
_ConvBN = partial(Conv2dNormActivation, norm_layer=partial(nn.BatchNorm2d, eps=1e-3))

# The nine Inception blocks of Table 1 (Szegedy et al., 2015) as (in, c1, c2, c3, c4), by stage;
# both variants stack them, with the course's block or torchvision's conv-BN one.
_INCEPTIONS: dict[str, tuple[tuple, ...]] = {
    "b3": ((192, 64, (96, 128), (16, 32), 32), (256, 128, (128, 192), (32, 96), 64)),
    "b4": (
        (480, 192, (96, 208), (16, 48), 64),
        (512, 160, (112, 224), (24, 64), 64),
        (512, 128, (128, 256), (24, 64), 64),
        (512, 112, (144, 288), (32, 64), 64),
        (528, 256, (160, 320), (32, 128), 128),
    ),
    "b5": ((832, 256, (160, 320), (32, 128), 128), (832, 384, (192, 384), (48, 128), 128)),
}
_INFO = [
    FeatureInfo("b1", 64, 4),
    FeatureInfo("b2", 192, 8),
    FeatureInfo("b3", 480, 16),
    FeatureInfo("b4", 832, 32),
    FeatureInfo("b5", 1024, 32),
]


def _narrowed(width_divisor: int) -> tuple[dict[str, tuple[tuple, ...]], list[FeatureInfo]]:
    """``_INCEPTIONS`` and ``_INFO`` with every convolution's channels divided (never below 1).

    Each block's input is the previous block's output: the sum of four divided widths, which can
    differ from the table's input divided (``width_divisor=1`` gives the table back).
    """

    stem = _INFO[:2]
    widths = narrow([full.channels for full in stem], width_divisor)
    info = [FeatureInfo(full.name, w, full.stride) for full, w in zip(stem, widths, strict=True)]
    channels = info[-1].channels
    inceptions: dict[str, tuple[tuple, ...]] = {}
    for (stage, configs), full in zip(_INCEPTIONS.items(), _INFO[2:], strict=True):
        blocks = []
        for _, c1, c2, c3, c4 in configs:
            (c1, c4), c2, c3 = (
                narrow((c1, c4), width_divisor),
                narrow(c2, width_divisor),
                narrow(c3, width_divisor),
            )
            blocks.append((channels, c1, c2, c3, c4))
            channels = c1 + c2[1] + c3[1] + c4
        inceptions[stage] = tuple(blocks)
        info.append(FeatureInfo(stage, channels, full.stride))
    return inceptions, info


def _inception_stages(
    block: type[nn.Module],
    pool3: nn.Module,
    pool4: nn.Module,
    inceptions: dict[str, tuple[tuple, ...]] = _INCEPTIONS,
) -> dict[str, nn.Sequential]:
    """Stages b3-b5: Inception blocks, with a stride-2 max-pool closing b3 and b4."""
    stages = {name: [block(*config) for config in configs] for name, configs in inceptions.items()}
    return {
        "b3": nn.Sequential(*stages["b3"], pool3),
        "b4": nn.Sequential(*stages["b4"], pool4),
        "b5": nn.Sequential(*stages["b5"]),
    }


class InceptionBN(nn.Module):
    """The Inception block of torchvision's GoogLeNet: conv-BN-ReLU units (Section 8.5), and a
    3x3 convolution where the paper has 5x5, which its ImageNet weights need
    (pytorch/vision#906). Arguments as for :class:`zoo.layers.Inception`."""

    def __init__(
        self, in_channels: int, c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int
    ) -> None:
        super().__init__()
        self.branch1 = _ConvBN(in_channels, c1, kernel_size=1)
        self.branch2 = nn.Sequential(
            _ConvBN(in_channels, c2[0], kernel_size=1), _ConvBN(c2[0], c2[1], kernel_size=3)
        )
        self.branch3 = nn.Sequential(
            _ConvBN(in_channels, c3[0], kernel_size=1), _ConvBN(c3[0], c3[1], kernel_size=3)
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
            _ConvBN(in_channels, c4, kernel_size=1),
        )
        self.out_channels = c1 + c2[1] + c3[1] + c4

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class _TransformInput(nn.Module):
    """torchvision's ``transform_input``: inputs normalised with ImageNet's mean and std become
    inputs normalised with mean 0.5 and std 0.5, which GoogLeNet's ported weights expect."""

    def __init__(self) -> None:
        super().__init__()
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        # Not saved: fixed by the architecture, and absent from torchvision's state dict.
        self.register_buffer("scale", std / 0.5, persistent=False)
        self.register_buffer("shift", (mean - 0.5) / 0.5, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.scale, self.shift
        channels = x.shape[1]
        if channels != 3:
            # zoo.adapt fitted the model to other channels and the normalisation with them: mean
            # and std repeated for a multiple of 3, else averaged. The map is affine in mean and
            # std, so the same rule applied to it keeps grey inputs exact.
            if channels % 3 == 0:
                repeats = (1, channels // 3, 1, 1)
                scale, shift = scale.repeat(repeats), shift.repeat(repeats)
            else:
                scale, shift = scale.mean(1, keepdim=True), shift.mean(1, keepdim=True)
        return x * scale + shift


@register_model(task="classification", input_size=(3, 224, 224))
def googlenet(
    *, num_classes: int = 1000, in_channels: int = 3, width_divisor: int = 1, **kwargs
) -> Classifier:
    """GoogLeNet: a 7x7 stem, a 1x1/3x3 stage, then 2 + 5 + 2 Inception blocks (Section 8.4.2).

    As in the course there is no batch norm and no auxiliary classifier; each of the first four
    stages ends with a stride-2 3x3 max-pool, so the last map is at stride 32.

    ``width_divisor`` divides every convolution's channels, in the stem and in each Inception
    path (never below 1): the course trains VGG-11 on Fashion-MNIST with ``4`` to keep it
    affordable (Section 8.2.3), and the same narrowing lets GoogLeNet learn small data in seconds.
    """
    inceptions, info = _narrowed(width_divisor)
    c1, c2 = info[0].channels, info[1].channels
    relu = nn.ReLU

    def pool() -> nn.MaxPool2d:
        return nn.MaxPool2d(3, stride=2, padding=1)

    features = nn.Sequential(
        OrderedDict(
            {
                "b1": nn.Sequential(
                    nn.Conv2d(in_channels, c1, 7, stride=2, padding=3), relu(inplace=True), pool()
                ),
                "b2": nn.Sequential(
                    nn.Conv2d(c1, c1, 1),
                    relu(inplace=True),
                    nn.Conv2d(c1, c2, 3, padding=1),
                    relu(inplace=True),
                    pool(),
                ),
                **_inception_stages(Inception, pool(), pool(), inceptions),
            }
        )
    )
    pre_logits = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    num_features = info[-1].channels
    return Classifier(features, pre_logits, num_features, num_classes, in_channels, info, **kwargs)


# torchvision's top-level modules -> the zoo's stages; inside them, BasicConv2d's conv/bn are the
# conv-BN unit's 0/1.
_TORCHVISION_MODULES = {
    "conv1": "b1.0",
    "conv2": "b2.0",
    "conv3": "b2.1",
    "inception3a": "b3.0",
    "inception3b": "b3.1",
    "inception4a": "b4.0",
    "inception4b": "b4.1",
    "inception4c": "b4.2",
    "inception4d": "b4.3",
    "inception4e": "b4.4",
    "inception5a": "b5.0",
    "inception5b": "b5.1",
}


def _torchvision_key(key: str) -> str | None:
    module, _, rest = key.partition(".")
    if module in ("aux1", "aux2"):
        return None  # the auxiliary classifiers only help training; the zoo model has none
    if module not in _TORCHVISION_MODULES:
        return key  # fc
    rest = ".".join({"conv": "0", "bn": "1"}.get(part, part) for part in rest.split("."))
    return f"features.{_TORCHVISION_MODULES[module]}.{rest}"


@register_model(
    task="classification",
    input_size=(3, 224, 224),
    torchvision_weights="GoogLeNet_Weights.IMAGENET1K_V1",
    torchvision_key_map=_torchvision_key,
    torchvision_kwargs={"transform_input": True},
)
def googlenet_torchvision(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    transform_input: bool = False,
    dropout: float = 0.2,
    init: InitScheme = "default",
    **kwargs,
) -> Classifier:
    """GoogLeNet as torchvision ships it, for its ImageNet weights (the model of Section 8.4).

    Unlike the course's: a conv-BN-ReLU unit for every convolution (Section 8.5), 3x3 instead of
    5x5 convolutions in the third Inception path, ceil-mode max-pools (the last one 2x2), and
    dropout before the classifier. torchvision's auxiliary classifiers are left out (their keys
    are dropped when loading).

    Args:
        num_classes: outputs of the classifier.
        in_channels: input channels.
        transform_input: re-normalise inputs from ImageNet's mean/std to mean 0.5, std 0.5 first,
            as torchvision does for its weights: ``weights='torchvision'`` turns it on unless
            given (GoogLeNet_Weights.IMAGENET1K_V1). Those weights without it expect inputs
            normalised with mean 0.5 and std 0.5.
        dropout: before the classifier.
        init: ``"default"`` is torchvision's truncated normal (std 0.01) for convolutions and
            linear layers; other schemes as in :func:`zoo.layers.init_weights`.
    """

    def pool(kernel_size: int = 3) -> nn.MaxPool2d:
        return nn.MaxPool2d(kernel_size, stride=2, ceil_mode=True)

    features = nn.Sequential(
        OrderedDict(
            {
                "transform_input": _TransformInput() if transform_input else nn.Identity(),
                "b1": nn.Sequential(_ConvBN(in_channels, 64, kernel_size=7, stride=2), pool()),
                "b2": nn.Sequential(
                    _ConvBN(64, 64, kernel_size=1), _ConvBN(64, 192, kernel_size=3), pool()
                ),
                **_inception_stages(InceptionBN, pool(), pool(2)),
            }
        )
    )
    pre_logits = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
    model = Classifier(
        features, pre_logits, 1024, num_classes, in_channels, _INFO, init=init, **kwargs
    )
    if init == "default":
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.01, a=-2, b=2)
    return model
