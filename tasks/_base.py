"""What every zoo task shares: building the network from the registry (with pretrained weights),
fine-tuning (per-unit learning rates, freezing; see :mod:`tasks.finetune`), optimizer and scheduler
from LightningCLI callables (with weight decay kept off biases and norm parameters), the plain
``checkpoint["zoo"]`` record that lets :func:`zoo.load` rebuild the network without Lightning,
random-number states in checkpoints (a resumed run draws what the uninterrupted one would), and an
example input from the data (Lightning's model summary then counts FLOPs)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from typing_extensions import Self

import zoo
from tasks.finetune import FineTuning, Freeze
from zoo.weights import read_torch_file

__all__ = ["ZooTask"]


def _build(name: str, kwargs: dict[str, Any], weights: str | None) -> nn.Module:
    return zoo.create_model(name, weights=weights, **kwargs)


def _rng_states() -> dict[str, Any]:
    """The states of every generator training draws from in this process, as tensors and plain
    values (checkpoints must load with ``torch.load(weights_only=True)``)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    random.setstate(states["python"])
    cuda = states.get("cuda")
    # A run resumed on another number of GPUs draws afresh on them.
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _trained(model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Builder arguments for a network whose state dict is saved: pretrained parts
    (``backbone_weights``) are in the state dict, so rebuilding must not fetch them again."""
    return {k: None if k == "backbone_weights" else v for k, v in model_kwargs.items()}


def _misfit_message(
    cls: type, path: Path, contents: dict, kwargs: dict[str, Any], error: Exception
) -> str:
    """Why a checkpoint's weights do not fit the task asked for, and the fix."""
    trained = contents.get("hyper_parameters") or {}
    keys = ("model", "num_classes", "in_channels")
    held = ", ".join(f"{k}={trained[k]!r}" for k in keys if k in trained)
    asked = ", ".join(f"{k}={kwargs[k]!r}" for k in keys if k in kwargs) or "other arguments"
    detail = "; ".join(line.strip() for line in str(error).splitlines()[1:4] if line.strip())
    return (
        f"{path} holds weights for {cls.__name__}({held}), which do not fit the network "
        f"{asked} builds ({detail}). Load it as trained (without those arguments), then fit it "
        "to new classes or channels with zoo.adapt(model, num_classes=..., in_channels=...), or "
        f"fine-tune from it with weights={str(path)!r} (--model.init_args.weights CKPT)"
    )


class ZooTask(LightningModule):
    """Base of the zoo's LightningModules.

    Args:
        model: a registry name (``zoo models`` lists them) or a ready ``nn.Module``. A module is
            not saved in the hyper-parameters: pass it again to ``load_from_checkpoint``.
        model_kwargs: keyword arguments for the registry builder (``hidden_sizes``, ``dropout``...).
        optimizer: a callable taking parameter groups, e.g. ``torch.optim.SGD`` with its
            ``init_args`` in YAML (default: Adam, lr 1e-3). Its ``weight_decay`` is the L2
            penalty of Section 5.5.
        scheduler: optional learning-rate scheduler callable, stepped once per epoch.
        decay_norm_and_bias: apply weight decay to biases and norm parameters too. Off by default
            (as in timm and torchvision's references): decaying them only hurts.
        weights: pretrained weights for a registry name: ``"torchvision"``, a file or a URL (see
            :func:`zoo.create_model`). Checkpoints hold the trained weights, so they record
            ``weights: null`` and reload without fetching anything.
        build: how a task turns ``(name, model_kwargs, weights)`` into the network; tasks that
            adapt pretrained models to their data pass their own.
        freeze, unfreeze_at_epochs, head_lr_mult, layer_lr_decay: fine-tuning, see
            :class:`tasks.finetune.FineTuning`.
    """

    def __init__(
        self,
        model: str | nn.Module,
        model_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        decay_norm_and_bias: bool = False,
        weights: str | None = None,
        build: Callable[..., nn.Module] | None = None,
        freeze: Freeze = 0,
        unfreeze_at_epochs: Sequence[int] = (),
        head_lr_mult: float = 1.0,
        layer_lr_decay: float = 1.0,
    ) -> None:
        super().__init__()
        self.model_kwargs = dict(model_kwargs or {})
        self.implied_kwargs: dict[str, Any] = {}
        if isinstance(model, nn.Module):
            if weights is not None:
                raise ValueError(
                    "weights= needs a registry name for model; load weights into your module "
                    "yourself, or pass its name (`zoo models` lists them)"
                )
            self.model_name = None
            self.model = model
        else:
            self.model_name = model
            self.model = (build or _build)(model, self.model_kwargs, weights)
            # Builder arguments the weights imply (GoogLeNet's transform_input, or what a zoo
            # checkpoint was trained with) join the record, so zoo.load and load_from_checkpoint
            # rebuild this very network.
            built_with = getattr(getattr(self.model, "pretrained_cfg", None), "model_kwargs", {})
            self.implied_kwargs = {
                k: v for k, v in built_with.items() if k not in self.model_kwargs
            }
            self.model_kwargs |= self.implied_kwargs
        self.finetuning = FineTuning(
            self.model, freeze, unfreeze_at_epochs, head_lr_mult, layer_lr_decay
        )
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.decay_norm_and_bias = decay_norm_and_bias
        self._resumed_rng_states: dict[str, Any] | None = None

    @staticmethod
    def labelled_kwargs(
        num_classes: int,
        in_channels: int,
        model_kwargs: dict[str, Any] | None,
        class_names: Sequence[str] | None,
    ) -> dict[str, Any]:
        """The builder arguments of a task with classes, after checking one name per class."""
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} names for num_classes={num_classes}; give "
                "one name per class (for detection: per object class, background excluded)"
            )
        return {"num_classes": num_classes, "in_channels": in_channels} | (model_kwargs or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if datamodule is not None:
            self._check_data_fits(datamodule)
        # One input the data really yields (the first validation sample, else the first
        # training one): Lightning's ModelSummary runs it through the network and prints its
        # FLOPs (torch's FlopCounterMode; a multiply-add counts 2).
        if self.example_input_array is not None or not self._trainer:
            return
        for name in ("val_dataset", "train_dataset"):
            dataset = getattr(datamodule, name, None)
            if dataset is not None and len(dataset) > 0:
                sample = dataset[0]
                inputs = sample[0] if isinstance(sample, (tuple, list)) else sample
                if isinstance(inputs, torch.Tensor):
                    self.example_input_array = inputs.unsqueeze(0)
                return

    def _check_data_fits(self, datamodule: Any) -> None:
        # The CLI links these from the data; in Python they are given twice, and a mismatch
        # would surface in the first step as cross-entropy's "Target 3 is out of bounds" or a
        # convolution's channel error, after the data was read.
        for key in ("num_classes", "in_channels"):
            ours = self.model_kwargs.get(key)
            try:
                theirs = getattr(datamodule, key, None)
            except TypeError:  # (a property of data not set up: len(None))
                continue
            if isinstance(ours, int) and isinstance(theirs, int) and ours != theirs:
                raise ValueError(
                    f"{type(self).__name__} was built with {key}={ours}, but "
                    f"{type(datamodule).__name__} has {key}={theirs}. Build the task with "
                    f"{key}={theirs} (zoo fit links it from the data), or zoo.adapt the model "
                    f"to the data's {key} when it comes from a checkpoint"
                )

    def _shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        """Loss of one batch, with the stage's metrics updated; each task defines it."""
        raise NotImplementedError

    def _is_logging_step(self) -> bool:
        """Whether this training step logs per-step values (``trainer.log_every_n_steps``)."""
        every = self.trainer.log_every_n_steps if self._trainer else 1
        return every > 0 and self.global_step % every == 0

    def _draws(self, batch_idx: int) -> bool:
        """Whether to draw this validation batch's predictions for the logs (``log_images``):
        the first batch of each epoch, never the sanity check's, and only where the figure is
        kept (a logger, rank zero); drawing and saving cost about 0.05 s."""
        trainer = self.trainer
        return (
            batch_idx == 0
            and getattr(self, "log_images", 0) > 0
            and not trainer.sanity_checking
            and trainer.logger is not None
            and trainer.is_global_zero
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters, per fine-tuning unit, in two groups each: decayed weights, and
        biases / norm scales with ``weight_decay=0`` (every parameter of one dimension or fewer).
        Each group has a ``name`` (shown by LearningRateMonitor) and an ``lr_scale``."""
        return self.finetuning.param_groups(self.decay_norm_and_bias)

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameter_groups())
        # The optimizer set one learning rate; the units' multipliers apply before any scheduler
        # is built, so schedulers take the scaled rates as their base rates.
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
        if self.scheduler is None:
            return optimizer
        scheduler = self.scheduler(optimizer)
        # ReduceLROnPlateau needs a metric; every other scheduler ignores "monitor".
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss"},
        }

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        # Units frozen until a later epoch take zero-size steps (see tasks.finetune).
        with self.finetuning.masked_learning_rates(optimizer):
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            self.finetuning.set_train_mode()
        return self

    def on_train_epoch_start(self) -> None:
        # Resuming (--ckpt_path last): the generators continue from where the interrupted run
        # stood when it saved, just before this epoch drew its shuffle and dropout masks.
        if self._resumed_rng_states is not None:
            _set_rng_states(self._resumed_rng_states)
            self._resumed_rng_states = None
        thawed = self.finetuning.start_epoch(self.current_epoch)
        if thawed:
            rank_zero_info(f"epoch {self.current_epoch}: unfreezing {', '.join(thawed)}")
        self.finetuning.set_train_mode()

    def zoo_record(self) -> dict[str, Any]:
        """The plain-data description :func:`zoo.load` rebuilds the network from; the version
        that wrote it tells a later release what it is reading."""
        return {
            "model": self.model_name,
            "model_kwargs": _trained(self.model_kwargs),
            "zoo_version": zoo.__version__,
        }

    def data_record(self, class_names: Sequence[str] | None) -> dict[str, Any]:
        """Class names and preprocessing for the record: the task's names, else the data
        module's; ``mean``, ``std``, ``image_size`` and ``resize_size`` from the data module that
        trained the model, when it says."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        record: dict[str, Any] = {"class_names": list(class_names) if class_names else None}
        for key in ("mean", "std", "image_size", "resize_size"):
            value = getattr(datamodule, key, None)
            record[key] = list(value) if isinstance(value, tuple) else value
        if record["class_names"] is None and getattr(datamodule, "classes", None):
            record["class_names"] = list(datamodule.classes)
        return record

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The state dict holds the weights now: reloading must not fetch them again, but must
        # build the network those weights implied.
        hparams = checkpoint.get("hyper_parameters", {})
        if "weights" in hparams:
            hparams["weights"] = None
            hparams["model_kwargs"] = self.implied_kwargs | (hparams.get("model_kwargs") or {})
        if hparams.get("model_kwargs"):
            hparams["model_kwargs"] = _trained(hparams["model_kwargs"])
        if self.model_name is not None:
            checkpoint["zoo"] = self.zoo_record()
        checkpoint["rng_states"] = _rng_states()

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path | IO,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = True,
        **kwargs: Any,
    ) -> Self:
        """Lightning's ``load_from_checkpoint``, reading only tensors and plain data by default
        (Lightning unpickles anything from ``http(s)://``), with errors that name the file: an
        unreadable or unsafe one, or one whose weights do not fit the task ``kwargs`` build."""
        try:
            return super().load_from_checkpoint(
                checkpoint_path, map_location, hparams_file, strict, weights_only, **kwargs
            )
        except Exception as error:
            path = Path(checkpoint_path) if isinstance(checkpoint_path, (str, Path)) else None
            if path is None or not path.is_file():
                raise
            if weights_only is False:  # a file the caller trusts: read it as they asked
                contents = torch.load(path, map_location="cpu", weights_only=False)
            else:
                contents = read_torch_file(path)  # raises the file's own problem, if it has one
            if isinstance(error, RuntimeError) and "loading state_dict" in str(error):
                raise ValueError(_misfit_message(cls, path, contents, kwargs, error)) from error
            raise

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Only a Trainer resuming restores them, at the next epoch's start (load_from_checkpoint
        # has no trainer and leaves the generators alone).
        if self._trainer is not None and "rng_states" in checkpoint:
            self._resumed_rng_states = checkpoint["rng_states"]
