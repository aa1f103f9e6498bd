"""``zoo.adapt``: the one way to fit a trained model to new data (Section 14.2, fine-tuning).

The course's recipe copies layers 1..L-1 of the source model, gives the target model a new output
layer initialised at random, and, when source and target share labels, starts the output rows of
those labels from the source classifier ("reuse classifier weights"). A different number of input
channels is handled by adapting the first layer's weights, so a grey image gives the same
activations as its RGB copy and a pretrained network keeps what it learnt.

Everything goes through the classifier contract (``reset_classifier``, ``get_classifier``,
``in_channels``), so it serves every zoo classifier and the detection and segmentation backbones
built from them.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
from torch import Tensor, nn

__all__ = ["adapt", "adapt_input_weight"]


def adapt(
    model: nn.Module,
    num_classes: int | None = None,
    in_channels: int | None = None,
    class_names: list[str] | None = None,
) -> nn.Module:
    """Fit ``model`` to data with other classes and/or channels, in place.

    Args:
        model: a zoo classifier (or anything with ``reset_classifier``, ``get_classifier`` and
            ``in_channels``), e.g. from ``zoo.create_model(name, weights=...)``.
        num_classes: outputs of the new head; defaults to ``len(class_names)``, or the current
            count. ``0`` removes the head (a feature extractor).
        in_channels: channels of the new inputs; the first layer's weights are summed or
            repeated and rescaled (see :func:`adapt_input_weight`).
        class_names: names of the new classes. Rows of the old head whose class name (from
            ``model.pretrained_cfg.class_names``) is also a new name are copied into the new
            head; the other rows are freshly initialised.

    Returns:
        ``model`` itself, with ``model.pretrained_cfg`` (when it has one) updated: class names,
        channels, and per-channel mean/std.

    The head is replaced when the number of classes or the class names change, and kept
    (weights untouched) when neither does.
    """
    if class_names is not None:
        class_names = list(class_names)
        if num_classes is None:
            num_classes = len(class_names)
        elif num_classes != len(class_names):
            raise ValueError(
                f"adapt: class_names has {len(class_names)} names for num_classes={num_classes}; "
                "give one name per class"
            )
    if num_classes is not None and num_classes < 0:
        raise ValueError(f"adapt: num_classes must be >= 0 (0 = no head), got {num_classes}")
    if in_channels is not None and in_channels < 1:
        raise ValueError(f"adapt: in_channels must be >= 1, got {in_channels}")
    cfg = getattr(model, "pretrained_cfg", None)
    old_names = list(cfg.class_names) if cfg is not None and cfg.class_names else None

    if in_channels is not None and in_channels != getattr(model, "in_channels", in_channels):
        _adapt_input_channels(model, in_channels)
    new_head = num_classes is not None and _head_changes(model, num_classes, old_names, class_names)
    if new_head:
        _new_head(model, num_classes, old_names, class_names)

    if cfg is not None:
        changes: dict = {"in_channels": getattr(model, "in_channels", cfg.in_channels)}
        if new_head or class_names is not None:  # a new head without names has none
            changes["class_names"] = class_names
        built_with = dict(cfg.model_kwargs)
        for key in ("num_classes", "in_channels"):  # the network is now built like this
            if key in built_with and hasattr(model, key):
                built_with[key] = getattr(model, key)
        changes["model_kwargs"] = built_with
        for key in ("mean", "std"):
            stats = getattr(cfg, key)
            if stats is not None and len(stats) != changes["in_channels"]:
                changes[key] = _adapt_stats(list(stats), changes["in_channels"])
        model.pretrained_cfg = dataclasses.replace(cfg, **changes)
    return model


def adapt_input_weight(weight: Tensor, in_channels: int) -> Tensor:
    """First-layer weights ``[out, C_old, ...]`` for ``in_channels`` inputs.

    When ``in_channels`` is a multiple ``k * C_old`` the old filters are repeated ``k`` times and
    divided by ``k`` (1 -> 3: a grey filter becomes three thirds); otherwise each new channel gets
    the sum of the old channels divided by ``in_channels`` (3 -> 1: the sum; 3 -> 4: a quarter of
    it). Either way an input whose channels are all equal (a grey image and its RGB copy) gives
    exactly the activations it gave before.
    """
    old_channels = weight.shape[1]
    if in_channels == old_channels:
        return weight.clone()
    if in_channels % old_channels == 0:
        repeats = in_channels // old_channels
        return weight.repeat(1, repeats, *([1] * (weight.dim() - 2))) / repeats
    summed = weight.sum(dim=1, keepdim=True) / in_channels
    return summed.expand(-1, in_channels, *weight.shape[2:]).contiguous()


def _first_layer(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return module
    raise TypeError(
        f"adapt: {type(model).__name__} has no Conv2d or Linear layer whose input channels "
        "could be adapted"
    )


def _adapt_input_channels(model: nn.Module, in_channels: int) -> None:
    layer = _first_layer(model)
    old_channels = model.in_channels
    with torch.no_grad():
        if isinstance(layer, nn.Conv2d):
            if layer.groups != 1:
                raise TypeError(
                    f"adapt: the first convolution is grouped (groups={layer.groups}); "
                    "changing its input channels is not supported"
                )
            layer.weight = nn.Parameter(adapt_input_weight(layer.weight, in_channels))
            layer.in_channels = in_channels
        else:
            # Flattened pixels (softmax regression, MLP): in_features = C * H * W, channel-major,
            # so the same rule applies to the [out, C, H * W] view of the weight.
            pixels = layer.in_features // old_channels
            weight = layer.weight.reshape(layer.out_features, old_channels, pixels)
            weight = adapt_input_weight(weight, in_channels).reshape(layer.out_features, -1)
            layer.weight = nn.Parameter(weight)
            layer.in_features = weight.shape[1]
            if layer is _head(model):  # softmax regression: the head is the first layer
                model.num_features = layer.in_features
    model.in_channels = in_channels


def _head(model: nn.Module) -> nn.Module | None:
    get = getattr(model, "get_classifier", None)
    return get() if get is not None else None


def _head_changes(
    model: nn.Module, num_classes: int, old_names: list[str] | None, new_names: list[str] | None
) -> bool:
    if not hasattr(model, "reset_classifier"):
        raise TypeError(
            f"adapt: {type(model).__name__} has no reset_classifier(num_classes); zoo classifiers "
            "(zoo.create_model) have one"
        )
    if num_classes != getattr(model, "num_classes", None):
        return True
    return new_names is not None and old_names is not None and new_names != old_names


def _new_head(
    model: nn.Module, num_classes: int, old_names: list[str] | None, new_names: list[str] | None
) -> None:
    old_head = _head(model)
    model.reset_classifier(num_classes)
    if not (old_names and new_names and num_classes):
        return
    old_index: dict[str, int] = {}
    for i, name in enumerate(old_names):
        old_index.setdefault(name, i)  # ImageNet names two classes "crane": keep the first
    shared = [(i, old_index[name]) for i, name in enumerate(new_names) if name in old_index]
    if not shared:
        return
    new_head = _head(model)
    # A linear layer, or a convolution scoring each class per pixel (segmenters): one output
    # row (channel) per class either way.
    rows_per_class = (nn.Linear, nn.Conv2d)
    if not (isinstance(old_head, rows_per_class) and type(new_head) is type(old_head)):
        warnings.warn(
            f"adapt: {len(shared)} class names are shared, but the head of "
            f"{type(model).__name__} is not a linear or convolutional layer, so its rows cannot "
            "be copied; the new head starts from a fresh initialisation",
            stacklevel=3,
        )
        return
    new_rows, old_rows = (torch.tensor(index) for index in zip(*shared, strict=True))
    with torch.no_grad():
        new_head.weight[new_rows] = old_head.weight[old_rows].to(new_head.weight)
        if new_head.bias is not None and old_head.bias is not None:
            new_head.bias[new_rows] = old_head.bias[old_rows].to(new_head.bias)


def _adapt_stats(stats: list[float], in_channels: int) -> list[float]:
    """Per-channel mean or std for the new channel count, following adapt_input_weight."""
    if in_channels % len(stats) == 0:
        return stats * (in_channels // len(stats))
    return [sum(stats) / len(stats)] * in_channels
