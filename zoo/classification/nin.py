"""Network in Network (Lin et al., 2013) as the course builds it (Section 8.3)."""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from zoo._registry import register_model
from zoo.classification._base import Classifier, FeatureInfo
from zoo.layers import narrow, nin_block

__all__ = ["NiN", "nin"]


class NiN(Classifier):
    """NiN has no dense layers: its last NiN block emits one channel per class, and global average
    pooling turns each channel into a logit. ``fc`` is that block, so ``reset_classifier`` and
    fine-tuning work as for any other family."""

    def _make_fc(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return nn.Sequential(
            nin_block(self.num_features, num_classes, kernel_size=3, stride=1, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """``pre_logits`` returns the globally pooled ``[B, num_features]`` features (384 at
        full width)."""
        x = self.pre_logits(x)
        if pre_logits:
            return x.mean(dim=(2, 3))
        return self.fc(x)


@register_model(task="classification", input_size=(3, 224, 224))
def nin(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    dropout: float = 0.5,
    width_divisor: int = 1,
    **kwargs,
) -> NiN:
    """NiN (Section 8.3.2): three NiN blocks with max-pooling, dropout, a class-wise NiN block
    and global average pooling. Inputs from 67x67 up reach the class-wise block with a map.

    ``width_divisor`` divides the three NiN blocks' channels (96-256-384; never below 1; the
    class-wise block keeps one channel per class): the course trains VGG-11 on Fashion-MNIST
    with ``4`` to keep it affordable (Section 8.2.3), and the same narrowing lets NiN learn small
    data in seconds.
    """
    c1, c2, c3 = narrow((96, 256, 384), width_divisor)
    features = nn.Sequential(
        OrderedDict(
            {
                "block1": nin_block(in_channels, c1, kernel_size=11, stride=4, padding=0),
                "block2": nn.Sequential(
                    nn.MaxPool2d(3, 2), nin_block(c1, c2, kernel_size=5, stride=1, padding=2)
                ),
                "block3": nn.Sequential(
                    nn.MaxPool2d(3, 2), nin_block(c2, c3, kernel_size=3, stride=1, padding=1)
                ),
                "pool": nn.MaxPool2d(3, 2),
            }
        )
    )
    info = [
        FeatureInfo("block1", c1, 4),
        FeatureInfo("block2", c2, 8),
        FeatureInfo("block3", c3, 16),
        FeatureInfo("pool", c3, 32),
    ]
    return NiN(features, nn.Dropout(dropout), c3, num_classes, in_channels, info, **kwargs)
