"""Quality at equal epochs: the zoo's recipes against the course's, on the embedded data.

The zoo's configs change the course's recipes (optimiser, schedule, augmentation, activation,
output stride); the claim they make is that the change buys accuracy, not just a different
number of epochs. So each pair is trained for the same number of epochs, through the ``zoo``
CLI in this process (``zoo fit`` then ``zoo validate`` or ``zoo test`` on the best checkpoint,
:func:`~tests.benchmarks.detection_digitscenes.fit_and_validate`), and the value of each row is
the zoo's margin over the course (above 0: the zoo's recipe is better):

- LeNet on scikit-learn's digits (Section 7.6): ``configs/classification/lenet_digits.yaml``
  (ReLU, max-pooling, Adam at 0.003, label smoothing 0.1, batches of 64) against the course's
  sigmoid and average-pooling LeNet with Xavier initialisation and plain SGD, in both editions
  of the book (lr 0.1 with batches of 128; lr 0.9 with batches of 256): the margin is over the
  better of the two, on the 360 test digits.
- TinySSD on DigitScenes (Section 14.7): the two recipes of
  :mod:`tests.benchmarks.tinyssd_digitscenes`, ``val/map_50`` (``val/map`` in details).
- FCN on DigitScenes (Section 14.11): the two recipes of
  :mod:`tests.benchmarks.segmentation_digitscenes` (the zoo's stride-8 FCN with AdamW and a
  cosine schedule; the book's stride-32 FCN with its SGD), ``val/miou``.
- Fine-tuning against training from scratch on the digits 5-9, 10 shots per class (Section
  14.2), with :mod:`tests.benchmarks.finetune_digits`: the course's claim rather than a zoo
  recipe, so the row is fine-tuned minus scratch, each at the best of its learning rates (at
  15 epochs the course's own small rate, 1e-4 with the head at x10, has not caught up yet:
  its score is in the details).

Every schedule here is shorter than the configs' (TinySSD's 15 epochs take about 330 s on two
cores, FCN's 3 about 300 s), so a zoo recipe's cosine schedule is set to end at the shortened
last epoch; the details say so. ``tiny`` proves the code runs (a temporary tree of 24 scenes,
two batches a loader: numbers meaningless); ``quick`` trains on a temporary tree of 320 scenes,
too few for the scene tasks' numbers to mean much; ``full`` on the configs' own tree under
``data/digit_scenes`` (written on first use, about 20 s), scored on its 500 validation scenes
as the README's numbers are. Raw scores and fit times are in the details.

What to expect (2-core CPU, ``full``, seed 0): TinySSD after 3 epochs, map_50 0.333 against
0.133; FCN after 1 epoch, mIoU 0.339 against 0.073 (the course's rate of 0.001 is a
fine-tuning rate, for an ImageNet backbone); LeNet at 10 epochs 0.98 or so against chance,
0.10: the course's sigmoid LeNet with plain SGD leaves chance only after about 100 epochs of
these 1,293 images (0.73 at lr 0.1, 0.93 at lr 0.9; about 1,000 steps, two epochs of the
Fashion-MNIST it was tuned on): at equal epochs on this small set it has not begun to learn.

    python -m tests.benchmarks.quality [--size quick] [--cases lenet tinyssd fcn finetune]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from tests.benchmarks import finetune_digits, tinyssd_digitscenes
from tests.benchmarks._report import SIZES, Measurement
from tests.benchmarks.detection_digitscenes import fit_and_validate
from tests.benchmarks.segmentation_digitscenes import FCN_CONFIG, FCN_RECIPES

GROUP = "quality"
# No sanity check (a val pass), no logger (whose figures are drawn each val pass) and no
# last.ckpt beside best.ckpt: the runs return the scores compared, and nothing is resumed.
QUIET = [
    "--trainer.num_sanity_val_steps=0",
    "--trainer.logger=false",
    "--checkpoint.save_last=false",
]
# The configs' tree (they name it relative to the repository's root).
SCENES_ROOT = Path(__file__).resolve().parents[2] / "data" / "digit_scenes"

LENET_CONFIG = "configs/classification/lenet_digits.yaml"
# The course's LeNet: sigmoid, average pooling, Xavier initialisation, plain SGD, no smoothing.
_COURSE_LENET = [
    "--model.init_args.model_kwargs={activation: sigmoid, pooling: avg, init: xavier_uniform}",
    "--model.init_args.label_smoothing=0",
    "--model.init_args.optimizer=torch.optim.SGD",
]
LENET_RECIPES = {
    "zoo": [],
    # d2l 1.0 (and configs/classification/lenet_fashion_mnist.yaml): lr 0.1, batches of 128.
    "course": [
        *_COURSE_LENET,
        "--model.init_args.optimizer.init_args.lr=0.1",
        "--data.init_args.batch_size=128",
    ],
    # d2l 0.17's train_ch6: lr 0.9, batches of 256.
    "course_0.17": [
        *_COURSE_LENET,
        "--model.init_args.optimizer.init_args.lr=0.9",
        "--data.init_args.batch_size=256",
    ],
}


@dataclass(frozen=True)
class Setting:
    """How long each case trains at one size.

    Args:
        seeds: seeds of the LeNet pairs (a trial each); the other cases run the first only.
        lenet_epochs, tinyssd_epochs, fcn_epochs: epochs of both recipes of each case.
        scenes: ``(train, val)`` scenes of a temporary tree, or None for the configs' tree.
        shots, finetune_epochs, pretrain_epochs: the fine-tuning case's settings.
        limit_batches: every loader's cap for every case (1.0: none), for the smoke run.
        batch_size: every CLI run's batch size, for the smoke run (None: the recipes').
    """

    seeds: tuple[int, ...]
    lenet_epochs: int
    tinyssd_epochs: int
    fcn_epochs: int
    scenes: tuple[int, int] | None
    shots: int
    finetune_epochs: int
    pretrain_epochs: int
    limit_batches: int | float = 1.0
    batch_size: int | None = None


# Arguments in Setting's order: seeds; LeNet, TinySSD and FCN epochs; scenes; shots, fine-tuning
# and pretraining epochs.
SETTINGS = {
    "tiny": Setting((0,), 1, 1, 1, (16, 8), 2, 1, 1, limit_batches=2, batch_size=8),
    "quick": Setting((0, 1), 3, 1, 1, (320, 64), 10, 5, 2),
    "full": Setting((0, 1, 2), 10, 3, 1, None, 10, 15, 10),
}


@dataclass(frozen=True)
class SceneCase:
    """A DigitScenes pair: the config, its two recipes and what the row compares."""

    title: str
    config: str
    recipes: dict[str, list[str]]
    metrics: tuple[str, ...]  # the first is the row's
    compared: str
    unit: str


SCENE_CASES = {
    "tinyssd": SceneCase(
        "TinySSD on DigitScenes",
        tinyssd_digitscenes.CONFIG,
        tinyssd_digitscenes.RECIPES,
        ("map_50", "map"),
        "zoo recipe - course recipe (val mAP@50)",
        "mAP@50",
    ),
    "fcn": SceneCase(
        "FCN on DigitScenes",
        FCN_CONFIG,
        FCN_RECIPES,
        ("miou", "pixel_acc"),
        "zoo recipe (stride 8) - course recipe (stride 32) (val mIoU)",
        "mIoU",
    ),
}
CASES = ("lenet", "tinyssd", "fcn", "finetune")


def _smoke(setting: Setting) -> list[str]:
    """The smoke run's caps on every loader and batch size (none at other sizes)."""
    limits = [
        f"--trainer.limit_{stage}_batches={setting.limit_batches}"
        for stage in ("train", "val", "test")
    ]
    batches = [f"--data.init_args.batch_size={setting.batch_size}"] if setting.batch_size else []
    return [*(limits if setting.limit_batches != 1.0 else []), *batches]


def _fit_pair(
    config: str,
    recipes: dict[str, list[str]],
    seed: int,
    root: Path,
    extra: list[str],
    metrics: tuple[str, ...],
    epochs: int,
    stage: Literal["validate", "test"] = "validate",
    cosine: tuple[str, ...] = ("zoo",),
) -> dict[str, dict[str, float]]:
    """Each recipe of ``recipes`` for ``epochs``, then scored: ``{recipe: {metric: score,
    "seconds": fit}}``. The recipes in ``cosine`` keep the config's cosine schedule (``T_max``
    in epochs), made to end at the last of these epochs as the config's ends at its own."""
    runs = {}
    for name, overrides in recipes.items():
        ending = [f"--model.init_args.scheduler.init_args.T_max={epochs}"] if name in cosine else []
        args = [*overrides, f"--trainer.max_epochs={epochs}", *ending, *QUIET, *extra]
        run_root = str(root / f"{name}_seed{seed}")
        runs[name] = fit_and_validate(config, seed, run_root, args, metrics, stage)
    return runs


def _row(
    name: str,
    compared: str,
    runs: list[dict[str, dict[str, float]]],
    metric: str,
    unit: str,
    ours: str = "zoo",
    theirs: tuple[str, ...] = ("course",),
    **details: object,
) -> Measurement:
    """The row of one case: per seed, ``ours``'s ``metric`` minus the best of ``theirs``; every
    recipe's scores and fit seconds (a list over seeds) in the details."""
    trials = [run[ours][metric] - max(run[r][metric] for r in theirs) for run in runs]
    raw = {
        f"{recipe} {key}": [run[recipe][key] for run in runs]
        for recipe in runs[0]
        for key in runs[0][recipe]
    }
    return Measurement(GROUP, name, compared, trials, unit, ">= 0", details=details | raw)


def _epochs(count: int) -> str:
    return f"{count} epoch{'s' if count > 1 else ''}"


def _lenet(setting: Setting, root: Path) -> Measurement:
    epochs, extra = setting.lenet_epochs, _smoke(setting)
    runs = [
        _fit_pair(
            LENET_CONFIG, LENET_RECIPES, seed, root / "lenet", extra, ("acc",), epochs, "test", ()
        )
        for seed in setting.seeds
    ]
    return _row(
        f"LeNet on digits, {_epochs(epochs)}",
        "zoo recipe - course recipe, better edition (test acc)",
        runs,
        "acc",
        "acc",
        theirs=("course", "course_0.17"),
        epochs=epochs,
        seeds=list(setting.seeds),
    )


def _scenes(setting: Setting, root: Path, case: str) -> Measurement:
    """A DigitScenes pair at equal epochs, on the first seed."""
    spec = SCENE_CASES[case]
    epochs = setting.tinyssd_epochs if case == "tinyssd" else setting.fcn_epochs
    extra = _smoke(setting)
    if setting.scenes is None:
        extra.append(f"--data.init_args.root={SCENES_ROOT}")
        train, val = 4000, 500  # the configs'
    else:  # one tree for both cases (the datamodules take the same scene arguments)
        train, val = setting.scenes
        extra += [
            f"--data.init_args.root={root / 'scenes'}",
            f"--data.init_args.num_train={train}",
            f"--data.init_args.num_val={val}",
        ]
    seed = setting.seeds[0]
    run = _fit_pair(spec.config, spec.recipes, seed, root / case, extra, spec.metrics, epochs)
    return _row(
        f"{spec.title}, {_epochs(epochs)}",
        spec.compared,
        [run],
        spec.metrics[0],
        spec.unit,
        epochs=epochs,
        seed=seed,
        train_scenes=train,
        val_scenes=val,
        schedule="shortened: the config trains for more epochs",
    )


def _finetune(setting: Setting, root: Path) -> Measurement:
    """Every recipe of :mod:`~tests.benchmarks.finetune_digits`; the row is the best fine-tuned
    minus the best from scratch (each side at its better learning rate: the course's claim is
    about the starting point, not one rate), the course's own recipe among the details."""
    seed = setting.seeds[0]
    (root / "finetune").mkdir()
    scores = finetune_digits.run_seed(
        seed,
        setting.shots,
        setting.finetune_epochs,
        setting.pretrain_epochs,
        root / "finetune",
        limit_batches=setting.limit_batches,
    )
    recipes = [mode for mode, *_ in finetune_digits.RECIPES]
    runs = [{name: {"acc": scores[name], "seconds": scores[f"{name} s"]} for name in recipes}]
    fine_tuned = max((r for r in recipes if r.startswith("fine-tuned")), key=scores.get)
    scratch = tuple(r for r in recipes if r.startswith("scratch"))
    return _row(
        f"ResNet-18 on digits 5-9, {setting.shots} shots a class, {_epochs(setting.finetune_epochs)}",
        "fine-tuned from digits 0-4 - scratch, each at its best rate (test acc)",
        runs,
        "acc",
        "acc",
        ours=fine_tuned,
        theirs=scratch,
        seed=seed,
        best_fine_tuned=fine_tuned,
        course_recipe=finetune_digits.COURSE,
        pretrain_epochs=setting.pretrain_epochs,
        pretrain_seconds=scores["pretrain s"],
        steps=scores["steps"],
        test_images=scores["test_images"],
        schedule="shortened: the module's defaults are 3 seeds of 30 + 30 epochs",
    )


RUNNERS: dict[str, Callable[[Setting, Path], Measurement]] = {
    "lenet": _lenet,
    "tinyssd": partial(_scenes, case="tinyssd"),
    "fcn": partial(_scenes, case="fcn"),
    "finetune": _finetune,
}


def measure(setting: Setting, cases: tuple[str, ...] = CASES) -> list[Measurement]:
    """The rows of ``cases``, each trained in its own folder of one temporary root (where
    the scene cases share their tree, when it is a temporary one)."""
    with tempfile.TemporaryDirectory(prefix="quality_") as tmp, warnings.catch_warnings():
        # One process reading small in-memory or few-hundred-scene sets: not a loader benchmark.
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*log_every_n_steps.*")
        return [RUNNERS[case](setting, Path(tmp)) for case in cases]


def run(size: str) -> list[Measurement]:
    return measure(SETTINGS[size])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="quick")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    args = parser.parse_args()
    rows = measure(SETTINGS[args.size], tuple(args.cases))
    print("\n| case | compared | margin (median) | unit | met |\n| --- | --- | ---: | --- | --- |")
    for row in rows:
        print(f"| {row.name} | {row.compared} | {row.value:+.3f} | {row.unit} | {row.met} |")
    for row in rows:
        print(f"\n{row.name}:")
        for key, value in row.details.items():
            print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
