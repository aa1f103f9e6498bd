"""GoogLeNet (Szegedy et al., 2015) as the course builds it (Section 8.4): nine Inception blocks."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from zoo._registry import register_model
from zoo.classification._base import Classifier, FeatureInfo
from zoo.layers import Inception

__all__ = ["googlenet"]


@register_model(task="classification", input_size=(3, 224, 224))
def googlenet(*, num_classes: int = 1000, in_channels: int = 3, **kwargs) -> Classifier:
    """GoogLeNet: a 7x7 stem, a 1x1/3x3 stage, then 2 + 5 + 2 Inception blocks (Section 8.4.2).

    As in the course there is no batch norm and no auxiliary classifier; each of the first four
    stages ends with a stride-2 3x3 max-pool, so the last map is at stride 32.
    """
    relu = nn.ReLU

    def pool() -> nn.MaxPool2d:
        return nn.MaxPool2d(3, stride=2, padding=1)

    features = nn.Sequential(
        OrderedDict(
            {
                "b1": nn.Sequential(
                    nn.Conv2d(in_channels, 64, 7, stride=2, padding=3), relu(inplace=True), pool()
                ),
                "b2": nn.Sequential(
                    nn.Conv2d(64, 64, 1),
                    relu(inplace=True),
                    nn.Conv2d(64, 192, 3, padding=1),
                    relu(inplace=True),
                    pool(),
                ),
                "b3": nn.Sequential(
                    Inception(192, 64, (96, 128), (16, 32), 32),
                    Inception(256, 128, (128, 192), (32, 96), 64),
                    pool(),
                ),
                "b4": nn.Sequential(
                    Inception(480, 192, (96, 208), (16, 48), 64),
                    Inception(512, 160, (112, 224), (24, 64), 64),
                    Inception(512, 128, (128, 256), (24, 64), 64),
                    Inception(512, 112, (144, 288), (32, 64), 64),
                    Inception(528, 256, (160, 320), (32, 128), 128),
                    pool(),
                ),
                "b5": nn.Sequential(
                    Inception(832, 256, (160, 320), (32, 128), 128),
                    Inception(832, 384, (192, 384), (48, 128), 128),
                ),
            }
        )
    )
    pre_logits = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    info = [
        FeatureInfo("b1", 64, 4),
        FeatureInfo("b2", 192, 8),
        FeatureInfo("b3", 480, 16),
        FeatureInfo("b4", 832, 32),
        FeatureInfo("b5", 1024, 32),
    ]
    return Classifier(features, pre_logits, 1024, num_classes, in_channels, info, **kwargs)
