"""Blocks shared by the zoo's families, each defined once (STYLE rule 3).

Conv-BN-activation comes from ``torchvision.ops.Conv2dNormActivation``; what the course derives
itself (VGG block, NiN block, Inception block, residual blocks, the bilinear-initialised
transposed convolution) is here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

__all__ = [
    "ACTIVATIONS",
    "BasicBlock",
    "Bottleneck",
    "Conv2dNormActivation",
    "Inception",
    "InitScheme",
    "bilinear_kernel",
    "bilinear_upsampling",
    "conv_output_size",
    "conv_transpose_output_size",
    "init_weights",
    "make_activation",
    "narrow",
    "nin_block",
    "vgg_block",
]

InitScheme = Literal["default", "xavier_uniform", "xavier_normal", "kaiming"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def make_activation(name: str) -> nn.Module:
    """``"relu"`` / ``"sigmoid"`` / ``"tanh"`` as a module (the course's three, Section 5.1.2)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
        ) from None


def init_weights(model: nn.Module, scheme: InitScheme = "default") -> nn.Module:
    """Initialise every conv and linear layer of ``model`` in place (Section 5.4.2).

    ``"default"`` keeps PyTorch's (and the family's own) initialisation; ``"xavier_*"`` draws with
    variance ``2 / (n_in + n_out)`` (Glorot & Bengio, 2010); ``"kaiming"`` uses ``2 / n_in`` for
    ReLU networks (He et al., 2015). Biases start at zero for the non-default schemes.
    """
    if scheme == "default":
        return model
    fns = {
        "xavier_uniform": nn.init.xavier_uniform_,
        "xavier_normal": nn.init.xavier_normal_,
        "kaiming": lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu"),
    }
    if scheme not in fns:
        raise ValueError(f"unknown init scheme {scheme!r}; choose default or one of {sorted(fns)}")
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            fns[scheme](module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def narrow(widths: Sequence[int], width_divisor: int) -> tuple[int, ...]:
    """Channel widths divided by ``width_divisor``, never below 1: the narrower networks the course
    trains on small data (VGG-11 with a quarter of its channels, Section 8.2.3).

    Raises:
        ValueError: ``width_divisor`` below 1.
    """
    if width_divisor < 1:
        raise ValueError(f"width_divisor must be >= 1, got {width_divisor}")
    return tuple(max(1, width // width_divisor) for width in widths)


def vgg_block(
    num_convs: int, in_channels: int, out_channels: int, batch_norm: bool = False
) -> nn.Sequential:
    """``num_convs`` 3x3 convolutions (+BN) + ReLU, then a 2x2 max-pool (Section 8.2.1)."""
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers.append(
            Conv2dNormActivation(
                in_channels if i == 0 else out_channels,
                out_channels,
                kernel_size=3,
                norm_layer=nn.BatchNorm2d if batch_norm else None,
                bias=True,  # kept before BN too, as torchvision's VGG has it (weights load 1:1)
            )
        )
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def nin_block(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int
) -> nn.Sequential:
    """A convolution followed by two 1x1 convolutions, each with ReLU (Section 8.3.1).

    The 1x1 convolutions act as a dense layer applied to every pixel.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=1),
        nn.ReLU(inplace=True),
    )


class Inception(nn.Module):
    """The Inception v1 block: four parallel paths concatenated on channels (Section 8.4.1).

    Args:
        in_channels: input channels.
        c1: channels of the 1x1 path.
        c2: (1x1 reduction, 3x3) channels of the second path.
        c3: (1x1 reduction, 5x5) channels of the third path.
        c4: channels of the 1x1 conv after the 3x3 max-pool.
    """

    def __init__(
        self,
        in_channels: int,
        c1: int,
        c2: tuple[int, int],
        c3: tuple[int, int],
        c4: int,
    ) -> None:
        super().__init__()
        relu = nn.ReLU
        self.branch1 = nn.Sequential(nn.Conv2d(in_channels, c1, 1), relu(inplace=True))
        self.branch2 = nn.Sequential(
            nn.Conv2d(in_channels, c2[0], 1),
            relu(inplace=True),
            nn.Conv2d(c2[0], c2[1], 3, padding=1),
            relu(inplace=True),
        )
        self.branch3 = nn.Sequential(
            nn.Conv2d(in_channels, c3[0], 1),
            relu(inplace=True),
            nn.Conv2d(c3[0], c3[1], 5, padding=2),
            relu(inplace=True),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(in_channels, c4, 1), relu(inplace=True)
        )
        self.out_channels = c1 + c2[1] + c3[1] + c4

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """1x1 conv + BN on the shortcut when the shape changes (He et al., 2016, option B)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus the input: ``relu(F(x) + x)`` (Section 8.6.2).

    Module names follow torchvision's ``BasicBlock`` so its ImageNet state dicts map one to one.
    Unlike the course's ``Residual``, convolutions before BN carry no bias (BN cancels it) and the
    1x1 projection shortcut is batch-normalised, as in torchvision. ``dilation`` spaces both 3x3
    kernels' taps (atrous convolution, for segmentation backbones of a smaller output stride).
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, channels, 3, stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(
            channels, channels, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = _projection(in_channels, channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # In place, as torchvision: one tensor less per block (BN's backward keeps its input).
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, "ResNet v1.5", and any ``dilation``), 1x1 expand x4
    (Section 8.6.5)."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(
            channels, channels, 3, stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """``floor((n + 2p - k) / s) + 1``: the conv/pool output-size formula (Section 7.3)."""
    return math.floor((size + 2 * padding - kernel_size) / stride) + 1


def conv_transpose_output_size(
    size: int, kernel_size: int, stride: int = 1, padding: int = 0
) -> int:
    """``s * n + k - 2p - s``: the transposed convolution's output size (Section 14.10.2), the
    inverse of :func:`conv_output_size` for the same ``k, s, p``. With ``k = 2p + s`` it is
    ``s * n``: the input upsampled ``s`` times."""
    return stride * size + kernel_size - 2 * padding - stride


def bilinear_kernel(in_channels: int, out_channels: int, kernel_size: int) -> Tensor:
    """Weights ``[in_channels, out_channels, k, k]`` that make a transposed convolution upsample
    by bilinear interpolation (Section 14.11.2): channel ``i`` maps to channel ``i`` through the
    separable tent ``(1 - |x - c| / f)(1 - |y - c| / f)``, with ``f = ceil(k / 2)`` and ``c`` the
    kernel's centre; pairs of different channels get zeros.

    With stride ``f`` and padding ``(k - f) / 2``, the output equals bilinear interpolation of the
    input (``align_corners=False``) away from the border, where zero padding darkens it.
    """
    if min(in_channels, out_channels, kernel_size) < 1:
        raise ValueError(
            f"bilinear_kernel: in_channels={in_channels}, out_channels={out_channels} and "
            f"kernel_size={kernel_size} must all be positive"
        )
    factor = (kernel_size + 1) // 2
    centre = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = torch.arange(kernel_size, dtype=torch.float32)
    tent = 1 - (taps - centre).abs() / factor
    weight = torch.zeros(in_channels, out_channels, kernel_size, kernel_size)
    diagonal = torch.arange(min(in_channels, out_channels))
    weight[diagonal, diagonal] = tent[:, None] * tent[None, :]
    return weight


def bilinear_upsampling(channels: int, factor: int) -> nn.ConvTranspose2d:
    """A learnable transposed convolution that upsamples ``channels`` maps ``factor`` times, its
    weights initialised by :func:`bilinear_kernel` (the course's FCN: kernel 64, stride 32, padding
    16 for ``factor=32``). The kernel is ``2 * factor`` (``2 * factor - 1`` for odd factors), so
    ``k = 2p + s`` and the output is exactly ``factor`` times the input."""
    if factor < 1:
        raise ValueError(f"bilinear_upsampling: factor={factor} must be at least 1")
    kernel_size = 2 * factor - factor % 2
    padding = (kernel_size - factor) // 2
    layer = nn.ConvTranspose2d(
        channels, channels, kernel_size, stride=factor, padding=padding, bias=False
    )
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(channels, channels, kernel_size))
    return layer
