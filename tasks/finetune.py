"""Fine-tuning as the course teaches it (Section 14.2): a pretrained body, a new head trained with a
larger learning rate, bottom stages frozen, and optionally unfrozen later.

A model is cut into *units*, bottom to top: the named stages of ``features`` (the classifier
contract of ``zoo.Classifier``), then ``pre_logits``, then the head. Every unit gets its own
optimizer parameter groups, whose ``lr_scale`` multiplies the optimizer's learning rate:
``layer_lr_decay ** depth`` for a unit ``depth`` units below the head (layer-wise decay, as in
ULMFiT and BEiT) and ``head_lr_mult`` for the head (the course's 10x). Schedulers built on top
(warm-up, cosine, ...) scale every group's learning rate alike, so the ratios hold throughout.
The exception is a scheduler that sets absolute rates, such as ``OneCycleLR`` with one
``max_lr``: it overwrites the multipliers (give it one ``max_lr`` per group, or use another).

Freezing is done in one of two ways, each identical on every rank, so it is safe under DDP:

- frozen for the whole run (no ``unfreeze_at_epochs``): ``requires_grad=False``, no gradients are
  computed and the optimizer never sees those parameters;
- frozen until an epoch: the parameters keep ``requires_grad=True`` (DDP registers its gradient
  hooks once, at wrapping, and would silently never sync a parameter unfrozen later), and their
  groups' learning rate is set to 0 for each optimizer step only. With a zero step size SGD, Adam
  and AdamW leave a parameter exactly as it is, weight decay included; the schedulers never see
  the zero, so when the unit thaws it continues from the learning rate the schedule has reached.

Frozen units are kept in eval mode, so frozen batch norm neither updates its running statistics
nor normalises with batch statistics (and frozen dropout is off).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from torch import nn
from torch.optim import Optimizer

__all__ = ["FineTuning", "Freeze", "model_units"]

Freeze = int | Literal["backbone"]


def model_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[(name, module)]`` bottom to top: ``features``' stages, ``pre_logits``, ``head``.

    A model without the classifier contract is one unit, ``"model"``.
    """
    if not all(hasattr(model, attr) for attr in ("features", "pre_logits", "get_classifier")):
        return [("model", model)]
    units = list(model.features.named_children())
    return units + [("pre_logits", model.pre_logits), ("head", model.get_classifier())]


class FineTuning:
    """Units, their learning-rate scales and which are frozen, for one model.

    Args:
        model: the network; a zoo classifier for anything but the defaults.
        freeze: the number of bottom stages of ``features`` to freeze, or ``"backbone"`` for
            everything but the head. 0 freezes nothing.
        unfreeze_at_epochs: epochs at which frozen units thaw, top first (gradual unfreezing,
            Howard & Ruder, 2018): each listed epoch thaws the next frozen unit, the last one
            thaws all that remain. Empty: frozen for the whole run.
        head_lr_mult: learning-rate multiplier of the head (the course uses 10).
        layer_lr_decay: multiplier per unit below the head; 1 gives every unit the same rate.
    """

    def __init__(
        self,
        model: nn.Module,
        freeze: Freeze = 0,
        unfreeze_at_epochs: Sequence[int] = (),
        head_lr_mult: float = 1.0,
        layer_lr_decay: float = 1.0,
    ) -> None:
        self.units = model_units(model)
        names = [name for name, _ in self.units]
        contract = names != ["model"]
        if not contract and (freeze or head_lr_mult != 1 or layer_lr_decay != 1):
            raise ValueError(
                f"{type(model).__name__} has no features/pre_logits/head structure, so freeze, "
                "head_lr_mult and layer_lr_decay need a zoo classifier (zoo.create_model)"
            )
        if head_lr_mult <= 0:
            raise ValueError(f"head_lr_mult={head_lr_mult} must be positive (the course uses 10)")
        if not 0 < layer_lr_decay <= 1:
            raise ValueError(
                f"layer_lr_decay={layer_lr_decay} must be in (0, 1], e.g. 0.75; 1 means none"
            )
        stages = names[:-2] if contract else []
        if freeze == "backbone":
            frozen = names[:-1]
        elif isinstance(freeze, int) and 0 <= freeze <= len(stages):
            frozen = stages[:freeze]
        else:
            raise ValueError(
                f"freeze={freeze!r} must be 'backbone' or a number of bottom stages from 0 to "
                f"{len(stages)} (the stages of this model: {stages})"
            )
        if any(epoch < 0 for epoch in unfreeze_at_epochs):
            raise ValueError(f"unfreeze_at_epochs={list(unfreeze_at_epochs)} must be >= 0")
        if unfreeze_at_epochs and not frozen:
            raise ValueError("unfreeze_at_epochs is set but nothing is frozen: set freeze too")
        self.frozen_units = [name for name in names if name in frozen]  # bottom to top
        self.unfreeze_at_epochs = sorted(unfreeze_at_epochs)
        self.head_lr_mult = head_lr_mult
        self.layer_lr_decay = layer_lr_decay
        self.frozen: set[str] = set(frozen)
        if not self.unfreeze_at_epochs:  # frozen for good: no gradients at all
            for name, module in self.units:
                if name in self.frozen:
                    module.requires_grad_(False)

    def lr_scale(self, name: str) -> float:
        """The learning-rate multiplier of unit ``name``."""
        names = [unit for unit, _ in self.units]
        if name == "head":
            return self.head_lr_mult
        return self.layer_lr_decay ** (len(names) - 1 - names.index(name))

    def param_groups(self, decay_norm_and_bias: bool = False) -> list[dict[str, Any]]:
        """Optimizer groups: per unit, decayed weights and (unless ``decay_norm_and_bias``)
        biases and norm parameters with ``weight_decay=0``; each with ``name`` and ``lr_scale``.

        A parameter shared by two units (tied weights) goes to the first one only.
        """
        groups: list[dict[str, Any]] = []
        seen: set[int] = set()
        for name, module in self.units:
            params = [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in params)
            scale = self.lr_scale(name)
            if decay_norm_and_bias:
                parts = [(name, params, {})]
            else:
                parts = [
                    (name, [p for p in params if p.ndim > 1], {}),
                    (f"{name}/no_decay", [p for p in params if p.ndim <= 1], {"weight_decay": 0.0}),
                ]
            for group_name, group_params, extra in parts:
                if group_params:
                    groups.append(
                        {"params": group_params, "name": group_name, "lr_scale": scale} | extra
                    )
        return groups

    def frozen_at(self, epoch: int) -> set[str]:
        """The units still frozen during ``epoch`` (top units thaw first)."""
        thawed = sum(1 for e in self.unfreeze_at_epochs if e <= epoch)
        if not self.unfreeze_at_epochs or thawed == 0:
            return set(self.frozen_units)
        if thawed >= len(self.unfreeze_at_epochs):
            return set()
        return set(self.frozen_units[: len(self.frozen_units) - thawed])

    def start_epoch(self, epoch: int) -> list[str]:
        """Thaw what the schedule says for ``epoch``; returns the units that thawed now."""
        if not self.unfreeze_at_epochs:
            return []
        now = self.frozen_at(epoch)
        thawed = sorted(self.frozen - now)
        self.frozen = now
        return thawed

    def set_train_mode(self) -> None:
        """For a model in training: frozen units in eval mode, the others (thawed too) training."""
        for name, module in self.units:
            module.train(name not in self.frozen)

    @contextmanager
    def masked_learning_rates(self, optimizer: Optimizer) -> Iterator[None]:
        """Inside the block, groups of frozen units have learning rate 0 (restored after)."""
        saved = []
        for group in optimizer.param_groups if self.frozen else ():  # usually nothing to mask
            unit = str(group.get("name", "")).split("/")[0]
            if unit in self.frozen:
                saved.append((group, group["lr"]))
                group["lr"] = 0.0
        try:
            yield
        finally:
            for group, lr in saved:
                group["lr"] = lr
