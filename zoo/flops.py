"""Floating-point operations of one forward pass, counted by PyTorch itself.

The count is what decides whether data parallelism pays (Sections 12.5 and 12.7 of the course):
each step every device computes on its share of the batch, then all of them exchange the
gradients of every parameter. A model that does much computation per parameter (GoogLeNet, whose
Inception blocks reuse few weights over large maps) keeps its devices busy computing; one whose
parameters sit in large dense layers (AlexNet) spends its step communicating.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from zoo._registry import create_model, model_info

__all__ = ["count_flops"]


def count_flops(
    model: nn.Module | str,
    input_size: tuple[int, int, int] | None = None,
    batch_size: int = 1,
) -> int:
    """FLOPs of one forward pass of ``model`` on a ``[batch_size, *input_size]`` random input.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode`, in eval mode and without
    gradients. A multiply-add counts as **2** FLOPs (so a ``Linear(n, m)`` costs ``2 n m`` per
    sample: twice the "MACs" or "mult-adds" many papers and tables quote); only the operators PyTorch has formulas for
    are counted (convolutions, matrix products, attention), not activations, pooling or norms,
    which are cheap beside them. The train / eval mode of every submodule is restored afterwards.
    A module built on the ``meta`` device (``with torch.device("meta"): create_model(...)``) is
    counted from shapes alone, with no memory for weights and no arithmetic, as long as its
    forward pass does not depend on the values (classifiers don't; detectors' NMS does).

    Args:
        model: an ``nn.Module``, or a registry name, built with random weights and default
            arguments (:func:`zoo.create_model`).
        input_size: one input's shape without the batch, ``(C, H, W)``; defaults, for a registry
            name, to the registered ``input_size`` (:func:`zoo.model_info`).
        batch_size: inputs in the batch; the count grows linearly with it.

    Returns:
        The FLOPs of the forward pass, as an ``int``.

    Raises:
        ValueError: for a module without ``input_size``, or a ``batch_size`` below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(model, str):
        if input_size is None:
            input_size = model_info(model).input_size
        model = create_model(model)
    elif input_size is None:
        raise ValueError(
            f"count_flops needs input_size for a {type(model).__name__} module: pass one input's "
            "shape without the batch, e.g. input_size=(3, 224, 224), or pass a registry name"
        )
    # Parameters set the device and dtype of the input (a module without any: CPU float32).
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else None
    inputs = torch.randn(batch_size, *input_size, device=device, dtype=dtype)
    # Every submodule's own mode, not just the root's: a frozen batch norm kept in eval mode
    # inside a training model must stay so.
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(inputs)
    finally:
        for module, training in modes:
            module.training = training
    return int(counter.get_total_flops())
