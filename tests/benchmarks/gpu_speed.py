"""Training images per second of ResNet-18 and ResNet-50 through ``ImageClassifier`` and a
``Trainer`` at fp32, bf16-mixed, bf16-mixed with channels-last, and that with ``torch.compile``:
the speed switches of ``configs/trainer/`` (``gpu_bf16``, ``channels_last``, ``compile``)
measured in one run on one card, whose name is printed. The batches are random images already
in pinned memory, so the loader is never the bottleneck; the first steps (cuDNN's autotuning,
compilation) are not timed. Never a CI gate: run it by hand on a GPU machine.

    python -m tests.benchmarks.gpu_speed [--models resnet18 resnet50] [--batch-size 128]
        [--steps 60] [--warmup 20] [--device cuda]   # --device cpu --steps 2: a smoke run
"""

from __future__ import annotations

import argparse
import time
import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from tasks import ImageClassifier
from tasks.callbacks import SpeedUp
from tests.benchmarks._report import Measurement, Skip

SETTINGS = {  # name: (precision, channels_last, compile)
    "fp32": ("32-true", False, False),
    "bf16-mixed": ("bf16-mixed", False, False),
    "bf16 + channels-last": ("bf16-mixed", True, False),
    "bf16 + channels-last + compile": ("bf16-mixed", True, True),
}


class _SameBatch(IterableDataset):
    """One random batch of ImageNet-sized images and labels, yielded ``steps`` times."""

    def __init__(self, batch_size: int, steps: int, pin: bool) -> None:
        self.images = torch.randn(batch_size, 3, 224, 224)
        self.labels = torch.randint(0, 1000, (batch_size,))
        if pin:
            self.images, self.labels = self.images.pin_memory(), self.labels.pin_memory()
        self.steps = steps

    def __iter__(self):
        for _ in range(self.steps):
            yield self.images, self.labels


class _Timer(L.Callback):
    """Wall time of the training steps after ``warmup``, the device synchronised at both ends."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.steps = warmup, None, 0

    def _sync(self, trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self._sync(trainer)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self._sync(trainer)
        self.seconds = time.perf_counter() - self.start
        self.steps = trainer.global_step - self.warmup


def images_per_second(model: str, setting: str, args) -> float:
    precision, channels_last, compile = SETTINGS[setting]
    torch.manual_seed(0)
    task = ImageClassifier(
        model,
        num_classes=1000,
        in_channels=3,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-4),
    )
    timer = _Timer(args.warmup)
    trainer = L.Trainer(
        accelerator=args.device,
        devices=1,
        precision=precision,
        max_steps=args.warmup + args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer, SpeedUp(channels_last=channels_last, compile=compile)],
    )
    batches = _SameBatch(args.batch_size, args.warmup + args.steps, args.device == "cuda")
    trainer.fit(task, DataLoader(batches, batch_size=None))
    return timer.steps * args.batch_size / timer.seconds


def run(size: str) -> list[Measurement]:
    """Each setting's images/s over fp32's, per model (``make bench``); skipped without a GPU."""
    if not torch.cuda.is_available():
        raise Skip("no CUDA GPU on this machine: run `python -m tests.benchmarks.gpu_speed` on one")
    steps, warmup = {"tiny": (2, 1), "quick": (20, 10), "full": (60, 20)}[size]
    args = argparse.Namespace(batch_size=128, steps=steps, warmup=warmup, device="cuda")
    torch.backends.cudnn.benchmark = True
    card = torch.cuda.get_device_name()
    results = []
    for model in ("resnet18", "resnet50"):
        speeds = {setting: images_per_second(model, setting, args) for setting in SETTINGS}
        for setting, speed in speeds.items():
            results.append(
                Measurement(
                    group="gpu",
                    name=f"{model} training, {setting}, batch 128",
                    compared="images/s over fp32's",
                    trials=[speed / speeds["fp32"]],
                    details={"card": card, "images_per_s": speed, "steps": steps},
                )
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore", ".*(does not have many workers|IterableDataset).*")
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
        card = torch.cuda.get_device_name()
    else:
        card = "CPU"
    print(f"{card}, batch {args.batch_size}, {args.steps} timed steps after {args.warmup}")
    print(f"| model | {' | '.join(args.settings)} |")
    print("|---|" + "---:|" * len(args.settings))
    for model in args.models:
        speeds = [images_per_second(model, setting, args) for setting in args.settings]
        base = speeds[0]
        cells = [f"{s:,.0f} img/s ({s / base:.2f}x)" for s in speeds]
        print(f"| {model} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
