"""AlexNet (Krizhevsky et al., 2012) as the course builds it (Section 8.1.2), and as torchvision
ships it with ImageNet weights."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from zoo._registry import register_model
from zoo.classification._base import Classifier, FeatureInfo
from zoo.layers import narrow

__all__ = ["alexnet", "alexnet_torchvision"]


def _build_alexnet(
    widths: Sequence[int],
    *,
    padding: int,
    pooled_size: int,
    dropout_first: bool,
    num_classes: int,
    in_channels: int,
    dropout: float,
    hidden_width: int,
    **kwargs,
) -> Classifier:
    """Five convolutions (11x11/4, 5x5, three 3x3) in four stages at strides 4 to 32, an adaptive
    average pool and two hidden dense layers with dropout.

    Args:
        widths: output channels of the five convolutions.
        padding: padding of the first convolution.
        pooled_size: side of the pooled map that feeds the dense layers.
        dropout_first: dropout before each hidden dense layer (torchvision) instead of after it
            (the course).
        hidden_width: width of the two hidden dense layers.
    """
    c1, c2, c3, c4, c5 = widths
    relu = nn.ReLU
    features = nn.Sequential(
        OrderedDict(
            {
                "stage1": nn.Sequential(
                    nn.Conv2d(in_channels, c1, 11, stride=4, padding=padding), relu(inplace=True)
                ),
                "stage2": nn.Sequential(
                    nn.MaxPool2d(3, 2), nn.Conv2d(c1, c2, 5, padding=2), relu(inplace=True)
                ),
                "stage3": nn.Sequential(
                    nn.MaxPool2d(3, 2),
                    nn.Conv2d(c2, c3, 3, padding=1),
                    relu(inplace=True),
                    nn.Conv2d(c3, c4, 3, padding=1),
                    relu(inplace=True),
                    nn.Conv2d(c4, c5, 3, padding=1),
                    relu(inplace=True),
                ),
                "stage4": nn.MaxPool2d(3, 2),
            }
        )
    )

    def hidden(in_features: int) -> list[nn.Module]:
        layers = [nn.Linear(in_features, hidden_width), relu(inplace=True)]
        return [nn.Dropout(dropout), *layers] if dropout_first else [*layers, nn.Dropout(dropout)]

    pre_logits = nn.Sequential(
        nn.AdaptiveAvgPool2d(pooled_size),
        nn.Flatten(),
        *hidden(c5 * pooled_size * pooled_size),
        *hidden(hidden_width),
    )
    info = [
        FeatureInfo("stage1", c1, 4),
        FeatureInfo("stage2", c2, 8),
        FeatureInfo("stage3", c5, 16),
        FeatureInfo("stage4", c5, 32),
    ]
    return Classifier(features, pre_logits, hidden_width, num_classes, in_channels, info, **kwargs)


@register_model(task="classification", input_size=(3, 224, 224))
def alexnet(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    dropout: float = 0.5,
    width_divisor: int = 1,
    **kwargs,
) -> Classifier:
    """AlexNet (Section 8.1.2): the paper's widths 96-256-384-384-256, two 4096-wide dense layers.

    The course's 224x224 input ends in a 5x5 map; an adaptive average pool to 5x5 (torchvision
    does the same at 6x6) lets any input from 65x65 up feed the same dense layers (the first
    convolution is padded by 1, not torchvision's 2, so 63 and 64 end in an empty map).

    ``width_divisor`` divides every convolution's channels and the dense layers' 4096 (never
    below 1): the course trains VGG-11 on Fashion-MNIST with ``4`` to keep it affordable
    (Section 8.2.3), and the same narrowing lets AlexNet learn small data in seconds.
    """
    *widths, hidden_width = narrow((96, 256, 384, 384, 256, 4096), width_divisor)
    return _build_alexnet(
        tuple(widths),
        padding=1,
        pooled_size=5,
        dropout_first=False,
        num_classes=num_classes,
        in_channels=in_channels,
        dropout=dropout,
        hidden_width=hidden_width,
        **kwargs,
    )


# torchvision's flat `features` and `classifier` indices -> the zoo's stages and head.
_TORCHVISION_MODULES = {
    "features.0": "features.stage1.0",
    "features.3": "features.stage2.1",
    "features.6": "features.stage3.1",
    "features.8": "features.stage3.3",
    "features.10": "features.stage3.5",
    "classifier.1": "pre_logits.3",
    "classifier.4": "pre_logits.6",
    "classifier.6": "fc",
}


def _torchvision_key(key: str) -> str:
    module, _, param = key.rpartition(".")
    return f"{_TORCHVISION_MODULES.get(module, module)}.{param}"


@register_model(
    task="classification",
    input_size=(3, 224, 224),
    torchvision_weights="AlexNet_Weights.IMAGENET1K_V1",
    torchvision_key_map=_torchvision_key,
)
def alexnet_torchvision(
    *, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5, **kwargs
) -> Classifier:
    """AlexNet as torchvision ships it, for its ImageNet weights (the model of Section 8.1.2).

    torchvision follows Krizhevsky's "one weird trick" paper (2014), not the 2012 one the course
    builds: widths 64-192-384-256-256, the first convolution padded by 2, a 6x6 adaptive pool,
    and dropout before each hidden dense layer rather than after it.
    ``weights='torchvision'`` loads AlexNet_Weights.IMAGENET1K_V1.
    """
    return _build_alexnet(
        (64, 192, 384, 256, 256),
        padding=2,
        pooled_size=6,
        dropout_first=True,
        num_classes=num_classes,
        in_channels=in_channels,
        dropout=dropout,
        hidden_width=4096,
        **kwargs,
    )
