"""The model registry: one decorator per builder, one table for the CLI, tests and README.

Builders register themselves with :func:`register_model`; everything else (``create_model``,
``list_models``, ``model_info``, the ``zoo models`` table, the registry-parametrised tests) reads
the table. Adding an architecture therefore touches its own file and one import.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
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
        num_params: parameter count at default arguments (computed lazily, then cached).
    """

    name: str
    task: str
    family: str
    input_size: tuple[int, ...]
    builder: Callable[..., nn.Module] = field(repr=False, compare=False)

    @functools.cached_property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.builder().parameters())


_MODELS: dict[str, ModelInfo] = {}


def register_model(
    *,
    task: str,
    input_size: tuple[int, ...],
    family: str | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model builder under its function name.

    Args:
        task: what the model predicts (``"classification"``, ``"regression"``, ...).
        input_size: default input shape, ``(C, H, W)`` or ``(D,)``, used by tests and ``zoo models``.
        family: defaults to the module the builder lives in (``zoo.classification.vgg`` -> ``vgg``).

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
        )
        return builder

    return decorator


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (and ``task``), sorted."""
    return sorted(
        name
        for name, info in _MODELS.items()
        if fnmatch.fnmatch(name, pattern) and (task is None or info.task == task)
    )


def model_info(name: str) -> ModelInfo:
    """Registry entry of ``name``: task, family, default input size, parameter count."""
    try:
        return _MODELS[name]
    except KeyError:
        close = fnmatch.filter(_MODELS, f"*{name[:3]}*") if name else []
        hint = f" Did you mean one of {close}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} `zoo models` lists the {len(_MODELS)} registered models."
        ) from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model: ``create_model("resnet18", num_classes=10, in_channels=1)``."""
    return model_info(name).builder(**kwargs)
