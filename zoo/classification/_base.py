"""The contract every zoo classifier keeps, so one fine-tuning path, one backbone adapter and one
generic test serve them all (the timm model contract, kept small).

A classifier is ``features`` (an ``nn.Sequential`` of *named stages*) -> ``pre_logits`` (pooling,
flatten, hidden dense layers) -> ``fc`` (the replaceable last layer). ``feature_info`` names the
stages whose outputs detection and segmentation heads may tap, with their channels and stride.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import Tensor, nn

from zoo.layers import InitScheme, init_weights

__all__ = ["Classifier", "FeatureInfo"]


@dataclass(frozen=True)
class FeatureInfo:
    """A feature map a backbone offers: the stage that makes it, its channels, its stride.

    ``stride`` is nominal (input size / map size for inputs divisible by it, as torchvision and timm
    report it); valid convolutions without padding make the real map a pixel or two smaller.
    """

    name: str
    channels: int
    stride: int


class Classifier(nn.Module):
    """``features -> pre_logits -> fc``, with the timm-style surface.

    Args:
        features: named stages; their names are what ``feature_info`` refers to.
        pre_logits: turns the last feature map into a ``[B, num_features]`` vector.
        num_features: width of that vector (input width of ``fc``).
        num_classes: outputs of ``fc``; ``0`` makes ``fc`` the identity (a feature extractor).
        in_channels: channels the first stage expects (recorded for adapters and checkpoints).
        feature_info: the stages offered as feature maps, shallow to deep.
        init: weight initialisation scheme (see :func:`zoo.layers.init_weights`).
    """

    def __init__(
        self,
        features: nn.Sequential,
        pre_logits: nn.Module,
        num_features: int,
        num_classes: int,
        in_channels: int,
        feature_info: list[FeatureInfo] | None = None,
        init: InitScheme = "default",
    ) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = no classifier), got {num_classes}")
        self.features = features
        self.pre_logits = pre_logits
        self.num_features = num_features
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.feature_info = list(feature_info or [])
        stage_names = {name for name, _ in features.named_children()}
        missing = [info.name for info in self.feature_info if info.name not in stage_names]
        if missing:
            raise ValueError(
                f"feature_info names {missing} are not stages of {sorted(stage_names)}"
            )
        self.fc = self._make_fc(num_classes)
        init_weights(self, init)

    def _make_fc(self, num_classes: int) -> nn.Module:
        """The last layer; families whose head is not a linear layer (NiN) override this."""
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``fc`` by a freshly initialised one with ``num_classes`` outputs (fine-tuning)."""
        self.num_classes = num_classes
        device = next(self.parameters()).device
        self.fc = self._make_fc(num_classes).to(device)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature map (``[B, C, H, W]``; ``[B, D]`` for dense-only models)."""
        return self.features(x)

    def forward_intermediates(self, x: Tensor) -> dict[str, Tensor]:
        """Outputs of the stages named in ``feature_info``, in order, computed in one pass."""
        wanted = {info.name for info in self.feature_info}
        out: dict[str, Tensor] = OrderedDict()
        for name, stage in self.features.named_children():
            x = stage(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map to logits, or to the ``[B, num_features]`` vector when ``pre_logits``."""
        x = self.pre_logits(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
