"""Loading trained weights: any checkpoint the zoo's tasks wrote, in pure PyTorch.

Checkpoints are read with ``torch.load(weights_only=True)`` (no pickled code runs) and carry a
plain ``"zoo"`` record: registry name, builder arguments, class names and preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo._registry import create_model

__all__ = ["PretrainedConfig", "load"]


@dataclass
class PretrainedConfig:
    """What a trained model needs beside its weights: class names and preprocessing.

    Attributes:
        class_names: one name per output, or ``None`` when training did not record them.
        mean, std: per-channel normalisation the model was trained with.
        image_size: side the inputs were resized to, ``None`` for the native size.
        in_channels: 1 for grey-scale models, 3 for colour.
        extra: the rest of the checkpoint's record, e.g. ``{"task": "classification"}``.
    """

    class_names: list[str] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    image_size: int | None = None
    in_channels: int = 3
    extra: dict[str, Any] = field(default_factory=dict)

    def transforms(self):
        """A torchvision ``v2`` pipeline from a PIL image or uint8 tensor to a model input."""
        from torchvision.transforms import v2

        steps: list[Any] = [v2.ToImage()]
        if self.in_channels == 1:
            steps.append(v2.Grayscale(num_output_channels=1))
        if self.image_size is not None:
            steps.append(v2.Resize((self.image_size, self.image_size), antialias=True))
        steps.append(v2.ToDtype(torch.float32, scale=True))
        if self.mean is not None and self.std is not None:
            steps.append(v2.Normalize(self.mean, self.std))
        return v2.Compose(steps)


# Keys of the checkpoint's "zoo" record that PretrainedConfig or the builder already holds.
_RECORD_FIELDS = {"model", "model_kwargs", "class_names", "mean", "std", "image_size"}


def load(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from a checkpoint written by a zoo task, in eval mode.

    The returned module has a ``pretrained_cfg`` (:class:`PretrainedConfig`) attribute, so::

        model = zoo.load("runs/lenet_digits/checkpoints/best.ckpt")
        probs = model(model.pretrained_cfg.transforms()(image)[None]).softmax(-1)

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a zoo checkpoint (no ``"zoo"`` record).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; training writes them under runs/<name>/checkpoints/"
        )
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    record = checkpoint.get("zoo") if isinstance(checkpoint, dict) else None
    if record is None or record.get("model") is None:
        raise ValueError(
            f"{path} has no 'zoo' record: it was not written by a zoo task trained from a registry "
            "name. Build the model yourself and load checkpoint['state_dict'] into it."
        )
    model = create_model(record["model"], **record.get("model_kwargs", {}))
    prefix = "model."
    state = {
        k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)
    }
    model.load_state_dict(state)
    model.pretrained_cfg = PretrainedConfig(
        class_names=record.get("class_names"),
        mean=record.get("mean"),
        std=record.get("std"),
        image_size=record.get("image_size"),
        in_channels=record.get("model_kwargs", {}).get("in_channels", 3),
        extra={k: v for k, v in record.items() if k not in _RECORD_FIELDS},
    )
    return model.eval()
