"""Exporting trained models for use without the zoo: safetensors, ONNX and ``torch.export``.

Every exported file carries the checkpoint's plain ``"zoo"`` record (registry name, builder
arguments, class names, mean/std, image size), JSON-encoded, so whoever runs the file knows what
the outputs mean and how to prepare an image:

- ``.safetensors``: the ``state_dict`` as written by the model, metadata ``{"zoo": ..., "format":
  "pt"}``; ``zoo.create_model(record["model"], **record["model_kwargs"])`` takes it with
  ``strict=True``.
- ``.onnx``: one self-contained file, input ``"images"`` ``[N, C, H, W]`` and output ``"logits"``
  with a dynamic batch axis; the record in ``metadata_props`` (``"zoo"``, and readable
  ``"class_names"``, ``"mean"``, ``"std"``, ``"image_size"``). Needs ``pip install
  'lightning-zoo[export]'``.
- ``.pt2``: a ``torch.export`` program with a dynamic batch dimension and the record in the
  extra file ``"zoo.json"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo._registry import model_info
from zoo.weights import load

__all__ = ["FORMATS", "checkpoint_record", "export_checkpoint", "export_model"]

# Export format -> file extension, in the order `zoo export --format` lists them.
FORMATS = {"safetensors": ".safetensors", "onnx": ".onnx", "pt2": ".pt2"}

# torch.onnx's exporter has implementations for opset 18 and newer only. Older opsets go through
# a version converter that fails on common models (Conv, Reduce*) and then silently keeps 18.
MIN_ONNX_OPSET = 18

# Keys of the record that ONNX metadata also carries on their own, for tools that show them.
_READABLE_ONNX_KEYS = ("class_names", "mean", "std", "image_size")


def checkpoint_record(checkpoint: str | Path) -> dict[str, Any]:
    """The plain-data ``"zoo"`` record of a checkpoint a zoo task wrote, as :func:`zoo.load`
    reads it (``in_channels`` included); see :func:`_load_checkpoint` for the errors."""
    return _load_checkpoint(Path(checkpoint)).pretrained_cfg.to_record()


def _load_checkpoint(path: Path) -> nn.Module:
    """``zoo.load``, whose errors say how to export a model that is not a zoo checkpoint."""
    try:
        return load(path)
    except ValueError as error:
        raise ValueError(
            f"{error} To export a model you built yourself, call "
            "zoo.export.export_model(model, path, format)."
        ) from error


def export_checkpoint(
    checkpoint: str | Path,
    format: str,
    out: str | Path | None = None,
    *,
    input_size: tuple[int, ...] | None = None,
    image_size: int | None = None,
    opset: int | None = None,
) -> Path:
    """Export the model of a zoo checkpoint, with its record as metadata.

    ``zoo export CKPT --format onnx`` calls this; from Python::

        zoo.export.export_checkpoint("runs/lenet_digits/checkpoints/best.ckpt", "onnx")

    Args:
        checkpoint: a ``.ckpt`` written by a zoo task (``zoo fit``, ``Trainer.save_checkpoint``).
        format: one of :data:`FORMATS`.
        out: output file; default: next to the checkpoint with the format's extension.
        input_size: ``(C, H, W)`` of the traced input for ``onnx`` and ``pt2`` (the batch axis
            stays dynamic, the others are fixed); default: ``in_channels`` and ``image_size`` of
            the record, else the model's default input size.
        image_size: shorthand for ``input_size=(in_channels, image_size, image_size)``.
        opset: ONNX opset version (``onnx`` only; default: the exporter's).

    Returns:
        The path written.

    Raises:
        FileNotFoundError, ValueError: no checkpoint, not a zoo checkpoint, or bad arguments.
        ImportError: ``onnx`` requested without ``onnx`` and ``onnxscript`` installed.
    """
    _check_format(format)
    if input_size is not None and image_size is not None:
        raise ValueError("give input_size or image_size, not both")
    if format == "safetensors" and (input_size is not None or image_size is not None):
        raise ValueError(
            "safetensors holds the weights only: an input size applies to onnx and pt2"
        )
    path = Path(checkpoint)
    model = _load_checkpoint(path)  # one read of the file: weights and record
    record = model.pretrained_cfg.to_record()
    out = path.with_suffix(FORMATS[format]) if out is None else Path(out)
    if out.resolve() == path.resolve():
        raise ValueError(f"out={out} is the checkpoint itself; choose another file")
    example = None
    if format != "safetensors":
        shape = _default_input_size(record)
        if image_size is not None:
            if len(shape) != 3:
                raise ValueError(
                    f"image_size={image_size} given for {record['model']!r}, which takes rows of "
                    f"{shape[0]} features, not images"
                )
            shape = (shape[0], image_size, image_size)
        elif input_size is not None:
            shape = tuple(input_size)
        if len(shape) == 3 and shape[1] == shape[2]:
            # Preprocessing must resize to what the graph takes.
            record["image_size"] = shape[1]
        example = _example_input(shape, model)
    return export_model(model, out, format, example_input=example, metadata=record, opset=opset)


def export_model(
    model: nn.Module,
    path: str | Path,
    format: str,
    *,
    example_input: torch.Tensor | None = None,
    metadata: dict[str, Any] | None = None,
    opset: int | None = None,
) -> Path:
    """Write ``model`` (in eval mode) as ``format``, with ``metadata`` JSON-encoded in the file.

    Args:
        model: any module taking one image batch; its training mode is restored afterwards.
        path: output file.
        format: one of :data:`FORMATS`.
        example_input: a batch to trace ``onnx`` and ``pt2`` with; its batch axis is exported as
            dynamic, the other axes are fixed. Default: built from ``metadata`` (``model``,
            ``in_channels``, ``image_size``).
        metadata: plain-data record (the keys of a checkpoint's ``"zoo"`` record); default: the
            model's ``pretrained_cfg`` when :func:`zoo.load` attached one, else empty.
        opset: ONNX opset version, at least :data:`MIN_ONNX_OPSET` (``onnx`` only).

    Returns:
        The path written.

    Raises:
        ValueError: unknown format, ``opset`` given for another format or too old, or no way to
            build an example input.
        ImportError: ``onnx`` requested without ``onnx`` and ``onnxscript`` installed.
    """
    _check_format(format)
    if opset is not None and format != "onnx":
        raise ValueError(f"opset={opset} applies to ONNX only; drop it for format {format!r}")
    if opset is not None and opset < MIN_ONNX_OPSET:
        raise ValueError(
            f"opset={opset} is older than torch.onnx's exporter writes; use {MIN_ONNX_OPSET} or "
            "newer, or leave it out for the exporter's default"
        )
    if format == "onnx":
        _require_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = dict(metadata) if metadata is not None else _record_of(model)
    was_training = model.training
    model.eval()
    try:
        if format == "safetensors":
            _save_safetensors(model, path, record)
            return path
        if example_input is None:
            example_input = _example_input(_default_input_size(record), model)
        elif len(example_input) == 1:  # torch.export would fix a batch axis of size 1
            example_input = example_input.expand(2, *example_input.shape[1:])
        record["input_size"] = list(example_input.shape[1:])
        _check_forward(model, example_input)
        if format == "onnx":
            _save_onnx(model, path, example_input, record, opset)
        else:
            _save_pt2(model, path, example_input, record)
    finally:
        model.train(was_training)
    return path


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {list(FORMATS)}")


def _record_of(model: nn.Module) -> dict[str, Any]:
    """What ``zoo.load`` attached to ``model``, as a record; empty for other modules."""
    cfg = getattr(model, "pretrained_cfg", None)
    return {} if cfg is None else cfg.to_record()


def _default_input_size(record: dict[str, Any]) -> tuple[int, ...]:
    """``(C, H, W)`` the model was trained on: the record's channels and image size, filled in
    from the registry's default input size."""
    default = model_info(record["model"]).input_size if record.get("model") else None
    if default is not None and len(default) != 3:  # rows, e.g. linear regression
        return (record.get("model_kwargs", {}).get("in_features", default[0]),)
    channels = record.get("in_channels", default[0] if default else None)
    side = record.get("image_size")
    if channels is not None and side is not None:
        return (channels, side, side)
    if default is not None:
        return (channels, *default[1:])
    raise ValueError(
        "cannot tell the model's input size: the metadata names no registered 'model' and no "
        "'in_channels' and 'image_size'; pass example_input, e.g. torch.randn(2, 3, 224, 224)"
    )


def _example_input(shape: tuple[int, ...], model: nn.Module) -> torch.Tensor:
    # A batch of 2: torch.export specialises axes of size 0 or 1, so batch 1 would fix the batch.
    device = next(model.parameters(), torch.empty(0)).device
    return torch.randn(2, *shape, device=device)


def _check_forward(model: nn.Module, example_input: torch.Tensor) -> None:
    # One eager pass first: a wrong input size fails here in a sentence, not deep in a trace.
    try:
        with torch.no_grad():
            model(example_input)
    except RuntimeError as error:
        size = list(example_input.shape[1:])
        raise ValueError(
            f"the model does not take inputs of size {size} ({error}); export at the size it was "
            "trained on (the record's image_size, or the registry's input size)"
        ) from error


def _save_safetensors(model: nn.Module, path: Path, record: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        # safetensors refuses tensors that share memory (tied weights, views of one buffer); a
        # copy for each name keeps every state_dict key, so the file loads with strict=True.
        storage = tensor.untyped_storage().data_ptr()
        if storage in storages:
            tensor = tensor.clone()
        storages.add(storage)
        tensors[name] = tensor
    save_file(tensors, str(path), metadata={"zoo": json.dumps(record), "format": "pt"})


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401  (torch.onnx needs both, and says so less plainly)
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"ONNX export needs onnx and onnxscript ({error.name} is missing): "
            "pip install 'lightning-zoo[export]'"
        ) from error


def _batch_dynamic_shapes() -> tuple[dict[int, torch.export.Dim]]:
    return ({0: torch.export.Dim("batch", min=1)},)


def _save_onnx(
    model: nn.Module,
    path: Path,
    example_input: torch.Tensor,
    record: dict[str, Any],
    opset: int | None,
) -> None:
    program = torch.onnx.export(
        model,
        (example_input,),
        dynamo=True,  # torch.export-based; the TorchScript exporter is deprecated
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=_batch_dynamic_shapes(),
        opset_version=opset,
        verbose=False,
    )
    metadata = {"zoo": json.dumps(record)}
    metadata |= {k: json.dumps(record[k]) for k in _READABLE_ONNX_KEYS if record.get(k) is not None}
    program.model.metadata_props.update(metadata)
    # A stale sidecar from an earlier, larger export would look like this file's weights.
    path.with_name(path.name + ".data").unlink(missing_ok=True)
    # Self-contained; torch still moves weights over 1.5 GB to "<file>.data" (protobuf's 2 GB cap).
    program.save(path, external_data=False)


def _save_pt2(
    model: nn.Module, path: Path, example_input: torch.Tensor, record: dict[str, Any]
) -> None:
    program = torch.export.export(model, (example_input,), dynamic_shapes=_batch_dynamic_shapes())
    torch.export.save(program, path, extra_files={"zoo.json": json.dumps(record)})
