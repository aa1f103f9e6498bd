"""Every detector family on DigitScenes: each family's CPU recipe, through the ``zoo`` CLI.

Each run is what a user types, in this process: ``zoo fit --config configs/detection/<name>.yaml``
then ``zoo validate`` on the best checkpoint. Reports held-out ``val/map_50`` and ``val/map`` (and
``val/segm_map`` for instance segmenters) with the wall time of the fit, per run and as a table
of means over seeds, for the note of the issue and the README.

    python -m tests.benchmarks.detection_digitscenes [--configs tinyssd fasterrcnn ...] [--seeds 0]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from typing import Literal

from tasks.cli import ZooCLI

# The families' DigitScenes recipes (configs/detection/<name>_digitscenes.yaml).
CONFIGS = ["tinyssd", "ssd", "fasterrcnn", "yolo"]


def fit_and_validate(
    config: str,
    seed: int,
    root: str,
    extra: list[str],
    metrics: tuple[str, ...] = ("map_50", "map", "segm_map"),
    stage: Literal["validate", "test"] = "validate",
) -> dict[str, float]:
    """``zoo fit`` then ``zoo validate`` (or ``zoo test``: ``stage``) on the best checkpoint: the
    fit's wall seconds, and the scores ``val/<metric>`` (``test/<metric>``) of ``metrics`` that
    the run logs."""
    args = [
        f"--config={config}",
        f"--seed_everything={seed}",
        f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.callbacks=[]",
        *extra,
    ]
    cli = ZooCLI(args=args, run=False)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - start
    score = cli.trainer.validate if stage == "validate" else cli.trainer.test
    (scores,) = score(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
    prefix = "val" if stage == "validate" else "test"
    return {"seconds": seconds} | {
        m: scores[f"{prefix}/{m}"] for m in metrics if f"{prefix}/{m}" in scores
    }


def run_recipes(
    description: str,
    config_path: str,
    configs: list[str],
    seeds: list[int],
    metrics: tuple[str, ...],
) -> dict[str, list[dict[str, float]]]:
    """Parse ``--configs``, ``--seeds``, ``--root`` and fit overrides from the command line, run
    :func:`fit_and_validate` for every recipe (``config_path.format(name)``) and seed, print each
    run, and return the runs of each recipe."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--configs", nargs="+", default=configs)
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds)
    parser.add_argument("--root", default=None, help="run folders (default: a temporary one)")
    parser.add_argument(
        "overrides", nargs="*", help="more zoo fit arguments, after --, e.g. --trainer.max_epochs=5"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    root = args.root or tempfile.mkdtemp(prefix="digitscenes_")
    results: dict[str, list[dict[str, float]]] = {}
    for name in args.configs:
        for seed in args.seeds:
            run = f"{root}/{name}_seed{seed}"
            result = fit_and_validate(config_path.format(name), seed, run, args.overrides, metrics)
            results.setdefault(name, []).append(result)
            print(f"{name} seed {seed}: " + "  ".join(f"{k} {v:.4f}" for k, v in result.items()),
                  flush=True)  # fmt: skip
    return results


def main() -> None:
    results = run_recipes(
        __doc__.splitlines()[0],
        "configs/detection/{}_digitscenes.yaml",
        CONFIGS,
        [0],
        ("map_50", "map", "segm_map"),
    )
    print("\n| recipe | val/map_50 | val/map | fit (s) |\n| --- | ---: | ---: | ---: |")
    for name, runs in results.items():
        mean = {k: statistics.fmean(r[k] for r in runs) for k in ("map_50", "map", "seconds")}
        print(f"| {name} | {mean['map_50']:.3f} | {mean['map']:.3f} | {mean['seconds']:.0f} |")


if __name__ == "__main__":
    main()
