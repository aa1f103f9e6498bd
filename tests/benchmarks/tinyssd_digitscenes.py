"""TinySSD on DigitScenes (Section 14.7): the zoo's recipe against the course's, over seeds.

Each run is what a user types, through the ``zoo`` CLI in this process: ``zoo fit`` with
``configs/detection/tinyssd_digitscenes.yaml`` (plus the recipe's overrides), then ``zoo validate``
on the best checkpoint. Reports held-out ``val/map_50`` and ``val/map`` and the wall time of the
fit, per run and as mean over seeds.

- ``zoo``: the config as it is (AdamW with a cosine schedule, crop-and-colour augmentation,
  every (anchor, class) pair scored and class-wise NMS);
- ``course``: the course's training of TinySSD: SGD at learning rate 0.2 with weight decay 5e-4,
  no schedule, no augmentation, and its decoding (one class per anchor, NMS across classes).

    python -m tests.benchmarks.tinyssd_digitscenes [--seeds 0 1] [--recipes zoo course]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings

from tests.benchmarks.detection_digitscenes import fit_and_validate

CONFIG = "configs/detection/tinyssd_digitscenes.yaml"
RECIPES = {
    "zoo": [],
    "course": [
        "--model.init_args.optimizer=torch.optim.SGD",
        "--model.init_args.optimizer.init_args.lr=0.2",
        "--model.init_args.optimizer.init_args.weight_decay=0.0005",
        "--model.init_args.scheduler=null",
        "--model.init_args.model_kwargs={per_class_nms: false}",
        "--data.init_args.train_transforms=none",
    ],
}


def run_recipe(recipe: str, seed: int, root: str, extra: list[str]) -> dict[str, float]:
    """One fit of ``recipe`` (a key of ``RECIPES``) and its scores; ``extra`` goes last, so it
    overrides the recipe. (Not ``run``: that name is ``make bench``'s ``run(size)``, and
    :mod:`tests.benchmarks.quality` runs these recipes for it.)"""
    return fit_and_validate(CONFIG, seed, f"{root}/{recipe}_seed{seed}", RECIPES[recipe] + extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--root", default=None, help="run folders (default: a temporary one)")
    parser.add_argument(
        "overrides", nargs="*", help="more zoo fit arguments, e.g. --trainer.max_epochs=5"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    root = args.root or tempfile.mkdtemp(prefix="tinyssd_digitscenes_")
    results: dict[str, list[dict[str, float]]] = {}
    for recipe in args.recipes:
        for seed in args.seeds:
            result = run_recipe(recipe, seed, root, args.overrides)
            results.setdefault(recipe, []).append(result)
            print(
                f"{recipe:7s} seed {seed}: map_50 {result['map_50']:.4f}  map {result['map']:.4f}"
                f"  fit {result['seconds']:.0f} s",
                flush=True,
            )
    print("\nrecipe   map_50 (mean)  map (mean)  fit s (mean)")
    for recipe, runs in results.items():
        mean = {k: statistics.fmean(r[k] for r in runs) for k in ("map_50", "map", "seconds")}
        print(
            f"{recipe:7s}  {mean['map_50']:.4f}         {mean['map']:.4f}      {mean['seconds']:.0f}"
        )


if __name__ == "__main__":
    main()
