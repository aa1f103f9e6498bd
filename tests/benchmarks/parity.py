"""Architecture parity: each zoo model that torchvision also ships against torchvision's own.

The zoo rebuilds torchvision's layouts from the course's blocks (AlexNet, VGG, GoogLeNet, ResNet)
or composes torchvision's heads on zoo backbones (FCN, DeepLabV3, SSD, Faster and Mask R-CNN),
and promises the same network: the same weights load, the same outputs come out. This checks it
costs the same. Each pair is built from one set of random weights (torchvision's model, its
state dict saved and loaded with ``zoo.create_model(name, weights=path)``), its outputs checked
equal (eval outputs, and the training losses of the first step), then one training step of each
is timed in alternation (``_report.compare``): forward, loss, backward in fp32, and for the
detectors their whole step (forward with targets, summed losses, backward, SGD step; images in
[0, 1] for torchvision's, which normalises inside, normalised for the zoo's, as its data modules
give them). The ratio is torchvision's seconds over the zoo's (above 1: the zoo is faster); the
goal is 0.98.

Then the zoo's CPU fast path against the same torchvision baseline (eager, fp32, contiguous):
the zoo model and its input in channels-last memory format, and (``full``) that compiled with
``torch.compile`` (inductor), timed after its compiling first call, whose seconds are recorded.

Inputs are smaller than the models' native sizes (``full``: classifiers 3x128x128 in batches
of 8, segmenters 3x128x128 in pairs, R-CNN images resized to 320; ``quick`` and ``tiny``
smaller, and fewer models) so that each size fits its budget on a 2-core CPU; ``details`` keeps
the sizes, batch, threads and both sides' wall and CPU seconds. Never a CI gate: run it by hand
or through ``make bench``.

    python -m tests.benchmarks.parity [--size quick] [--threads 2] [--models ssd300_vgg16 ...]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

import zoo
from tests.benchmarks._report import SIZES, Measurement, compare

GROUP = "architecture parity"
GOAL = ">= 0.98"
COMPARED = "torchvision time / zoo time (fp32)"

# zoo registry name -> torchvision's builder of the same network, the arguments that make it
# that network, and the zoo's arguments for the same (both get random weights, no download).
PAIRS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "alexnet_torchvision": ("alexnet", {}, {}),
    "vgg11": ("vgg11", {}, {}),
    "vgg16": ("vgg16", {}, {}),
    # torchvision's auxiliary classifiers run only in training and the zoo model has none (its
    # pretrained model drops them too); both re-normalise the input, as the ImageNet weights need.
    "googlenet_torchvision": (
        "googlenet",
        {"aux_logits": False, "transform_input": True, "init_weights": True},
        {"transform_input": True},
    ),
    "resnet18": ("resnet18", {}, {}),
    "resnet50": ("resnet50", {}, {}),
    "fcn_resnet50": (
        "fcn_resnet50",
        {"weights_backbone": None, "aux_loss": True},
        {"aux_loss": True},
    ),
    "deeplabv3_resnet50": (
        "deeplabv3_resnet50",
        {"weights_backbone": None, "aux_loss": True},
        {"aux_loss": True},
    ),
    # 91 outputs: COCO's 90 classes and the background, which zoo detectors do not count.
    "ssd300_vgg16": ("ssd300_vgg16", {"weights_backbone": None, "num_classes": 91}, {}),
    "fasterrcnn_resnet50_fpn": (
        "fasterrcnn_resnet50_fpn",
        {"weights_backbone": None, "num_classes": 91},
        {},
    ),
    "maskrcnn_resnet50_fpn": (
        "maskrcnn_resnet50_fpn",
        {"weights_backbone": None, "num_classes": 91},
        {},
    ),
}
DETECTORS = tuple(name for name in PAIRS if zoo.model_info(name).task == "detection")
SEGMENTATION_CLASSES = 21  # VOC's, torchvision's default for its segmenters


@dataclass(frozen=True)
class Settings:
    """What one size runs.

    Attributes:
        models: registry names (keys of :data:`PAIRS`) compared in eager fp32.
        trials: alternating trials per pair (after one untimed, checked step of each).
        image, batch: the classifiers' square input side and batch.
        segmentation_image, segmentation_batch: the same for the segmenters.
        detection_size, detection_batch: R-CNN ``min_size``/``max_size`` (SSD300 resizes to
            300 whatever it gets) and images per step.
        channels_last: models also timed in channels-last memory format.
        compiled: models also timed channels-last and ``torch.compile``-d.
    """

    models: tuple[str, ...]
    trials: int
    image: int = 128
    batch: int = 8
    segmentation_image: int = 128
    segmentation_batch: int = 2
    detection_size: int = 256
    detection_batch: int = 2
    channels_last: tuple[str, ...] = ()
    compiled: tuple[str, ...] = ()


# tiny smoke-runs one model of each task at the smallest inputs (its numbers mean nothing):
# ~10 s of one core's work. quick: ~60 s of one core's work, ~40 s on 2 idle cores. full:
# ~270 s of one core's work, ~3.5 minutes on 2 idle cores with ~35 s of compiling ResNet-18
# (inductor caches the compiled graphs on disk, under /tmp/torchinductor_$USER: a few
# seconds on the next run). Other busy processes slow 2-thread steps several times over.
SETTINGS = {
    "tiny": Settings(
        ("resnet18", "fcn_resnet50", "fasterrcnn_resnet50_fpn"),
        trials=1,
        image=64,
        batch=2,
        segmentation_image=64,
        detection_size=128,
        detection_batch=1,
        channels_last=("resnet18",),
    ),
    "quick": Settings(
        (
            "alexnet_torchvision",
            "vgg11",
            "googlenet_torchvision",
            "resnet18",
            "resnet50",
            "fcn_resnet50",
            "deeplabv3_resnet50",
            "fasterrcnn_resnet50_fpn",
        ),
        trials=3,
        batch=4,
        segmentation_image=96,
        detection_size=192,
        detection_batch=1,
        channels_last=("resnet18", "resnet50"),
    ),
    "full": Settings(
        tuple(PAIRS),
        trials=5,
        detection_size=320,
        detection_batch=1,
        channels_last=("resnet18", "resnet50", "googlenet_torchvision", "fcn_resnet50"),
        compiled=("resnet18",),
    ),
}


def load_pair(
    name: str, torchvision_kwargs: Mapping[str, Any] | None = None, **zoo_kwargs: Any
) -> tuple[nn.Module, nn.Module]:
    """torchvision's model of ``name`` with random weights, and the zoo's loaded from its state
    dict (through a file, as users load torchvision's), both in training mode.
    ``torchvision_kwargs`` and ``zoo_kwargs`` add builder arguments to both sides' defaults."""
    builder, theirs_kwargs, ours_kwargs = PAIRS[name]
    torch.manual_seed(0)
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as folder:
        # torchvision's GoogLeNet warns that its initialisation will change; the zoo, that a
        # bare state dict records no preprocessing: neither matters for timing.
        warnings.simplefilter("ignore")
        theirs = torchvision.models.get_model(
            builder, weights=None, **theirs_kwargs, **(torchvision_kwargs or {})
        )
        path = Path(folder) / "weights.pth"
        torch.save(theirs.state_dict(), path)
        ours = zoo.create_model(name, weights=str(path), **ours_kwargs, **zoo_kwargs)
    return theirs.train(), ours.train()


def _detection_batch(
    batch: int, size: int, masks: bool
) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """``batch`` random ``size`` x ``size`` images in [0, 1] with three random boxes each (and
    their box-shaped instance masks when ``masks``), seeded."""
    generator = torch.Generator().manual_seed(1)
    images = [torch.rand(3, size, size, generator=generator) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        corners = torch.rand(3, 2, 2, generator=generator).sort(dim=1).values * size
        boxes = torch.cat([corners[:, 0], corners[:, 1] + 8], dim=1).clamp(max=size)
        target = {"boxes": boxes, "labels": torch.randint(1, 91, (3,), generator=generator)}
        if masks:
            target["masks"] = torch.zeros(3, size, size, dtype=torch.uint8)
            for mask, (x1, y1, x2, y2) in zip(target["masks"], boxes.long().tolist(), strict=True):
                mask[y1:y2, x1:x2] = 1
        targets.append(target)
    return images, targets


def _normalised(name: str, images: list[Tensor]) -> list[Tensor]:
    """Images in [0, 1] as the zoo detector ``name`` takes them: normalised with what
    torchvision's normalises inside (zoo models leave that to the data)."""
    mean, std = zoo.model_info(name).torchvision_mean_std
    mean, std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    return [(image - mean) / std for image in images]


class TrainStep:
    """One training step of ``model``, timed, for :func:`_report.compare`.

    ``losses()`` runs the model and returns its named loss terms; the step sums and
    back-propagates them and, with an ``optimizer``, zeroes and steps it inside the timed span
    (the detectors' whole step); without, gradients are dropped before the clock starts. The
    RNG is seeded alike before every step, so both sides of a pair draw the same dropout masks
    and R-CNN proposal samples. Each call returns wall seconds and keeps the process's CPU
    seconds in ``cpu`` and the last loss terms in ``last``.
    """

    def __init__(
        self,
        model: nn.Module,
        losses: Callable[[], Mapping[str, Tensor]],
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        self.model, self.losses, self.optimizer = model, losses, optimizer
        self.cpu: list[float] = []
        self.last: dict[str, Tensor] = {}

    def __call__(self) -> float:
        torch.manual_seed(2)
        if self.optimizer is None:
            self.model.zero_grad(set_to_none=True)
        wall, cpu = time.perf_counter(), time.process_time()
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        terms = self.losses()
        sum(terms.values()).backward()
        if self.optimizer is not None:
            self.optimizer.step()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        self.cpu.append(cpu)
        self.last = {key: value.detach() for key, value in terms.items()}
        return wall


def _detection_steps(
    name: str, batch: int, size: int, lr: float = 1e-5
) -> tuple[TrainStep, TrainStep, dict[str, Any]]:
    """The training steps of torchvision's detector ``name`` and the zoo's, on the same images
    and targets (pixels in [0, 1] for torchvision's, normalised for the zoo's), each with its
    SGD optimizer; and the settings to record. R-CNN images are resized to ``size``."""
    ssd = name.startswith("ssd")
    size = 300 if ssd else size  # SSD300 resizes any image to 300 x 300: give it that
    sizes = {} if ssd else {"min_size": size, "max_size": size}
    theirs, ours = load_pair(name, sizes, **sizes)
    images, targets = _detection_batch(batch, size, masks=name.startswith("maskrcnn"))
    zoo_images = _normalised(name, images)
    steps = [
        TrainStep(
            model,
            lambda model=model, inputs=inputs: model(inputs, targets),
            torch.optim.SGD(model.parameters(), lr=lr),
        )
        for model, inputs in ((theirs, images), (ours, zoo_images))
    ]
    return steps[0], steps[1], {"input": f"3x{size}x{size}", "batch": batch, "step": "fwd+bwd+SGD"}


def _classifier_losses(model: nn.Module, x: Tensor, labels: Tensor) -> dict[str, Tensor]:
    return {"loss": F.cross_entropy(model(x), labels)}


def _segmenter_losses(model: nn.Module, x: Tensor, masks: Tensor) -> dict[str, Tensor]:
    out = model(x)
    # torchvision's reference recipe: the auxiliary head's loss weighted 0.5.
    return {
        "out": F.cross_entropy(out["out"], masks),
        "aux": 0.5 * F.cross_entropy(out["aux"], masks),
    }


def _check_outputs(
    ours: nn.Module, theirs: nn.Module, x: Tensor, ours_x: Tensor | None = None, **tolerance: float
) -> None:
    """Eval-mode outputs on ``x`` equal (``ours_x``: the zoo's copy of it in another memory
    format); both models are left in training mode."""
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x if ours_x is None else ours_x), theirs(x), **tolerance)
    ours.train(), theirs.train()


def _check_losses(ours: TrainStep, theirs: TrainStep, what: str, **tolerance: float) -> None:
    """The last steps' loss terms equal: the same computation from the same weights."""
    try:
        torch.testing.assert_close(ours.last, theirs.last, **tolerance)
    except AssertionError as error:
        raise AssertionError(f"{what}: the zoo's losses differ from torchvision's") from error


def _measurement(
    label: str,
    ours: TrainStep,
    theirs: TrainStep,
    trials: int,
    details: dict[str, Any],
    compared: str = COMPARED,
) -> Measurement:
    """Alternate the two (already warmed-up and checked) steps over ``trials``."""
    ratios, ours_s, theirs_s = compare(ours, theirs, trials, warmup=False)
    # Process CPU seconds too: with one thread, what other processes on a shared machine
    # inflate least (with more, threads spinning at barriers count as busy).
    ours_cpu = statistics.median(ours.cpu[-trials:])
    theirs_cpu = statistics.median(theirs.cpu[-trials:])
    return Measurement(
        group=GROUP,
        name=f"{label}, {details['input']}, batch {details['batch']}, {details['step']}",
        compared=compared,
        trials=ratios,
        goal=GOAL,
        details={
            "zoo_s": statistics.median(ours_s),
            "torchvision_s": statistics.median(theirs_s),
            "zoo_cpu_s": ours_cpu,
            "torchvision_cpu_s": theirs_cpu,
            "cpu_ratio": theirs_cpu / ours_cpu,
            "threads": torch.get_num_threads(),
            "trials": trials,
            **details,
        },
    )


def measure_detector(name: str, settings: Settings) -> Measurement:
    """A detector's whole training step, the zoo's against torchvision's."""
    theirs, ours, details = _detection_steps(
        name, settings.detection_batch, settings.detection_size
    )
    theirs(), ours()  # warm-up, and the check: the same losses from the same weights
    _check_losses(ours, theirs, name)
    return _measurement(name, ours, theirs, settings.trials, details)


def measure_model(name: str, settings: Settings) -> list[Measurement]:
    """A classifier or segmenter in eager fp32, then the zoo's fast paths the settings ask for."""
    theirs, ours = load_pair(name)
    generator = torch.Generator().manual_seed(1)
    if zoo.model_info(name).task == "segmentation":
        side, batch = settings.segmentation_image, settings.segmentation_batch
        target = torch.randint(0, SEGMENTATION_CLASSES, (batch, side, side), generator=generator)
        losses = _segmenter_losses
    else:
        side, batch = settings.image, settings.batch
        target = torch.randint(0, 1000, (batch,), generator=generator)
        losses = _classifier_losses
    x = torch.randn(batch, 3, side, side, generator=generator)

    def train_step(model: nn.Module, inputs: Tensor) -> TrainStep:
        return TrainStep(model, lambda: losses(model, inputs, target))

    _check_outputs(ours, theirs, x)
    baseline, eager = train_step(theirs, x), train_step(ours, x)
    baseline(), eager()  # warm-up, and the check of the training losses
    _check_losses(eager, baseline, name)
    details = {"input": f"3x{side}x{side}", "batch": batch, "step": "fwd+bwd"}
    results = [_measurement(name, eager, baseline, settings.trials, details)]
    if name in settings.channels_last or name in settings.compiled:
        results += _fast_paths(name, ours, baseline, train_step, x, settings, details)
    return results


# Channels-last convolutions sum in another order, and inductor fuses and reorders: the same
# network to float precision, not bit for bit.
_FAST_TOLERANCE = {"rtol": 1e-3, "atol": 1e-3}


def _fast_paths(
    name: str,
    ours: nn.Module,
    baseline: TrainStep,
    train_step: Callable[[nn.Module, Tensor], TrainStep],
    x: Tensor,
    settings: Settings,
    details: dict[str, Any],
) -> list[Measurement]:
    """The zoo model channels-last (and compiled), each timed against torchvision eager fp32."""
    fast = copy.deepcopy(ours).to(memory_format=torch.channels_last)
    fast_x = x.contiguous(memory_format=torch.channels_last)
    _check_outputs(fast, baseline.model, x, fast_x, **_FAST_TOLERANCE)
    step = train_step(fast, fast_x)
    step()
    _check_losses(step, baseline, f"{name} channels-last", **_FAST_TOLERANCE)
    results = [
        _measurement(
            f"{name} channels-last",
            step,
            baseline,
            settings.trials,
            details,
            "torchvision eager time / zoo channels-last time (fp32)",
        )
    ]
    if name not in settings.compiled:
        return results
    step = train_step(torch.compile(fast), fast_x)
    try:
        start = time.perf_counter()
        step()  # compiles the forward and the backward graphs
        compile_s = time.perf_counter() - start
        step()  # the first compiled run: allocator, caches
        _check_losses(step, baseline, f"{name} compiled", **_FAST_TOLERANCE)
    except Exception as error:  # inductor needs a C++ compiler, and may fail on a model
        # No number for it, only this note (main prints it).
        results[0].details["compile"] = f"failed on CPU: {type(error).__name__}: {error}"
        return results
    results.append(
        _measurement(
            f"{name} channels-last + compile",
            step,
            baseline,
            settings.trials,
            {**details, "compile_s": compile_s, "backend": "inductor"},
            "torchvision eager time / zoo channels-last + compile time (fp32)",
        )
    )
    return results


def measure(settings: Settings) -> list[Measurement]:
    """Every model of ``settings``: eager fp32 parity, then the fast paths asked for."""
    results = []
    for name in settings.models:
        if name in DETECTORS:
            results.append(measure_detector(name, settings))
        else:
            results += measure_model(name, settings)
    return results


def run(size: str) -> list[Measurement]:
    return measure(SETTINGS[size])


def print_table(measurements: list[Measurement]) -> None:
    """Two lines per measurement: what, then both medians, the ratio, its range and the goal."""
    for m in measurements:
        compared = "" if m.compared == COMPARED else f"   [{m.compared}]"
        print(f"  {m.name}{compared}")
        d = m.details
        print(
            f"    zoo {d['zoo_s']:6.3f} s   torchvision {d['torchvision_s']:6.3f} s   ratio "
            f"{m.value:.3f} (trials {min(m.trials):.2f}-{max(m.trials):.2f}, goal {m.goal}: "
            f"{'met' if m.met else 'not met'})   CPU-time ratio {d['cpu_ratio']:.3f}"
        )
        if "compile_s" in d:
            print(f"    compiling (the first call): {d['compile_s']:.1f} s")
        if "compile" in d:
            print(f"    torch.compile: {d['compile']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="quick")
    parser.add_argument("--threads", type=int, default=2, help="torch threads; 0 = default")
    parser.add_argument(
        "--models", nargs="+", choices=list(PAIRS), help="only these (default: the size's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = SETTINGS[args.size]
    if args.models:
        settings = dataclasses.replace(settings, models=tuple(args.models))
    print(
        f"One training step in fp32, {torch.get_num_threads()} threads; median of "
        f"{settings.trials} alternating trials of torchvision's seconds / the zoo's "
        "(above 1: the zoo is faster):"
    )
    print_table(measure(settings))


if __name__ == "__main__":
    main()
