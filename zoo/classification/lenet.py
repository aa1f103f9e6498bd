"""LeNet-5 (LeCun et al., 1998) as the course builds it (Section 7.6), and with batch norm (8.5)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from torch import nn

from zoo._registry import register_model
from zoo.classification._base import Classifier, FeatureInfo
from zoo.layers import make_activation

__all__ = ["lenet", "lenet_bn"]


def _build_lenet(
    *,
    num_classes: int,
    in_channels: int,
    activation: str,
    pooling: Literal["avg", "max"],
    batch_norm: bool,
    **kwargs,
) -> Classifier:
    if pooling not in ("avg", "max"):
        raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
    pool = nn.AvgPool2d if pooling == "avg" else nn.MaxPool2d

    def stage(cin: int, cout: int, padding: int) -> nn.Sequential:
        layers = [nn.Conv2d(cin, cout, kernel_size=5, padding=padding)]
        layers += [nn.BatchNorm2d(cout)] if batch_norm else []
        return nn.Sequential(*layers, make_activation(activation), pool(kernel_size=2, stride=2))

    def dense(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Linear(cin, cout), *([nn.BatchNorm1d(cout)] if batch_norm else [])] + [
            make_activation(activation)
        ]

    # The course pads the first convolution for 28x28 inputs (28 -> 28 -> 14 -> 10 -> 5) but not
    # in its batch-norm variant (28 -> 24 -> 12 -> 8 -> 4); both are kept as the course has them.
    padding = 0 if batch_norm else 2
    side = 4 if batch_norm else 5
    features = nn.Sequential(
        OrderedDict(block1=stage(in_channels, 6, padding), block2=stage(6, 16, 0))
    )
    pre_logits = nn.Sequential(nn.Flatten(), *dense(16 * side * side, 120), *dense(120, 84))
    return Classifier(
        features,
        pre_logits,
        num_features=84,
        num_classes=num_classes,
        in_channels=in_channels,
        feature_info=[FeatureInfo("block1", 6, 2), FeatureInfo("block2", 16, 4)],
        **kwargs,
    )


@register_model(task="classification", input_size=(1, 28, 28))
def lenet(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    activation: str = "sigmoid",
    pooling: Literal["avg", "max"] = "avg",
    **kwargs,
) -> Classifier:
    """LeNet-5 on 28x28 inputs: sigmoid and average pooling as in the course (Section 7.6).

    ``activation="relu", pooling="max"`` gives the modern variant, which trains much faster.
    """
    return _build_lenet(
        num_classes=num_classes,
        in_channels=in_channels,
        activation=activation,
        pooling=pooling,
        batch_norm=False,
        **kwargs,
    )


@register_model(task="classification", input_size=(1, 28, 28))
def lenet_bn(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    activation: str = "sigmoid",
    pooling: Literal["avg", "max"] = "avg",
    **kwargs,
) -> Classifier:
    """LeNet with batch normalisation after every conv and hidden dense layer (Section 8.5.4)."""
    return _build_lenet(
        num_classes=num_classes,
        in_channels=in_channels,
        activation=activation,
        pooling=pooling,
        batch_norm=True,
        **kwargs,
    )
