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
    batch_norm: bool,
    num_classes: int = 10,
    in_channels: int = 1,
    activation: str = "sigmoid",
    pooling: Literal["avg", "max"] = "avg",
    **kwargs,
) -> Classifier:
    """LeNet's two conv stages and three dense layers, for 28x28 inputs.

    Args:
        batch_norm: batch norm after every conv and hidden dense layer (Section 8.5.4).
        num_classes: outputs of the last layer.
        in_channels: input channels.
        activation: ``"sigmoid"`` as in the course, or ``"relu"`` / ``"tanh"``.
        pooling: ``"avg"`` as in the course, or ``"max"``.
        **kwargs: passed to :class:`Classifier` (``init``).
    """
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
def lenet(**kwargs) -> Classifier:
    """LeNet-5 on 28x28 inputs: sigmoid and average pooling as in the course (Section 7.6).

    ``activation="relu", pooling="max"`` gives the modern variant, which trains much faster.
    Arguments: see :func:`_build_lenet`.
    """
    return _build_lenet(batch_norm=False, **kwargs)


@register_model(task="classification", input_size=(1, 28, 28))
def lenet_bn(**kwargs) -> Classifier:
    """LeNet with batch normalisation after every conv and hidden dense layer (Section 8.5.4).

    The course drops the first convolution's padding here (28 -> 24 -> 12 -> 8 -> 4).
    Arguments: see :func:`_build_lenet`.
    """
    return _build_lenet(batch_norm=True, **kwargs)
