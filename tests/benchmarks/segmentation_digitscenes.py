"""Segmenters on DigitScenes, through the ``zoo`` CLI: ``zoo fit --config
configs/segmentation/<name>.yaml`` then ``zoo validate`` on the best checkpoint, per seed. Reports
held-out ``val/miou`` and ``val/pixel_acc`` with the fit's wall time, per run and as means, for the
note of the issue and the README.

    python -m tests.benchmarks.segmentation_digitscenes [--configs fcn_digitscenes ...] [--seeds 0 1]
        [-- --model.init_args.model=fcn_resnet18 ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings

from tests.benchmarks.detection_digitscenes import fit_and_validate

CONFIGS = ["fcn_digitscenes", "deeplabv3_digitscenes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--root", default=None, help="run folders (default: a temporary one)")
    parser.add_argument("overrides", nargs="*", help="more zoo fit arguments, after --")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    root = args.root or tempfile.mkdtemp(prefix="segmentation_digitscenes_")
    results: dict[str, list[dict[str, float]]] = {}
    for name in args.configs:
        config = f"configs/segmentation/{name}.yaml"
        for seed in args.seeds:
            run = f"{root}/{name}_seed{seed}"
            result = fit_and_validate(config, seed, run, args.overrides, ("miou", "pixel_acc"))
            results.setdefault(name, []).append(result)
            print(f"{name} seed {seed}: " + "  ".join(f"{k} {v:.4f}" for k, v in result.items()),
                  flush=True)  # fmt: skip
    print(
        "\n| recipe | seeds | val/miou | val/pixel_acc | fit (s) |\n| --- | --- | ---: | ---: | ---: |"
    )
    for name, runs in results.items():
        mean = {k: statistics.fmean(r[k] for r in runs) for k in ("miou", "pixel_acc", "seconds")}
        mious = " / ".join(f"{r['miou']:.3f}" for r in runs)
        print(f"| {name} | {len(runs)} | {mean['miou']:.3f} ({mious}) | {mean['pixel_acc']:.3f} "
              f"| {mean['seconds']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
