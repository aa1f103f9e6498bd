"""Framework overhead: ``zoo fit`` (``ImageClassifier`` + data module + ``Trainer``, as the shipped
recipes run: progress bar, TensorBoard, learning-rate monitor, the non-finite-loss guard, best
and last checkpoints, prediction figures) against a plain PyTorch loop of the same work.

Both train the same network from the same initial weights on the same batches (the data module's
own loaders), with the same optimizer, loss and thread count. The plain loop is what a course
reader writes: train, evaluate the validation split, save the weights and the optimizer's state
each epoch. Two windows are timed in every trial:

- ``steps``: the training batches of each epoch (fetching, forward, backward, the optimizer, and
  every per-step hook of the Trainer), summed over the epochs; validation and the epoch's end
  are left out. This is the overhead that grows with the data.
- ``loop``: the whole training loop (steps, validation, checkpoints, logs) from the first epoch
  to the last, without the Trainer's start-up.

Ratios are plain seconds / zoo seconds (1.0 = no overhead), per trial, the two loops alternating.

    python -m tests.benchmarks.throughput [--size quick] [--model lenet|resnet18]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from datamodules import ClassificationDataModule
from tasks.cli import ZooCLI
from tests.benchmarks._report import SIZES, Measurement, compare

RECIPE = "configs/classification/lenet_digits.yaml"


class RandomImages(ClassificationDataModule):
    """``num_images`` seeded random RGB images of ``size`` pixels in ten classes, held in memory
    as the zoo's tensor data modules hold MNIST: for timing networks on inputs of a given shape."""

    classes: ClassVar[list[str]] = [str(k) for k in range(10)]
    in_channels: ClassVar[int] = 3
    mean: ClassVar[tuple[float, ...]] = (0.5, 0.5, 0.5)
    std: ClassVar[tuple[float, ...]] = (0.25, 0.25, 0.25)

    def __init__(self, num_images: int = 512, size: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_images, self.size = num_images, size

    def _load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(int(train))
        count = self.num_images if train else max(1, self.num_images // 8)
        images = torch.randint(0, 256, (count, 3, self.size, self.size), generator=generator)
        return images.to(torch.uint8), torch.arange(count) % 10


# The two cases the issue names: model, data overrides, input shape, batch size, the goal of
# the steps' ratio, and per size (epochs, training images for RandomImages, trials). LeNet on
# the digits' 1,293 training images is 6 steps an epoch; ResNet-18's steps take ~50x longer.
# LeNet's trials are short (2 s) and a shared 2-core machine swings identical ones by up to
# 2x, so it takes nine, each a zoo fit and a plain loop side by side, and their median.
CASES: dict[str, dict[str, Any]] = {
    "lenet": {
        "model": "lenet",
        "data": [],
        "shape": "1x28x28",
        "batch_size": 256,
        "goal": ">= 0.95",
        "sizes": {"tiny": (1, 0, 1), "quick": (4, 0, 2), "full": (10, 0, 9)},
    },
    "resnet18": {
        "model": "resnet18",
        "data": ["--data=tests.benchmarks.throughput.RandomImages", "--data.init_args.size=64"],
        "shape": "3x64x64",
        "batch_size": 64,
        "goal": ">= 0.98",
        "sizes": {"tiny": (1, 16, 1), "quick": (1, 128, 2), "full": (2, 512, 3)},
    },
}


class _Windows(L.Callback):
    """Seconds in the training batches of each epoch (``steps``) and in the whole loop."""

    def __init__(self) -> None:
        self.steps = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self.loop_start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_start = time.perf_counter()

    def _end_of_steps(self) -> None:
        if self.epoch_start is not None:
            self.steps += time.perf_counter() - self.epoch_start
            self.epoch_start = None

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._end_of_steps()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._end_of_steps()  # (no validation this epoch)

    def on_train_end(self, trainer, pl_module) -> None:
        self.loop = time.perf_counter() - self.loop_start


def zoo_cli(case: str, root: Path, epochs: int, num_images: int) -> ZooCLI:
    """The run ``zoo fit --config lenet_digits.yaml`` makes, with the case's model and data."""
    model, data, batch_size = (CASES[case][k] for k in ("model", "data", "batch_size"))
    if data:
        data = [*data, f"--data.init_args.num_images={num_images}"]
    return ZooCLI(
        args=[
            f"--config={RECIPE}",
            f"--model.init_args.model={model}",
            *(["--model.init_args.model_kwargs={}"] if model != "lenet" else []),
            *data,
            f"--data.init_args.batch_size={batch_size}",
            f"--trainer.max_epochs={epochs}",
            f"--trainer.default_root_dir={root}",
        ],
        run=False,
    )


def zoo_fit(cli: ZooCLI) -> tuple[float, float]:
    """``trainer.fit`` of a prepared CLI: (steps, loop) seconds."""
    cli.trainer.callbacks.append(windows := _Windows())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return windows.steps, windows.loop


def plain_fit(cli: ZooCLI, epochs: int, root: Path) -> tuple[float, float]:
    """The course's loop doing the same work with a prepared CLI's network (untrained), data
    module, optimizer and loss: (steps, loop) seconds."""
    network, datamodule = cli.model.model, cli.datamodule
    datamodule.setup("fit")
    optimizer = cli.model.optimizer(network.parameters())
    smoothing = cli.model.label_smoothing
    steps, loop_start = 0.0, time.perf_counter()
    for _ in range(epochs):
        start = time.perf_counter()
        network.train()
        for images, labels in datamodule.train_dataloader():
            loss = F.cross_entropy(network(images), labels, label_smoothing=smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        steps += time.perf_counter() - start
        network.eval()
        loss_sum = correct = 0.0
        with torch.no_grad():
            for images, labels in datamodule.val_dataloader():
                logits = network(images)
                loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
                correct += (logits.argmax(1) == labels).sum().item()
        state = {"model": network.state_dict(), "optimizer": optimizer.state_dict()}
        torch.save(state, root / "last.pth")
    return steps, time.perf_counter() - loop_start


def measure(case: str, size: str) -> dict[str, Any]:
    """Per-trial (steps, loop) seconds of both loops, and their ratios per trial."""
    epochs, num_images, trials = CASES[case]["sizes"][size]
    samples: dict[str, list[tuple[float, float]]] = {"zoo": [], "plain": []}
    steps_per_epoch: list[int] = []
    with tempfile.TemporaryDirectory() as folder:
        runs = iter(range(10**6))

        def trial(side: str) -> float:
            # A fresh CLI each time (the same seeded weights and data); its set-up is untimed.
            root = Path(folder) / f"{side}{next(runs)}"
            cli = zoo_cli(case, root, epochs, num_images)
            steps, loop = zoo_fit(cli) if side == "zoo" else plain_fit(cli, epochs, Path(folder))
            samples[side].append((steps, loop))
            steps_per_epoch.append(len(cli.datamodule.train_dataloader()))
            return steps

        compare(lambda: trial("zoo"), lambda: trial("plain"), trials)
    zoo, plain = samples["zoo"][1:], samples["plain"][1:]  # without the warm-up pair
    result: dict[str, Any] = {"epochs": epochs, "steps_per_epoch": steps_per_epoch[-1]}
    for k, window in enumerate(("steps", "loop")):
        result[f"ratio_{window}"] = [p[k] / z[k] for z, p in zip(zoo, plain, strict=True)]
        result[f"zoo_{window}"] = [z[k] for z in zoo]
        result[f"plain_{window}"] = [p[k] for p in plain]
    return result


def run(size: str) -> list[Measurement]:
    """Both cases' ``steps`` and ``loop`` ratios."""
    warnings.filterwarnings("ignore")
    results = []
    for case, spec in CASES.items():
        r = measure(case, size)
        details = {
            "epochs": r["epochs"],
            "steps_per_epoch": r["steps_per_epoch"],
            "batch_size": spec["batch_size"],
            "threads": torch.get_num_threads(),
        }
        for window, what in (("steps", "training steps"), ("loop", "whole loop")):
            results.append(
                Measurement(
                    group="framework overhead",
                    name=f"{case}, {spec['shape']}, batch {spec['batch_size']}: {what}",
                    compared="plain PyTorch loop time / zoo fit time",
                    trials=r[f"ratio_{window}"],
                    goal=spec["goal"] if window == "steps" else "",
                    details=details
                    | {
                        "zoo_s": statistics.median(r[f"zoo_{window}"]),
                        "plain_s": statistics.median(r[f"plain_{window}"]),
                    },
                )
            )
    return results


# Where a function's own time is counted in a profile, by the path of its file.
_PLACES = (
    ("lightning/pytorch/callbacks/progress", "progress bar"),
    ("lightning/pytorch/loggers", "loggers"),
    ("tensorboard", "loggers"),
    ("lightning/pytorch/callbacks", "other callbacks"),
    ("lightning", "Lightning's loops and hooks"),
    ("torchmetrics", "metrics"),
    ("tasks/", "the task"),
    ("torch/optim", "optimizer (Python)"),
    ("torch/", "torch (Python)"),
    ("datamodules/", "data"),
    ("torch/utils/data", "data"),
)


def profile(case: str, size: str) -> dict[str, float]:
    """Seconds of a ``zoo fit``'s training loop by where they are spent: torch's kernels
    (``built-in``: convolutions, backward, the optimizer's arithmetic), Lightning, the task...
    from one run under ``cProfile`` (which inflates the Python parts about twofold)."""
    import cProfile
    import pstats

    with tempfile.TemporaryDirectory() as folder:
        epochs, num_images, _ = CASES[case]["sizes"][size]
        cli = zoo_cli(case, Path(folder), epochs, num_images)
        profiler = cProfile.Profile()
        profiler.enable()
        zoo_fit(cli)
        profiler.disable()
    totals: dict[str, float] = {}
    for (path, _, _), (_, _, own, _, _) in pstats.Stats(profiler).stats.items():
        place = "built-in (C++ kernels)" if path == "~" else "other Python"
        for fragment, name in _PLACES:
            if fragment in path:
                place = name
                break
        totals[place] = totals.get(place, 0.0) + own
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="quick", choices=SIZES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--profile", choices=list(CASES), help="instead: where one fit's time goes, by place"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.profile:
        warnings.filterwarnings("ignore")
        places = profile(args.profile, args.size)
        for place, seconds in places.items():
            print(f"{place:28s} {seconds:7.3f} s  {seconds / sum(places.values()):6.1%}")
        return
    for m in run(args.size):
        print(f"{m.name:45s} ratio {m.value:.3f}  trials {[round(t, 3) for t in m.trials]}")


if __name__ == "__main__":
    main()
