"""AlexNet (Krizhevsky et al., 2012) as the course builds it (Section 8.1.2)."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from zoo._registry import register_model
from zoo.classification._base import Classifier, FeatureInfo

__all__ = ["alexnet"]


@register_model(task="classification", input_size=(3, 224, 224))
def alexnet(
    *, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5, **kwargs
) -> Classifier:
    """AlexNet (Section 8.1.2): the paper's widths 96-256-384-384-256, two 4096-wide dense layers.

    The course's 224x224 input ends in a 5x5 map; an adaptive average pool to 5x5 (torchvision
    does the same at 6x6) lets any input from 63x63 up feed the same dense layers.
    """
    relu = nn.ReLU
    features = nn.Sequential(
        OrderedDict(
            {
                "stage1": nn.Sequential(
                    nn.Conv2d(in_channels, 96, 11, stride=4, padding=1), relu(inplace=True)
                ),
                "stage2": nn.Sequential(
                    nn.MaxPool2d(3, 2), nn.Conv2d(96, 256, 5, padding=2), relu(inplace=True)
                ),
                "stage3": nn.Sequential(
                    nn.MaxPool2d(3, 2),
                    nn.Conv2d(256, 384, 3, padding=1),
                    relu(inplace=True),
                    nn.Conv2d(384, 384, 3, padding=1),
                    relu(inplace=True),
                    nn.Conv2d(384, 256, 3, padding=1),
                    relu(inplace=True),
                ),
                "stage4": nn.MaxPool2d(3, 2),
            }
        )
    )
    pre_logits = nn.Sequential(
        nn.AdaptiveAvgPool2d(5),
        nn.Flatten(),
        nn.Linear(256 * 5 * 5, 4096),
        relu(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(4096, 4096),
        relu(inplace=True),
        nn.Dropout(dropout),
    )
    info = [
        FeatureInfo("stage1", 96, 4),
        FeatureInfo("stage2", 256, 8),
        FeatureInfo("stage3", 256, 16),
        FeatureInfo("stage4", 256, 32),
    ]
    return Classifier(features, pre_logits, 4096, num_classes, in_channels, info, **kwargs)
