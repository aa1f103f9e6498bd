"""The ``zoo`` command: LightningCLI for ``fit | validate | test | predict``, plus the zoo's own
``zoo models`` (the registry as a table), ``zoo kfold`` (K-fold cross-validation, Section 3.6),
``zoo recipes`` (the installed recipes, which ``--config`` takes by name:
:mod:`tasks.recipes`), ``zoo export`` (a checkpoint as safetensors, ONNX or ``torch.export``,
metadata included), ``zoo scenes`` (the embedded DigitScenes data written as COCO and VOC trees) and ``zoo style``
(neural style transfer, Section 14.12: :func:`tasks.style.run_style`).

Model and data are chosen in subclass mode (``class_path`` / ``init_args``); the data module's
``num_classes``, ``in_channels`` and ``classes`` are linked into the model, so a recipe states
them once. Every run also gets (see :mod:`tasks.callbacks`): a ``checkpoint`` group
(``ModelCheckpoint`` keeping ``best.ckpt`` and ``last.ckpt``, written atomically, so that
``zoo fit ... --ckpt_path last`` resumes), a ``guard`` group (a stop at the first non-finite
loss), a ``speedup`` group (channels-last, ``torch.compile``) and, with a logger, a
``LearningRateMonitor``; its progress bar is redrawn ten times a second rather than after every
batch (:class:`~tasks.callbacks.ProgressBar`). A logger whose ``save_dir`` is ``"."`` writes under
``trainer.default_root_dir``, as Lightning's default TensorBoard logger does.

Bad input ends in one message that names the value and the fix: a class that cannot be built
(an unknown model name, a missing weights file, an optimizer argument out of range) ends
``zoo fit: <the class's own message>``; an unknown import path lists what exists
(:mod:`tasks._parser`), an unknown config file or recipe name the near ones; ``--ckpt_path``
keeps the command line's model arguments and refuses a checkpoint whose weights do not fit the
network the config builds.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

import zoo
from tasks._parser import ZooArgumentParser, locate, model_flags, unwrapped
from tasks._quiet import quiet_lightning
from tasks.callbacks import (
    AtomicCheckpointIO,
    NonFiniteLoss,
    NonFiniteLossGuard,
    ProgressBar,
    SpeedUp,
)
from tasks.recipes import print_recipes, resolve_configs
from tasks.style import run_style
from zoo.export import FORMATS, MIN_ONNX_OPSET, export_checkpoint
from zoo.weights import read_torch_file

__all__ = ["ZooCLI", "main"]

# (data attribute, model argument) pairs linked at instantiation, when both sides have them.
LINKS = (("num_classes", "num_classes"), ("in_channels", "in_channels"), ("classes", "class_names"))


# What a class's __init__ raises for bad input (a value, a missing or unreadable file, an
# optional package not installed, a keyword the builder does not take): the command ends with
# its message alone. Anything else is a bug and keeps its traceback.
_INPUT_ERRORS = (ValueError, OSError, ImportError, TypeError)


def _checkpoint_dir(default_root_dir: str | None) -> str | None:
    return None if default_root_dir is None else f"{default_root_dir}/checkpoints"


def _lightning_names(ckpt_path: str) -> bool:
    """Whether ``--ckpt_path`` is a name Lightning resolves itself or a remote URL."""
    return (
        ckpt_path in ("last", "best", "hpc")
        or ckpt_path.startswith("registry")
        or ("://" in ckpt_path)
    )


def _describe(hparams: dict[str, Any]) -> str:
    """``ImageClassifier(model='lenet', num_classes=10, in_channels=1)`` of hyper-parameters."""
    task = str(hparams.get("_class_path", "")).rsplit(".", 1)[-1] or "a task"
    keys = ("model", "num_classes", "in_channels", "model_kwargs")
    return f"{task}(" + ", ".join(f"{k}={hparams[k]!r}" for k in keys if hparams.get(k)) + ")"


def _misfits(
    held: dict[str, torch.Tensor], model: dict[str, torch.Tensor], strict: bool = True
) -> list[str]:
    """How a checkpoint's state dict and a network's differ: shapes, then (``strict``, as
    Lightning loads) missing and extra keys."""
    lines = [
        f"{key}: {tuple(held[key].shape)} in the checkpoint, {tuple(value.shape)} here"
        for key, value in model.items()
        if key in held and held[key].shape != value.shape
    ]
    missing = [key for key in model if key not in held]
    unexpected = [key for key in held if key not in model]
    if strict and missing:
        lines.append(f"{len(missing)} tensors the checkpoint lacks ({missing[0]}, ...)")
    if strict and unexpected:
        lines.append(f"{len(unexpected)} tensors the network lacks ({unexpected[0]}, ...)")
    return lines


class ZooCLI(LightningCLI):
    """LightningCLI with the data -> model links of :data:`LINKS` and the zoo's callbacks."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        # Tasks take their optimizer and scheduler as typed callables (OptimizerCallable).
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_class", ZooArgumentParser)
        quiet_lightning()
        super().__init__(LightningModule, LightningDataModule, *args, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        argv = sys.argv[1:] if args is None else args
        if not isinstance(argv, (list, tuple)):  # settings given as a dict
            super().parse_arguments(parser, args)
            self._model_flags = []
            return
        try:
            argv = resolve_configs(argv)  # recipe names -> the installed files
        except ValueError as error:
            parser.error(str(error))
        if args is None:  # the command line, read here (Lightning warns when given both)
            self.config = parser.parse_args(argv)
        else:
            super().parse_arguments(parser, argv)
        self._model_flags = model_flags(argv)

    def _parse_ckpt_path(self) -> None:
        # Lightning parses the checkpoint's hyper-parameters over the config, so the network
        # is built as it was trained, but so is every other model argument: a command-line
        # override (a score threshold, label smoothing) would be dropped without a word. Those
        # are put back here; one that changes the weights' shapes is refused after building
        # (see _check_checkpoint_fits), and a checkpoint of another task before.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and not Path(ckpt_path).exists() and not _lightning_names(ckpt_path):
            self.parser.error(
                f"--ckpt_path: no checkpoint at {ckpt_path}; training writes them under "
                "<trainer.default_root_dir>/checkpoints/ (best.ckpt, last.ckpt), and "
                "--ckpt_path last resumes the run's latest"
            )
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        asked = copy.deepcopy(self.config[subcommand].model)
        try:
            checkpoint = read_torch_file(ckpt_path)
        except (ValueError, OSError) as error:  # empty, damaged, foreign or pickled code
            self.parser.error(f"--ckpt_path: {error}")
        # Kept until the model is built, to compare shapes: the weights and hyper-parameters
        # only (an optimizer's state can be twice the weights; Lightning reads the file again).
        self._checkpoint = {
            key: checkpoint.get(key, {}) for key in ("state_dict", "hyper_parameters")
        }
        del checkpoint
        hparams = self._checkpoint["hyper_parameters"]
        trained_class = hparams.get("_class_path")
        if trained_class and asked.get("class_path") and trained_class != asked.class_path:
            self.parser.error(
                f"--ckpt_path {ckpt_path} holds {_describe(hparams)}, but the config asks for a "
                f"{asked.class_path}: give the config it was trained with (the config.yaml next "
                "to its logs)"
            )
        super()._parse_ckpt_path()
        model = self.config[subcommand].model
        applied = []
        for keys in self._model_flags:
            if not keys:
                self.config[subcommand].model = model = copy.deepcopy(asked)
                applied.append("--model")
                continue
            source, target = locate(asked, keys), locate(model, keys)
            if source is None:
                continue
            value = source[0][source[1]]
            if target is None:  # e.g. a model_kwargs key the checkpoint's dict does not have
                target = locate(model, keys[:-1])
                parent = target[0][target[1]] if target is not None else None
                if not isinstance(parent, dict):
                    continue
                target = (parent, keys[-1])
            held = target[0].get(target[1])
            if isinstance(held, dict) and isinstance(value, dict):
                value = held | value  # a dict on the command line adds to the trained one
            if held != value:
                target[0][target[1]] = copy.deepcopy(value)
                applied.append(f"{'.'.join(keys)}={value!r} (trained with {held!r})")
        self._ckpt_overrides = (ckpt_path, hparams, applied)
        if applied:
            rank_zero_info(
                f"--ckpt_path {ckpt_path}: the model's arguments come from the checkpoint, "
                f"except what the command line sets: {', '.join(applied)}"
            )

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

    def instantiate_classes(self) -> None:
        """Lightning's, raising what a class's ``__init__`` raised (not jsonargparse's wrapper
        around it), marked so that :func:`main` ends with its message alone; then the checks
        that need the built objects: the optimizer's arguments and ``--ckpt_path``'s fit."""
        try:
            super().instantiate_classes()
            self._check_optimizer()
            self._check_checkpoint_fits()
        except Exception as wrapped:
            error = unwrapped(wrapped)
        else:
            return
        if not isinstance(error, _INPUT_ERRORS):  # a bug: its traceback is what helps
            raise error
        ckpt_path, hparams, applied = getattr(self, "_ckpt_overrides", (None, {}, []))
        if applied and getattr(self, "model", None) is None:  # checkpoint's + command line's
            cause, error = (
                error,
                ValueError(
                    f"--ckpt_path {ckpt_path} holds {_describe(hparams)}; with the command line's "
                    f"{', '.join(applied)} the model cannot be built ({error}). Arguments that "
                    "change the network need a new fit: --model.init_args.weights "
                    f"{ckpt_path} starts one from its weights (zoo.adapt fits the head and the input "
                    "channels), without --ckpt_path"
                ),
            )
            error.__cause__ = cause
        error.zoo_instantiating = True  # type: ignore[attr-defined]
        raise error  # (outside the except block: not "during handling of" its wrapper)

    def _check_optimizer(self) -> None:
        # LightningCLI builds the optimizer only when training starts, after the data is
        # loaded; building it here once (on the parameters, cheap) reports a bad argument now.
        optimizer = getattr(self.model, "optimizer", None)
        if not (callable(optimizer) and hasattr(self.model, "parameter_groups")):
            return
        try:
            optimizer(self.model.parameter_groups())
        except (ValueError, TypeError) as error:
            spec = self._get(self.config, "model").get("init_args", {}).get("optimizer")
            name = getattr(spec, "class_path", None) or getattr(optimizer, "__name__", "")
            raise ValueError(
                f"model.init_args.optimizer {name}: {error}. Learning rates, weight decays and "
                "epsilons must be >= 0 and betas in [0, 1): fix "
                "--model.init_args.optimizer.init_args (e.g. lr 0.001)"
            ) from error

    def _check_checkpoint_fits(self) -> None:
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        checkpoint, self._checkpoint = getattr(self, "_checkpoint", None), None  # (read once)
        if checkpoint is None:
            return
        held = checkpoint.get("state_dict", {})
        misfits = _misfits(held, self.model.state_dict(), self.model.strict_loading)
        if not misfits:
            return
        hparams = dict(checkpoint.get("hyper_parameters", {}))
        asked = dict(getattr(self.model, "hparams", {}))
        asked["_class_path"] = hparams.get("_class_path")
        raise ValueError(
            f"--ckpt_path {ckpt_path} holds weights for {_describe(hparams)}, but the config "
            f"builds {_describe(asked)} ({'; '.join(misfits[:3])}). To evaluate or resume it, "
            "give the settings it was trained with (the config.yaml next to its logs) and data "
            "with its classes; to train on other classes or channels, start a new fit from its "
            f"weights instead: --model.init_args.weights {ckpt_path} (zoo.adapt fits the head "
            "and the input channels), without --ckpt_path"
        )

    def instantiate_trainer(self, **kwargs) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        # Lightning's writer stages checkpoints in the system's temporary folder (see
        # AtomicCheckpointIO); a CheckpointIO plugin the config chose is kept.
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        # Lightning's default bar redraws after every batch; a bar the config chose is kept.
        for position, callback in enumerate(trainer.callbacks):
            if type(callback) is TQDMProgressBar:
                trainer.callbacks[position] = ProgressBar()
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


@functools.cache  # (a few seconds for the whole registry, asked by every listing)
def _flops(name: str) -> str:
    """FLOPs of one forward pass at the registered input size, counted from shapes alone (on the
    meta device: no weights, no arithmetic). A detector's pass depends on the values (the boxes
    NMS keeps), so it has no such count."""
    info = zoo.model_info(name)
    if info.task == "detection":
        return "-"
    with torch.device("meta"):
        model = zoo.create_model(name)
    flops = zoo.count_flops(model, info.input_size)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return str(flops)


def models_table(
    pattern: str = "*", task: str | None = None, markdown: bool = False, pretrained: bool = False
) -> str:
    """The registry as a text table (``zoo models``) or a Markdown one (the README's); the
    ``weights`` column says which models ``weights="torchvision"`` serves, ``FLOPs`` what one
    forward pass costs at the ``input`` size (:func:`_flops`)."""
    header = ("name", "task", "family", "input", "params", "FLOPs", "weights")
    rows = [header]
    for name in zoo.list_models(pattern, task=task, pretrained=pretrained):
        info = zoo.model_info(name)
        size = "x".join(map(str, info.input_size))
        weights = "torchvision" if info.torchvision_weights else ""
        params = f"{info.num_params:,}"
        rows.append((name, info.task, info.family, size, params, _flops(name), weights))
    if markdown:  # with the course section each builder's docstring cites
        lines = [
            "| name | course | task | family | input | params | FLOPs | weights |",
            "|" + " --- |" * 5 + " ---: | ---: | --- |",
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
        cells = [c.rjust(w) if j in (4, 5) else c.ljust(w) for j, (c, w) in pairs]
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


def _bad_data(error: BaseException) -> bool:
    """Whether a data module raised ``error`` about its files or arguments (missing IDX files, a
    COCO root that is no folder, a corrupt image): raised in ``datamodules`` itself, so the
    message names the file and the fix."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    module = frame.tb_frame.f_globals.get("__name__", "") if frame is not None else ""
    return isinstance(error, (OSError, ValueError)) and module.startswith("datamodules.")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``zoo`` console script (``argv`` for calls from Python and tests)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["models"]:
        print_models(args[1:])
    elif args[:1] == ["recipes"]:
        print_recipes(args[1:])
    elif args[:1] == ["kfold"]:
        run_kfold(args[1:])
    elif args[:1] == ["export"]:
        run_export(args[1:])
    elif args[:1] == ["scenes"]:
        write_scenes(args[1:])
    elif args[:1] == ["style"]:
        run_style(args[1:])
    else:
        try:
            ZooCLI(args=argv)  # None: LightningCLI reads sys.argv itself
        except Exception as error:
            # A class that could not be built, data a data module cannot read, or a guarded
            # stop: the message says what and how to fix it, so it is all the user sees
            # (`ZooCLI(...)` in Python keeps the traceback). Other failures are bugs, with
            # their traceback.
            expected = getattr(error, "zoo_instantiating", False) or _bad_data(error)
            if not (expected or isinstance(error, NonFiniteLoss)):
                raise
            readable = isinstance(error, (ValueError, OSError, RuntimeError, ImportError))
            message = str(error) if readable else f"{type(error).__name__}: {error}"
            subcommand = next((a for a in args if a in ZooCLI.subcommands()), "")
            raise SystemExit(f"zoo {subcommand}: {message}".replace("zoo : ", "zoo: ")) from error


if __name__ == "__main__":
    main()
