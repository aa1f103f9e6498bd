"""The ``zoo`` command: LightningCLI for ``fit | validate | test | predict``, plus the zoo's own
``zoo models`` (the registry as a table), ``zoo kfold`` (K-fold cross-validation, Section 3.6),
``zoo export`` (a checkpoint as safetensors, ONNX or ``torch.export``, metadata included),
``zoo scenes`` (the embedded DigitScenes data written as COCO and VOC trees) and ``zoo style``
(neural style transfer, Section 14.12: :func:`tasks.style.run_style`).

Model and data are chosen in subclass mode (``class_path`` / ``init_args``); the data module's
``num_classes``, ``in_channels`` and ``classes`` are linked into the model, so a recipe states
them once. Every run also gets (see :mod:`tasks.callbacks`): a ``checkpoint`` group
(``ModelCheckpoint`` keeping ``best.ckpt`` and ``last.ckpt``, written atomically, so that
``zoo fit ... --ckpt_path last`` resumes), a ``guard`` group (a stop at the first non-finite
loss), a ``speedup`` group (channels-last, ``torch.compile``) and, with a logger, a
``LearningRateMonitor``. A logger whose ``save_dir`` is ``"."`` writes under
``trainer.default_root_dir``, as Lightning's default TensorBoard logger does.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

import zoo
from tasks.callbacks import AtomicCheckpointIO, NonFiniteLossGuard, SpeedUp
from tasks.style import run_style
from zoo.export import FORMATS, MIN_ONNX_OPSET, export_checkpoint

__all__ = ["ZooCLI", "main"]

# (data attribute, model argument) pairs linked at instantiation, when both sides have them.
LINKS = (("num_classes", "num_classes"), ("in_channels", "in_channels"), ("classes", "class_names"))


def _checkpoint_dir(default_root_dir: str | None) -> str | None:
    return None if default_root_dir is None else f"{default_root_dir}/checkpoints"


class ZooCLI(LightningCLI):
    """LightningCLI with the data -> model links of :data:`LINKS` and the zoo's callbacks."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        # Tasks take their optimizer and scheduler as typed callables (OptimizerCallable).
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(LightningModule, LightningDataModule, *args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        # Every run keeps its best checkpoint at <default_root_dir>/checkpoints/best.ckpt, so
        # `zoo test --ckpt_path` and `zoo.load` find it without a version number, and the
        # latest one as last.ckpt, which `--ckpt_path last` resumes from.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.filename": "best",
                "checkpoint.enable_version_counter": False,
                "checkpoint.save_last": True,
            }
        )
        # TensorBoard, as Lightning's default, but as a list the logger presets append to
        # (`logger+:` in configs/trainer/csv.yaml and wandb.yaml).
        tensorboard = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger"}
        parser.set_defaults({"trainer.logger": [tensorboard | {"init_args": {"save_dir": "."}}]})
        parser.add_lightning_class_args(NonFiniteLossGuard, "guard")
        parser.add_lightning_class_args(SpeedUp, "speedup")
        parser.link_arguments(
            "trainer.default_root_dir", "checkpoint.dirpath", compute_fn=_checkpoint_dir
        )
        for source, target in LINKS:
            parser.link_arguments(
                f"data.{source}", f"model.init_args.{target}", apply_on="instantiate"
            )

    def before_instantiate_classes(self) -> None:
        # A logger's save_dir "." (WandbLogger's default; the presets' choice) is the run's
        # folder, trainer.default_root_dir, where Lightning's default TensorBoard logger writes.
        trainer = self._get(self.config, "trainer")
        root = trainer.get("default_root_dir") or os.getcwd()
        loggers = trainer.get("logger")
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init_args = getattr(logger, "init_args", None)
            if init_args is not None and init_args.get("save_dir", 0) in (None, "."):
                init_args.save_dir = root

    def instantiate_trainer(self, **kwargs) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        # Lightning's writer stages checkpoints in the system's temporary folder (see
        # AtomicCheckpointIO); a CheckpointIO plugin the config chose is kept.
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.loggers and not any(
            isinstance(callback, LearningRateMonitor) for callback in trainer.callbacks
        ):
            trainer.callbacks.append(LearningRateMonitor())
        return trainer

    def before_fit(self) -> None:
        ckpt_path = self.config.fit.get("ckpt_path")
        callback = self.trainer.checkpoint_callback
        if ckpt_path == "last" and isinstance(callback, ModelCheckpoint):
            if not callback._find_last_checkpoints(self.trainer):
                rank_zero_warn(
                    f"--ckpt_path last: no last checkpoint in {callback.dirpath} to resume from, "
                    "so training starts from the beginning (what the first run of a job that is "
                    "always started with --ckpt_path last should do). To resume another run, "
                    "give its --trainer.default_root_dir or the .ckpt file itself"
                )

    def _finish_wandb_runs(self) -> None:
        # A WandbLogger leaves its run open for more calls in the same process; the command
        # ends here, so close it (else wandb records the run as abandoned at exit).
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger.experiment.finish()

    after_fit = after_validate = after_test = after_predict = _finish_wandb_runs


def models_table(
    pattern: str = "*", task: str | None = None, markdown: bool = False, pretrained: bool = False
) -> str:
    """The registry as a text table (``zoo models``) or a Markdown one (the README's); the
    ``weights`` column says which models ``weights="torchvision"`` serves."""
    header = ("name", "task", "family", "input", "params", "weights")
    rows = [header]
    for name in zoo.list_models(pattern, task=task, pretrained=pretrained):
        info = zoo.model_info(name)
        size = "x".join(map(str, info.input_size))
        weights = "torchvision" if info.torchvision_weights else ""
        rows.append((name, info.task, info.family, size, f"{info.num_params:,}", weights))
    if markdown:  # with the course section each builder's docstring cites
        lines = [
            "| name | course | task | family | input | params | weights |",
            "|" + " --- |" * 5 + " ---: | --- |",
        ]
        for name, *rest in rows[1:]:
            cited = re.search(
                r"Section (\d+(?:\.\d+)*)", zoo.model_info(name).builder.__doc__ or ""
            )
            section = f"§{cited.group(1)}" if cited else ""
            lines.append("| " + " | ".join((f"`{name}`", section, *rest)) + " |")
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for i, row in enumerate(rows):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.rjust(w) if j == 4 else c.ljust(w) for j, (c, w) in pairs]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(f"{len(rows) - 1} models")
    return "\n".join(lines)


def print_models(argv: list[str]) -> None:
    """``zoo models [PATTERN] [--task TASK] [--pretrained] [--markdown]``: the registry."""
    parser = argparse.ArgumentParser(prog="zoo models", description=print_models.__doc__)
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style name filter")
    parser.add_argument("--task", default=None, help="classification, regression, ...")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "--pretrained", action="store_true", help="only models with torchvision weights"
    )
    args = parser.parse_args(argv)
    print(models_table(args.pattern, args.task, args.markdown, args.pretrained))


def run_kfold(argv: list[str]) -> list[float]:
    """``zoo kfold --config RECIPE [--metric val/acc] [overrides]``: fit once per fold of the data
    module's ``num_folds`` and report the mean and standard deviation of the validation metric."""
    parser = argparse.ArgumentParser(prog="zoo kfold", add_help=False)
    parser.add_argument("--metric", default="val/acc")
    known, rest = parser.parse_known_args(argv)
    scores: list[float] = []
    fold, num_folds = 0, None
    while num_folds is None or fold < num_folds:
        cli = ZooCLI(args=[*rest, f"--data.init_args.fold={fold}"], run=False)
        num_folds = getattr(cli.datamodule, "num_folds", 0)
        if num_folds < 2:
            raise SystemExit(
                "zoo kfold needs a data module with num_folds >= 2: add --data.init_args.num_folds 5"
            )
        for callback in cli.trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath:
                callback.dirpath = f"{callback.dirpath}/fold{fold}"  # keep every fold's best
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        ckpt = "best" if cli.trainer.checkpoint_callback is not None else None
        results = cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt)
        if known.metric not in results[0]:
            raise SystemExit(
                f"metric {known.metric!r} not logged; choose one of {sorted(results[0])}"
            )
        scores.append(float(results[0][known.metric]))
        fold += 1
    std = statistics.stdev(scores) if len(scores) > 1 else 0.0
    print(f"{num_folds}-fold {known.metric}: " + ", ".join(f"{s:.4f}" for s in scores))
    print(f"{known.metric}: mean {statistics.fmean(scores):.4f} std {std:.4f}")
    return scores


def run_export(argv: list[str]) -> Path:
    """``zoo export CKPT --format safetensors|onnx|pt2 [--out PATH] [--input-size C H W |
    --image-size N] [--opset N]``: the trained model for use without the zoo, with its class names
    and preprocessing in the file."""
    parser = argparse.ArgumentParser(prog="zoo export", description=run_export.__doc__)
    parser.add_argument("checkpoint", help="a .ckpt written by a zoo task (zoo fit)")
    parser.add_argument("--format", required=True, choices=list(FORMATS))
    parser.add_argument("--out", default=None, help="default: CKPT with the format's extension")
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--input-size", nargs=3, type=int, metavar=("C", "H", "W"), help="traced input size"
    )
    size.add_argument("--image-size", type=int, metavar="N", help="traced input N x N")
    parser.add_argument("--opset", type=int, help=f"ONNX opset, {MIN_ONNX_OPSET} or newer")
    args = parser.parse_args(argv)
    try:
        out = export_checkpoint(
            args.checkpoint,
            args.format,
            args.out,
            input_size=args.input_size,
            image_size=args.image_size,
            opset=args.opset,
        )
    except (FileNotFoundError, ValueError, ImportError) as error:
        raise SystemExit(f"zoo export: {error}") from error
    load, metadata = _load_hints(args.format, out)
    print(f"wrote {out}")
    print(f"load it with: {load}")
    print(f"class names and preprocessing: {metadata}")
    sidecar = out.with_name(out.name + ".data")
    if args.format == "onnx" and sidecar.is_file():
        print(f"its weights are in {sidecar} (ONNX's 2 GB limit): keep the two files together")
    return out


def _load_hints(format: str, path: Path) -> tuple[str, str]:
    """Python that runs an exported file, and Python that reads its ``"zoo"`` record."""
    if format == "safetensors":
        return (
            f"zoo.load('{path}')",
            f"json.loads(safetensors.safe_open('{path}', 'pt').metadata()['zoo'])",
        )
    if format == "onnx":
        return (
            f"onnxruntime.InferenceSession('{path}').run(['logits'], {{'images': x}})"
            "  # x: float32 [N, C, H, W] numpy",
            f"json.loads(onnxruntime.InferenceSession('{path}')"
            ".get_modelmeta().custom_metadata_map['zoo'])",
        )
    return (
        f"torch.export.load('{path}').module()(x)",
        f"torch.export.load('{path}', extra_files=(files := {{'zoo.json': ''}})); "
        "json.loads(files['zoo.json'])",
    )


def write_scenes(argv: list[str]) -> Path:
    """``zoo scenes --out DIR [--num-train N] [--num-val N] [--image-size N] [--seed N]``: write
    DigitScenes (scikit-learn's digits composed into scenes) as a COCO and a VOCdevkit tree."""
    from datamodules.scenes import write_digit_scenes  # the data room, needed by this command only

    parser = argparse.ArgumentParser(prog="zoo scenes", description=write_scenes.__doc__)
    parser.add_argument("--out", required=True, help="folder to write (created)")
    parser.add_argument("--num-train", type=int, default=4000)
    parser.add_argument("--num-val", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        root = write_digit_scenes(
            args.out,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=args.image_size,
            seed=args.seed,
        )
    except ValueError as error:
        raise SystemExit(f"zoo scenes: {error}") from error
    print(f"wrote {root}/coco (COCO: images + annotations/instances_{{train,val}}.json)")
    print(f"wrote {root}/VOCdevkit/VOC2012 (VOC: Annotations, JPEGImages, SegmentationClass)")
    return root


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``zoo`` console script (``argv`` for calls from Python and tests)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["models"]:
        print_models(args[1:])
    elif args[:1] == ["kfold"]:
        run_kfold(args[1:])
    elif args[:1] == ["export"]:
        run_export(args[1:])
    elif args[:1] == ["scenes"]:
        write_scenes(args[1:])
    elif args[:1] == ["style"]:
        run_style(args[1:])
    else:
        ZooCLI(args=argv)  # None: LightningCLI reads sys.argv itself


if __name__ == "__main__":
    main()
