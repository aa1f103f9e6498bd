"""The model registry: one decorator per builder, one table for the CLI, tests and README.

Builders register themselves with :func:`register_model`; everything else (``create_model``,
``list_models``, ``model_info``, the ``zoo models`` table, the registry-parametrised tests) reads
the table. Adding an architecture therefore touches its own file and one import. A family that
torchvision also ships declares, at registration, which torchvision weights each variant loads and
how torchvision's state-dict keys map onto its own.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["ModelInfo", "register_model", "create_model", "list_models", "model_info"]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a builder without building it twice.

    Attributes:
        name: registry name, e.g. ``"resnet18"``.
        task: ``"classification"``, ``"regression"``, ``"detection"``, ``"segmentation"``, ...
        family: the file it comes from, e.g. ``"resnet"``.
        input_size: default input shape without the batch: ``(C, H, W)`` for images, ``(D,)`` for rows.
        builder: the function that builds it.
        torchvision_weights: the torchvision weights ``create_model(name, weights="torchvision")``
            loads, named as ``torchvision.models.get_weight`` takes them
            (``"ResNet18_Weights.IMAGENET1K_V1"``); ``None`` when torchvision has none.
        torchvision_key_map: maps a key of torchvision's state dict to the zoo model's key
            (``None`` drops it, e.g. GoogLeNet's auxiliary classifiers).
        torchvision_kwargs: builder arguments those weights were trained with, beside
            ``num_classes`` and ``in_channels`` (GoogLeNet's ``transform_input=True``).
        torchvision_mean_std: the per-channel ``(mean, std)`` torchvision's detectors normalise
            with inside the model, which zoo detectors leave to the data: what the weights'
            ``pretrained_cfg`` records when their preset does not say (detection presets don't).
        num_params: parameter count at default arguments (computed lazily, then cached).
    """

    name: str
    task: str
    family: str
    input_size: tuple[int, ...]
    builder: Callable[..., nn.Module] = field(repr=False, compare=False)
    torchvision_weights: str | None = None
    torchvision_key_map: Callable[[str], str | None] | None = field(
        default=None, repr=False, compare=False
    )
    torchvision_kwargs: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    torchvision_mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @functools.cached_property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.builder().parameters())


_MODELS: dict[str, ModelInfo] = {}


def register_model(
    *,
    task: str,
    input_size: tuple[int, ...],
    family: str | None = None,
    torchvision_weights: str | None = None,
    torchvision_key_map: Callable[[str], str | None] | None = None,
    torchvision_kwargs: dict[str, Any] | None = None,
    torchvision_mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model builder under its function name.

    Args:
        task: what the model predicts (``"classification"``, ``"regression"``, ...).
        input_size: default input shape, ``(C, H, W)`` or ``(D,)``, used by tests and ``zoo models``.
        family: defaults to the module the builder lives in (``zoo.classification.vgg`` -> ``vgg``).
        torchvision_weights: torchvision's weights for this architecture, e.g.
            ``"ResNet18_Weights.IMAGENET1K_V1"`` (see :class:`ModelInfo`).
        torchvision_key_map: torchvision state-dict key -> zoo key; defaults to the identity.
        torchvision_kwargs: builder arguments the torchvision weights need (see :class:`ModelInfo`).
        torchvision_mean_std: normalisation of torchvision's detection weights (see
            :class:`ModelInfo`).

    Raises:
        ValueError: if a model of that name is already registered.
    """

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _MODELS:
            raise ValueError(
                f"model {name!r} is already registered (by {_MODELS[name].builder.__module__}); "
                "give the new builder another name"
            )
        _MODELS[name] = ModelInfo(
            name=name,
            task=task,
            family=family or builder.__module__.rsplit(".", 1)[-1],
            input_size=tuple(input_size),
            builder=builder,
            torchvision_weights=torchvision_weights,
            torchvision_key_map=torchvision_key_map,
            torchvision_kwargs=dict(torchvision_kwargs or {}),
            torchvision_mean_std=torchvision_mean_std,
        )
        return builder

    return decorator


def list_models(pattern: str = "*", task: str | None = None, pretrained: bool = False) -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (and ``task``), sorted.

    ``pretrained=True`` keeps the models with torchvision weights (``weights="torchvision"``).
    """
    return sorted(
        name
        for name, info in _MODELS.items()
        if fnmatch.fnmatch(name, pattern)
        and (task is None or info.task == task)
        and (not pretrained or info.torchvision_weights is not None)
    )


def model_info(name: str) -> ModelInfo:
    """Registry entry of ``name``: task, family, default input size, torchvision weights, size."""
    try:
        return _MODELS[name]
    except KeyError:
        # Spelling first (resnet81 -> resnet18), then names sharing the first letters.
        close = difflib.get_close_matches(name, _MODELS, n=3, cutoff=0.75)
        close = close or (fnmatch.filter(_MODELS, f"{name[:3]}*") if name else [])
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} `zoo models` lists the {len(_MODELS)} registered models."
        ) from None


def create_model(
    name: str,
    weights: str | Path | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model, optionally with trained weights.

    ``create_model("resnet18", num_classes=10, in_channels=1)`` builds it from scratch;
    ``create_model("resnet18", weights="torchvision", num_classes=10)`` loads torchvision's
    ImageNet weights, then fits the head to 10 classes with :func:`zoo.adapt`.

    Args:
        name: registry name (``zoo models`` lists them).
        weights: ``None`` (random initialisation); ``"torchvision"`` (the weights the family
            declares; ``"torchvision:ResNet50_Weights.IMAGENET1K_V1"`` picks another entry); a
            path to a state dict (``.pth``/``.pt``, zoo or torchvision key layout), a
            ``.safetensors`` file, or a checkpoint a zoo task wrote; or an ``http(s)://`` or
            ``file://`` URL whose file name carries its SHA-256 prefix (``name-<sha256>.pth``).
            See :func:`zoo.weights.load_weights`.
        pretrained_cfg_overlay: fields of the weights' :class:`zoo.PretrainedConfig` to set or
            replace, e.g. ``{"mean": [...], "std": [...], "class_names": [...]}`` for a bare
            state dict, which records none (timm's argument of the same name).
        **kwargs: builder arguments. With ``weights``, a ``num_classes`` or ``in_channels`` other
            than the weights' is reached by loading at the weights' shape, then adapting.

    Returns:
        The model, in training mode as built. Loaded models carry ``pretrained_cfg``
        (:class:`zoo.PretrainedConfig`: class names, mean/std, input size, source).
    """
    info = model_info(name)
    if weights is None and pretrained_cfg_overlay is None:
        return info.builder(**kwargs)
    divisor = kwargs.get("width_divisor", 1)
    if divisor != 1 and str(weights).startswith("torchvision"):  # (before any download)
        raise ValueError(
            f"width_divisor={divisor} narrows {name!r}, but torchvision's weights fit only its "
            "published widths: drop width_divisor, or pass weights=None to train it from scratch"
        )
    from zoo.weights import load_weights, scratch_config  # they build on this module

    if weights is None:  # a config to train towards, e.g. the data's mean and std
        model = info.builder(**kwargs)
        model.pretrained_cfg = scratch_config(name, model, kwargs, pretrained_cfg_overlay)
        return model
    return load_weights(info, weights, pretrained_cfg_overlay, **kwargs)
