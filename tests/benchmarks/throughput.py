"""Training throughput: ``ImageClassifier`` + ``Trainer`` against a plain PyTorch loop.

Same LeNet (the digits quickstart's), same data loader, batch size, optimizer and loss; the
ratio (plain time / Lightning time, higher is better, 1.0 = no overhead) is measured in one run
with the loops interleaved, so machine noise hits all of them. Both wall time and the process's
CPU time are reported: on a shared machine other processes inflate wall time at random, while
CPU time (one thread, so no idle spinning is counted) only counts this loop's own work. Never a
CI gate: run it by hand.

    python -m tests.benchmarks.throughput [--epochs 20] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import lightning as L
import torch
import torch.nn.functional as F

import zoo
from datamodules import Digits
from tasks import ImageClassifier

MODEL_KWARGS = {"activation": "relu", "pooling": "max"}
LABEL_SMOOTHING = 0.1


def _optimizer(params):
    return torch.optim.Adam(params, lr=0.003)


class _Clock:
    """Wall and CPU seconds since construction."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def plain_loop(model: torch.nn.Module, loader, epochs: int) -> tuple[float, float]:
    """The course's training loop, nothing else: (wall, CPU) seconds for ``epochs`` epochs."""
    optimizer = _optimizer(model.parameters())
    model.train()
    clock = _Clock()
    for _ in range(epochs):
        for images, labels in loader:
            loss = F.cross_entropy(model(images), labels, label_smoothing=LABEL_SMOOTHING)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return clock.read()


class _LoopTimer(L.Callback):
    """Seconds spent in the training loop proper, without the Trainer's start-up and tear-down."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.clock = _Clock()

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds = self.clock.read()


def lightning_loop(
    model: torch.nn.Module, datamodule, epochs: int, demo: bool
) -> tuple[tuple[float, float], tuple[float, float]]:
    """The same training through ``ImageClassifier`` and ``Trainer``: (wall, CPU) seconds in
    the training loop, and for the whole ``fit`` call (start-up included).

    ``demo=True`` keeps what ``make demo`` runs (progress bar, TensorBoard logger, train
    metrics); ``False`` turns off the bar and the logger.
    """
    task = ImageClassifier(
        model, num_classes=10, in_channels=1, label_smoothing=LABEL_SMOOTHING, optimizer=_optimizer
    )
    trainer = L.Trainer(
        max_epochs=epochs,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=demo,
        logger=demo and L.pytorch.loggers.TensorBoardLogger("runs", name="benchmark"),
        accelerator="cpu",
        devices=1,
        callbacks=[timer := _LoopTimer()],
    )
    clock = _Clock()
    trainer.fit(task, datamodule=datamodule)
    return timer.seconds, clock.read()


def measure(
    epochs: int = 20, repeats: int = 5, batch_size: int = 64, threads: int | None = 1
) -> dict[str, float]:
    """Median wall and CPU times of each loop, and the ratios plain / Lightning.

    Keys: ``{plain,demo,demo_fit,lean,lean_fit}_{wall,cpu}`` in seconds and
    ``ratio_{demo,demo_fit,lean,lean_fit}_{wall,cpu}``; ``demo`` keeps the progress bar and
    TensorBoard logger of ``make demo``, ``lean`` drops them, ``*_fit`` includes start-up.
    """
    warnings.filterwarnings("ignore")
    if threads:
        torch.set_num_threads(threads)
    datamodule = Digits(batch_size=batch_size, val_fraction=0.0)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    torch.manual_seed(0)
    reference = zoo.create_model("lenet", **MODEL_KWARGS)
    plain_loop(copy.deepcopy(reference), loader, 1)  # warm-up: allocator, kernels
    samples: dict[str, list[tuple[float, float]]] = {
        k: [] for k in ("plain", "demo", "demo_fit", "lean", "lean_fit")
    }
    for _ in range(repeats):  # interleaved, so a slow spell of the machine hits every variant
        samples["plain"].append(plain_loop(copy.deepcopy(reference), loader, epochs))
        for variant in ("demo", "lean"):
            loop, fit = lightning_loop(
                copy.deepcopy(reference), datamodule, epochs, demo=variant == "demo"
            )
            samples[variant].append(loop)
            samples[f"{variant}_fit"].append(fit)
    result: dict[str, float] = {"steps": epochs * len(loader)}
    for name, values in samples.items():
        result[f"{name}_wall"] = statistics.median(v[0] for v in values)
        result[f"{name}_cpu"] = statistics.median(v[1] for v in values)
    for name in ("demo", "demo_fit", "lean", "lean_fit"):
        for kind in ("wall", "cpu"):
            result[f"ratio_{name}_{kind}"] = result[f"plain_{kind}"] / result[f"{name}_{kind}"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 0 = default")
    args = parser.parse_args()
    r = measure(args.epochs, args.repeats, args.batch_size, args.threads or None)
    print(
        f"LeNet on digits, {int(r['steps'])} steps of batch {args.batch_size}, "
        f"median of {args.repeats}, wall / CPU seconds:"
    )
    print(f"  plain PyTorch loop                  {r['plain_wall']:6.2f} / {r['plain_cpu']:6.2f}")
    for name, label in (("demo", "bar + TensorBoard"), ("lean", "no bar, no logger")):
        print(
            f"  ImageClassifier + Trainer ({label:17s}) {r[name + '_wall']:6.2f} / "
            f"{r[name + '_cpu']:6.2f}   ratio {r[f'ratio_{name}_wall']:.3f} / "
            f"{r[f'ratio_{name}_cpu']:.3f}   (whole fit: {r[f'ratio_{name}_fit_wall']:.3f} / "
            f"{r[f'ratio_{name}_fit_cpu']:.3f})"
        )


if __name__ == "__main__":
    main()
