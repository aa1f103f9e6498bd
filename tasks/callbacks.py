"""What the ``zoo`` command adds to every Lightning run, each usable from Python too: checkpoints
written atomically (:class:`AtomicCheckpointIO`), a stop with advice on a non-finite loss
(:class:`NonFiniteLossGuard`), and channels-last memory and ``torch.compile`` as switches
(:class:`SpeedUp`), and a progress bar redrawn on a clock rather than at every step
(:class:`ProgressBar`). Scale itself (DDP, several nodes, mixed precision) is Lightning's: see the
presets in ``configs/trainer/`` and the README's "Scaling out"."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info

from zoo.weights import read_torch_file

__all__ = ["AtomicCheckpointIO", "NonFiniteLoss", "NonFiniteLossGuard", "ProgressBar", "SpeedUp"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file next to the checkpoint, flushed to disk, then renamed
    over it: a crash or a full disk mid-write leaves the previous checkpoint whole, because a
    rename within one directory is atomic (POSIX).

    Lightning's own writer stages the bytes in the system's temporary directory and moves them
    over; where that is another file system (node-local ``/tmp``, checkpoints on a shared one)
    the move is a copy, which a crash can cut short. Remote paths (``s3://``...) keep
    Lightning's writer.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.partial"):  # left by a killed process
            stale.unlink(missing_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)

    def load_checkpoint(
        self, path: _PATH, map_location: Any | None = "cpu", weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Onto the CPU, as Lightning's reader (a GPU run resumes on a machine without one, and
        DDP ranks do not all load onto the first GPU). Tensors and plain data only, unless the
        caller says ``weights_only=False``: Lightning leaves ``None`` to torch, which unpickles
        anything for ``http(s)://`` checkpoints and wherever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
        is set. Local files get :func:`zoo.weights.read_torch_file`'s messages for empty,
        damaged or foreign files."""
        if weights_only is False:  # an explicit choice for a trusted file
            return super().load_checkpoint(path, map_location, weights_only=False)
        if not isinstance(get_filesystem(path), LocalFileSystem):
            return super().load_checkpoint(path, map_location, weights_only=True)
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"no checkpoint at {path}; training writes them under "
                "<trainer.default_root_dir>/checkpoints/ (best.ckpt, last.ckpt)"
            )
        return read_torch_file(path, map_location)


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite (raised by :class:`NonFiniteLossGuard`)."""


class NonFiniteLossGuard(Callback):
    """Stop training at the first NaN or infinite loss, before it reaches the weights.

    The check runs before the backward pass, so the weights and the last checkpoint are still
    finite when it stops; under DDP every rank stops at the same step (a NaN on one rank would
    reach all of them through the gradient all-reduce). It costs one host sync per step (and a
    one-element all-reduce under DDP): ``enabled: false`` removes it.

    Args:
        enabled: check every training step's loss.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss) -> None:
        if not self.enabled:
            return
        finite = bool(torch.isfinite(loss.detach()).all())
        if trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        value = loss.detach().float().item()
        seen = f"{value}" if not math.isfinite(value) else "non-finite on another process"
        # The advice fits the run: fp16 overflows past 65504, bf16 has fp32's range.
        precision = str(trainer.precision)
        if precision.startswith("16"):
            remedy = "or train in bf16-mixed instead of 16-mixed (fp16 overflows past 65504)"
        elif precision.startswith("bf16"):
            remedy = "or try 32-true precision to rule out bf16's coarse rounding"
        else:
            remedy = "or check the data for NaN or infinite values"
        raise NonFiniteLoss(
            f"the training loss is {seen} at step {trainer.global_step} (epoch "
            f"{trainer.current_epoch}, precision {precision}); training "
            "stopped before this step's update, so the weights and the last checkpoint are "
            "finite. Lower the learning rate (--model.init_args.optimizer.init_args.lr), clip "
            f"gradients (--trainer.gradient_clip_val 1.0), {remedy}; then resume with "
            "--ckpt_path last"
        )


class SpeedUp(Callback):
    """Channels-last memory and ``torch.compile`` for the task's network, as switches.

    Channels-last (NHWC) lets cuDNN use its tensor-core convolution kernels, usually a gain for
    convolutional networks under mixed precision on recent GPUs; ``torch.compile`` fuses
    element-wise work into the kernels around it. Both apply to ``pl_module.model`` (the zoo
    network) before the strategy moves and wraps it; compiling in place keeps the state-dict
    keys, so checkpoints load anywhere. Compilation takes a while at the first steps (and again
    for a new input shape): it pays off on long runs with fixed image sizes, classifiers and
    segmenters more than detectors (whose images and box counts change shape).

    Args:
        channels_last: convert the network's 4-D weights to ``torch.channels_last``.
        compile: compile the network with ``torch.compile``.
        compile_kwargs: keyword arguments of ``torch.compile`` (``mode``, ``backend``,
            ``dynamic``, ``fullgraph``), e.g. ``{"mode": "max-autotune"}``.
    """

    def __init__(
        self,
        channels_last: bool = False,
        compile: bool = False,
        compile_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.channels_last = channels_last
        self.compile = compile
        self.compile_kwargs = dict(compile_kwargs or {})

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        network = getattr(pl_module, "model", pl_module)
        if self.channels_last:
            network.to(memory_format=torch.channels_last)
        if self.compile and getattr(network, "_compiled_call_impl", None) is None:
            network.compile(**self.compile_kwargs)
        if self.channels_last or self.compile:
            rank_zero_info(
                f"SpeedUp: channels_last={self.channels_last}, compile={self.compile}"
                + (f" {self.compile_kwargs}" if self.compile_kwargs else "")
            )


class ProgressBar(TQDMProgressBar):
    """Lightning's progress bar, redrawn at most every ``min_interval`` seconds (and at each
    epoch's last batch), as tqdm itself paces a bar.

    Lightning's redraws the bar and formats every logged value into it after each batch
    (``refresh_rate`` counts batches): about 0.4 ms a step on a CPU, 3% of a LeNet step at
    batch 256, and more than a person can read at 50 steps a second.

    Args:
        refresh_rate: redraw at most every this many batches (Lightning's meaning).
        process_position: the bar's line, for several trainers in one terminal.
        leave: keep each epoch's bar on the screen.
        min_interval: seconds between redraws; 0 redraws at every ``refresh_rate`` batches.
    """

    def __init__(
        self,
        refresh_rate: int = 1,
        process_position: int = 0,
        leave: bool = False,
        min_interval: float = 0.1,
    ) -> None:
        super().__init__(refresh_rate, process_position, leave)
        self.min_interval = min_interval
        self._last_redraw = -math.inf

    def _should_update(self, current: int, total: int | float) -> bool:
        if not super()._should_update(current, total):
            return False
        now = time.monotonic()
        if current != total and now - self._last_redraw < self.min_interval:
            return False
        self._last_redraw = now
        return True
