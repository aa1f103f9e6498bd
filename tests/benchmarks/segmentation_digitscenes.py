"""Segmenters on DigitScenes, through the ``zoo`` CLI: ``zoo fit --config
configs/segmentation/<name>.yaml`` then ``zoo validate`` on the best checkpoint, per seed. Reports
held-out ``val/miou`` and ``val/pixel_acc`` with the fit's wall time, per run and as means, for the
note of the issue and the README.

    python -m tests.benchmarks.segmentation_digitscenes [--configs fcn_digitscenes ...] [--seeds 0 1]
        [-- --model.init_args.model=fcn_resnet18 ...]
"""

from __future__ import annotations

import statistics

from tests.benchmarks.detection_digitscenes import run_recipes

CONFIGS = ["fcn_digitscenes", "deeplabv3_digitscenes"]
FCN_CONFIG = "configs/segmentation/fcn_digitscenes.yaml"
# The zoo's FCN recipe (the config) and the course's (Section 14.11) as overrides of FCN_CONFIG,
# which tests.benchmarks.quality trains at equal epochs: the book's stride-32 FCN (the config's
# is at stride 8) and its training, plain SGD at lr 0.001 with weight decay 1e-3, no schedule,
# batches of 32 (the config: AdamW at 0.002, cosine, 16). Both train from scratch on whole
# scenes: the course starts from ImageNet weights (its small rate is a fine-tuning rate) and
# crops VOC's photos, neither of which a 64-pixel scene offline allows or needs.
FCN_RECIPES = {
    "zoo": [],
    "course": [
        "--model.init_args.model=fcn_resnet18",
        "--model.init_args.optimizer=torch.optim.SGD",
        "--model.init_args.optimizer.init_args.lr=0.001",
        "--model.init_args.optimizer.init_args.weight_decay=0.001",
        "--model.init_args.scheduler=null",
        "--data.init_args.batch_size=32",
    ],
}


def main() -> None:
    results = run_recipes(
        __doc__.splitlines()[0],
        "configs/segmentation/{}.yaml",
        CONFIGS,
        [0, 1],
        ("miou", "pixel_acc"),
    )
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
