"""Linear and fully-connected models: softmax regression, the perceptron, the MLP (Chapters 3-5).

They flatten their input, so they take images (``[B, C, H, W]``) as well as tabular rows
(``[B, D]``, with ``in_channels=D`` and ``image_size=1``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from zoo._registry import register_model
from zoo.classification._base import Classifier
from zoo.layers import InitScheme, make_activation

__all__ = ["MLP", "linear_regression", "mlp", "perceptron", "softmax_regression"]


def _flat_size(in_channels: int, image_size: int | Sequence[int]) -> int:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return in_channels * math.prod(size)


class MLP(Classifier):
    """Flatten, then ``Linear -> activation -> dropout`` per hidden layer, then a linear head.

    With no hidden layers this is softmax regression (Section 4.4); with hidden layers it is the
    multilayer perceptron (Section 5.1), and ``dropout`` is the course's inverted dropout applied
    after each hidden activation (Section 5.6).

    Args:
        num_classes: outputs of the last layer.
        in_channels: input channels (or features, for tabular rows with ``image_size=1``).
        image_size: input height and width; ``in_channels * H * W`` inputs feed the first layer.
        hidden_sizes: widths of the hidden layers.
        activation: ``"relu"``, ``"sigmoid"`` or ``"tanh"``.
        dropout: one drop probability for every hidden layer, or one per hidden layer.
        init: weight initialisation scheme.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int | Sequence[int] = 28,
        hidden_sizes: Sequence[int] = (),
        activation: str = "relu",
        dropout: float | Sequence[float] = 0.0,
        init: InitScheme = "default",
    ) -> None:
        hidden_sizes = list(hidden_sizes)
        drops = (
            [dropout] * len(hidden_sizes) if isinstance(dropout, (int, float)) else list(dropout)
        )
        if len(drops) != len(hidden_sizes):
            raise ValueError(
                f"dropout has {len(drops)} values for {len(hidden_sizes)} hidden layers; "
                "give one probability, or one per hidden layer"
            )
        if any(not 0.0 <= p < 1.0 for p in drops):
            raise ValueError(f"dropout probabilities must lie in [0, 1), got {drops}")
        width = _flat_size(in_channels, image_size)
        layers: dict[str, nn.Module] = {"flatten": nn.Flatten()}
        for i, (hidden, p) in enumerate(zip(hidden_sizes, drops, strict=True), start=1):
            block = [nn.Linear(width, hidden), make_activation(activation)]
            if p > 0:
                block.append(nn.Dropout(p))
            layers[f"hidden{i}"] = nn.Sequential(*block)
            width = hidden
        super().__init__(
            features=nn.Sequential(OrderedDict(layers)),
            pre_logits=nn.Identity(),
            num_features=width,
            num_classes=num_classes,
            in_channels=in_channels,
            init=init,
        )


@register_model(task="classification", input_size=(1, 28, 28))
def softmax_regression(*, num_classes: int = 10, in_channels: int = 1, **kwargs) -> MLP:
    """Softmax regression: one linear layer on flattened pixels (Section 4.4)."""
    return MLP(num_classes=num_classes, in_channels=in_channels, hidden_sizes=(), **kwargs)


@register_model(task="classification", input_size=(2, 1, 1))
def perceptron(*, num_classes: int = 2, in_channels: int = 2, image_size: int = 1, **kwargs) -> MLP:
    """A single linear threshold layer on 2-d points (Section 5.1.1): it cannot fit XOR.

    Defaults to XOR's shape (2 inputs, 2 classes); an MLP with one hidden layer can fit XOR.
    """
    return MLP(num_classes, in_channels, image_size, hidden_sizes=(), **kwargs)


@register_model(task="classification", input_size=(1, 28, 28))
def mlp(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    hidden_sizes: Sequence[int] = (256,),
    activation: str = "relu",
    dropout: float | Sequence[float] = 0.0,
    **kwargs,
) -> MLP:
    """Multilayer perceptron, by default the course's 784-256-10 ReLU network (Section 5.2)."""
    return MLP(
        num_classes=num_classes,
        in_channels=in_channels,
        hidden_sizes=hidden_sizes,
        activation=activation,
        dropout=dropout,
        **kwargs,
    )


@register_model(task="regression", input_size=(2,))
def linear_regression(*, in_features: int = 2, out_features: int = 1) -> nn.Linear:
    """Linear regression ``y = Xw + b`` (Section 3.1): one ``nn.Linear``."""
    return nn.Linear(in_features, out_features)
