"""The ``zoo`` command on bad input: one message that names the value and the fix, never a
jsonargparse wrapper or a silently dropped setting. Unbuildable classes, ``--ckpt_path`` with
overrides, ``null`` on the command line, Lightning's chatter, bad config values, an overflowing
loss under bf16-mixed, and the mAP metric's state between epochs."""

from __future__ import annotations

import logging
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

import tasks.cli
from tasks import ObjectDetector
from tasks.callbacks import NonFiniteLoss
from tasks.cli import ZooCLI, main
from tests._image_files import write_digit_classes
from tests._trainers import cpu_trainer

CONFIGS = Path(__file__).parents[1] / "configs"
LENET = str(CONFIGS / "classification" / "lenet_digits.yaml")
SMOKE = str(CONFIGS / "trainer" / "smoke.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
# A short evaluation: validate / fit --ckpt_path read one batch.
SHORT = [*QUIET, "--trainer.logger=false", "--trainer.limit_val_batches=1"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")


@pytest.fixture(scope="module")
def lenet_checkpoint(tmp_path_factory) -> Path:
    """best.ckpt of the quickstart recipe after two training steps (10 classes, 1 channel)."""
    root = tmp_path_factory.mktemp("lenet")
    steps = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(["fit", "--config", LENET, *SHORT, *steps, f"--trainer.default_root_dir={root}"])
    return root / "checkpoints" / "best.ckpt"


TINYSSD = str(CONFIGS / "detection" / "tinyssd_digitscenes.yaml")


@pytest.fixture(scope="module")
def tinyssd_run(tmp_path_factory) -> tuple[Path, list[str]]:
    """best.ckpt of the TinySSD recipe after one step on 8 scenes, and its data flags."""
    root = tmp_path_factory.mktemp("tinyssd")
    data = ["--data.num_train=8", "--data.num_val=4", "--data.batch_size=4",
            f"--data.root={root / 'scenes'}"]  # fmt: skip
    steps = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(
            [
                "fit",
                "--config",
                TINYSSD,
                *data,
                *SHORT,
                *steps,
                f"--trainer.default_root_dir={root}",
            ]
        )
    return root / "checkpoints" / "best.ckpt", data


def _exit_message(argv: list[str]) -> str:
    """What ``zoo ARGV`` ends with, as the shell shows it (the SystemExit's text)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert isinstance(exit_info.value.code, str), "a readable message, not a bare exit status"
    return exit_info.value.code


# 1. Errors raised while the model or the data is built.


def test_unknown_model_raises_the_registry_error_not_the_union_wrapper():
    args = ["--config", LENET, "--trainer.logger=false", "--model.init_args.model", "resnet81"]
    with pytest.raises(ValueError) as error_info:
        ZooCLI(args=args, run=False)
    message = str(error_info.value)
    assert message.startswith("unknown model 'resnet81'. Did you mean resnet18")
    assert "`zoo models` lists" in message and "Union" not in message and "Namespace" not in message


def test_unknown_model_ends_the_command_with_one_line():
    message = _exit_message(
        ["fit", "--config", LENET, "--config", SMOKE, "--model.model", "resnet81"]
    )
    assert message.startswith("zoo fit: unknown model 'resnet81'. Did you mean resnet18")
    assert "\n" not in message and "Union" not in message


def test_missing_weights_file_is_named():
    args = ["fit", "--config", LENET, "--config", SMOKE]
    with pytest.raises(FileNotFoundError, match="no weights file at /nonexistent.pth"):
        ZooCLI(args=[*args, "--model.init_args.weights", "/nonexistent.pth"])
    message = _exit_message([*args, "--model.init_args.weights", "/nonexistent.pth"])
    assert message.startswith("zoo fit: no weights file at /nonexistent.pth; weights must be")


def test_datamodule_error_reaches_the_user_as_raised():
    message = _exit_message(["fit", "--config", LENET, "--data.init_args.val_fraction", "2"])
    assert message.startswith("zoo fit: Digits: val_fraction=2.0 must be in [0, 1)")


def test_missing_data_files_end_the_command_with_their_message(tmp_path, monkeypatch):
    """A data module's own error while it prepares its data (here, Fashion-MNIST's IDX files
    are not in an empty data folder) ends in its message, as a bad argument does."""
    monkeypatch.setenv("ZOO_DATA", str(tmp_path))
    recipe = str(CONFIGS / "classification" / "lenet_fashion_mnist.yaml")
    message = _exit_message(["fit", "--config", recipe])
    assert message.startswith("zoo fit: FashionMNIST: missing train-images-idx3-ubyte, ")
    assert f"searched {tmp_path} and {tmp_path}/FashionMNIST/raw" in message


def test_errors_while_training_keep_their_traceback(monkeypatch):
    """Only what is raised while building is shortened: a bug in a training step is a bug."""

    def broken_step(self, batch, batch_idx):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(tasks.ImageClassifier, "training_step", broken_step)
    with pytest.raises(ZeroDivisionError, match="a bug"):
        main(["fit", "--config", LENET, "--config", SMOKE])


def test_a_bug_while_building_keeps_its_traceback(monkeypatch):
    """Bad input (ValueError, OSError, ImportError, TypeError) ends in one line; a KeyError
    raised inside a class's __init__ is a bug, and reaches the user as itself."""

    def broken_init(self, *args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(tasks.ImageClassifier, "__init__", broken_init)
    with pytest.raises(KeyError, match="a bug"):
        main(["fit", "--config", LENET, "--config", SMOKE])


# 2. --ckpt_path with model arguments on the command line.


def _validate(checkpoint: Path, *extra: str) -> ZooCLI:
    return ZooCLI(
        args=["validate", "--config", LENET, *SHORT, "--ckpt_path", str(checkpoint), *extra]
    )


def test_ckpt_path_keeps_the_checkpoint_arguments_by_default(lenet_checkpoint):
    cli = _validate(lenet_checkpoint)
    assert cli.model.label_smoothing == 0.1  # the recipe's, which the checkpoint recorded


@pytest.mark.parametrize(
    "activation",
    [
        "--model.init_args.model_kwargs.activation=sigmoid",
        "--model.model_kwargs={activation: sigmoid}",
    ],
    ids=["dotted", "dict"],
)
def test_ckpt_path_applies_an_override_that_keeps_the_shapes(
    activation, lenet_checkpoint, monkeypatch
):
    """Lightning parses the checkpoint's hyper-parameters over the config, which dropped these
    overrides silently; they now apply, and the run says so. A dict adds to the trained one."""
    said = []
    monkeypatch.setattr(tasks.cli, "rank_zero_info", said.append)
    cli = _validate(lenet_checkpoint, "--model.init_args.label_smoothing=0.5", activation)
    assert cli.model.label_smoothing == 0.5
    kwargs = {"num_classes": 10, "in_channels": 1, "activation": "sigmoid", "pooling": "max"}
    assert cli.model.model_kwargs == kwargs
    assert any(isinstance(m, nn.Sigmoid) for m in cli.model.model.modules())
    assert "val/loss" in cli.trainer.callback_metrics  # validated with the checkpoint's weights
    assert len(said) == 1 and "label_smoothing=0.5 (trained with 0.1)" in said[0]
    assert "'sigmoid'" in said[0] and "'relu'" in said[0]


def test_ckpt_path_applies_a_detector_decoding_override(tinyssd_run):
    """The README's ``zoo validate ... --ckpt_path best.ckpt`` with another NMS and score
    threshold: both reach the network, which holds the checkpoint's weights."""
    checkpoint, data = tinyssd_run
    override = "{per_class_nms: false, score_threshold: 0.2}"
    cli = ZooCLI(
        args=["validate", "--config", TINYSSD, *data, *SHORT, "--ckpt_path", str(checkpoint),
              "--model.init_args.model_kwargs", override]
    )  # fmt: skip
    network = cli.model.model
    assert (network.per_class_nms, network.score_threshold) == (False, 0.2)
    held = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(value, held[key]) for key, value in cli.model.state_dict().items())
    assert "val/map" in cli.trainer.callback_metrics


def test_ckpt_path_of_a_damaged_file_is_named(tmp_path, capsys):
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(SystemExit):
        main(["validate", "--config", LENET, "--ckpt_path", str(tmp_path / "empty.ckpt")])
    assert f"--ckpt_path: {tmp_path / 'empty.ckpt'} is empty (0 bytes)" in capsys.readouterr().err


def test_ckpt_path_refuses_another_model(lenet_checkpoint):
    message = _exit_message(
        ["validate", "--config", LENET, *SHORT, "--ckpt_path", str(lenet_checkpoint),
         "--model.init_args.model", "resnet18"]
    )  # fmt: skip
    assert message.startswith(
        f"zoo validate: --ckpt_path {lenet_checkpoint} holds ImageClassifier("
    )
    assert "model='lenet', num_classes=10, in_channels=1" in message
    assert "model='resnet18' (trained with 'lenet')" in message
    assert f"--model.init_args.weights {lenet_checkpoint}" in message


@pytest.mark.parametrize("subcommand", ["validate", "fit"])
def test_ckpt_path_of_ten_classes_on_two_class_data(subcommand, lenet_checkpoint, tmp_path):
    """A class count that disagrees with the checkpoint: refused before any data is read,
    naming what the checkpoint holds, what the data asks and the fine-tuning alternative."""
    write_digit_classes(tmp_path / "two", per_class=4)
    for digit in range(2, 10):
        shutil.rmtree(tmp_path / "two" / str(digit))
    data = ["--data", "datamodules.ImageFolder", f"--data.root={tmp_path / 'two'}",
            "--data.in_channels=1", "--data.image_size=28", "--data.batch_size=4"]  # fmt: skip
    message = _exit_message(
        [subcommand, "--config", LENET, *SHORT, *data, "--ckpt_path", str(lenet_checkpoint)]
    )
    assert message.startswith(f"zoo {subcommand}: --ckpt_path {lenet_checkpoint} holds weights for")
    assert "ImageClassifier(model='lenet', num_classes=10, in_channels=1" in message
    assert "but the config builds ImageClassifier(model='lenet', num_classes=2" in message
    assert re.search(r"\(10, \d+\) in the checkpoint, \(2, \d+\) here", message)
    assert "zoo.adapt" in message and f"--model.init_args.weights {lenet_checkpoint}" in message


def test_ckpt_path_of_another_task_is_refused(lenet_checkpoint, capsys):
    recipe = str(CONFIGS / "detection" / "tinyssd_digitscenes.yaml")
    with pytest.raises(SystemExit):
        main(["validate", "--config", recipe, "--ckpt_path", str(lenet_checkpoint)])
    error = capsys.readouterr().err
    assert f"--ckpt_path {lenet_checkpoint} holds ImageClassifier(model='lenet'" in error
    assert "but the config asks for a tasks.ObjectDetector" in error


# 3. null on the command line.


def test_null_in_dotted_model_kwargs_is_none(capsys):
    flags = [
        "--model.init_args.model_kwargs.activation=null",
        "--model.model_kwargs.pooling",
        "~",
        "--model.init_args.model_kwargs.depth=3",
        "--model.init_args.model_kwargs.wide=false",
        "--model.init_args.model_kwargs.rate=0.5",
    ]
    with pytest.raises(SystemExit):
        main(["fit", "--config", LENET, *flags, "--print_config"])
    kwargs = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["model_kwargs"]
    assert kwargs == {"activation": None, "pooling": None, "depth": 3, "wide": False, "rate": 0.5}


def test_null_backbone_weights_reach_the_builder_as_none():
    """``fcn_resnet18_os8(backbone_weights="None")`` would look for a weights file "None"."""
    recipe = str(CONFIGS / "segmentation" / "fcn_digitscenes.yaml")
    args = ["--config", recipe, "--trainer.logger=false"]
    cli = ZooCLI(args=[*args, "--model.init_args.model_kwargs.backbone_weights=null"], run=False)
    assert cli.model.model_kwargs["backbone_weights"] is None
    cli = ZooCLI(args=[*args, "--model.init_args.weights=null"], run=False)
    assert cli.model.hparams.weights is None


# 4. Lightning's chatter in `make demo`.


def _fit_output(capfd, caplog, root: str) -> tuple[list[str], str]:
    """Warnings and printed text of ``zoo fit --config lenet_digits --ckpt_path last`` (one
    step; nothing to resume from, which the zoo warns about)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steps = ["--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--ckpt_path=last"]
        main(
            [
                "fit",
                "--config",
                LENET,
                "--trainer.logger=false",
                *steps,
                f"--trainer.default_root_dir={root}",
            ]
        )
    out, err = capfd.readouterr()
    logged, _ = caplog.text, caplog.clear()  # Lightning's messages, through its logger
    return [str(w.message) for w in caught], out + err + logged


def test_fit_output_has_no_lightning_chatter_but_real_warnings(capfd, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    with monkeypatch.context() as unquieted:
        unquieted.setattr(tasks.cli, "quiet_lightning", lambda: None)
        for name in tasks._quiet._RANK_ZERO_LOGGERS:  # (logging filters outlive a test)
            unquieted.setattr(logging.getLogger(name), "filters", [])
        shown, printed = _fit_output(capfd, caplog, "unquieted")
    assert any("LeafSpec" in m for m in shown) and "litlogger" in printed  # what there was
    shown, printed = _fit_output(capfd, caplog, "quiet")
    assert not any("LeafSpec" in m for m in shown) and "litlogger" not in printed
    assert any("--ckpt_path last: no last checkpoint" in m for m in shown)  # the zoo's own
    assert "GPU available" in printed  # Lightning's other messages
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The same text from elsewhere still shows.
        warnings.warn_explicit(
            "`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, "mine.py", 1, "mine"
        )
    assert len(caught) == 1


# 5. Invalid config values.


def test_negative_learning_rate_fails_before_training():
    message = _exit_message(
        ["fit", "--config", LENET, "--model.init_args.optimizer.init_args.lr", "-1"]
    )
    assert message.startswith(
        "zoo fit: model.init_args.optimizer torch.optim.Adam: Invalid learning rate: -1.0."
    )
    assert "must be >= 0" in message and "--model.init_args.optimizer.init_args" in message


def test_unknown_optimizer_class_lists_the_optimizers(capsys, tmp_path):
    recipe = tmp_path / "adamm.yaml"
    recipe.write_text("model:\n  init_args:\n    optimizer:\n      class_path: torch.optim.Adamm\n")
    for flags in (["--model.init_args.optimizer", "torch.optim.Adamm"], ["--config", str(recipe)]):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", LENET, *flags])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert "torch.optim.Adamm does not exist; did you mean torch.optim.Adam" in error
        assert re.search(r"torch.optim has: .*AdamW, .*SGD", error)


def test_missing_trainer_preset_lists_the_presets(capsys):
    missing = CONFIGS / "trainer" / "gpu_bf61.yaml"
    with pytest.raises(SystemExit):
        main(["fit", "--config", LENET, "--config", str(missing)])
    error = capsys.readouterr().err
    assert (
        f"config file {missing} does not exist. Did you mean {missing.parent}/gpu_bf16.yaml?"
        in error
    )
    assert re.search(r"has: channels_last.yaml, .*smoke.yaml", error)


# 6. An overflowing loss under bf16-mixed.


def test_bf16_overflow_stops_with_the_guard_message():
    """A learning rate of 1e30 blows the weights up after the first step; under bf16-mixed the
    next loss is not finite and the guard (tests/test_faults.py tests it in fp32) stops the run
    before that step's update, with its advice as the command's one message."""
    flags = ["--trainer.precision=bf16-mixed", "--model.init_args.optimizer.init_args.lr=1e30",
             "--trainer.max_epochs=1", "--trainer.limit_train_batches=5",
             "--trainer.limit_val_batches=0", *QUIET, "--trainer.logger=false"]  # fmt: skip
    with pytest.raises(NonFiniteLoss, match=r"the training loss is (nan|inf) at step [1-4]"):
        ZooCLI(args=["fit", "--config", LENET, *flags])
    message = _exit_message(["fit", "--config", LENET, *flags])
    assert re.match(
        r"zoo fit: the training loss is (nan|inf) at step [1-4] \(epoch 0, precision bf16-mixed\)",
        message,
    )
    assert "--trainer.gradient_clip_val" in message


def test_fp16_mixed_on_cpu_runs_as_bf16():
    with pytest.warns(UserWarning, match="bf16-mixed"):
        trainer = cpu_trainer(".", precision="16-mixed")
    assert trainer.precision == "bf16-mixed"


# 7. The mAP metric's state between validation epochs.


class _FixedDetections(nn.Module):
    """A stand-in detector: the same 100 detections for every image."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        generator = torch.Generator().manual_seed(0)
        corners = torch.rand(100, 2, generator=generator) * 48
        self.boxes = torch.cat([corners, corners + 16], dim=1)
        self.labels = torch.randint(1, 4, (100,), generator=generator)

    def forward(self, images, targets=None):
        scores = torch.linspace(1, 0.01, 100) * self.scale
        return [{"boxes": self.boxes, "scores": scores, "labels": self.labels} for _ in images]


def test_map_state_is_empty_after_each_validation_epoch(tmp_path):
    task = ObjectDetector(_FixedDetections(), num_classes=3, class_names=["a", "b", "c"])
    generator = torch.Generator().manual_seed(1)
    batches = [
        (
            torch.zeros(4, 3, 64, 64),
            [
                {
                    "boxes": torch.rand(5, 4, generator=generator).sort(1).values * 64,
                    "labels": torch.randint(1, 4, (5,), generator=generator),
                    "iscrowd": torch.zeros(5, dtype=torch.long),
                }
                for _ in range(4)
            ],
        )
        for _ in range(2)
    ]
    loader = DataLoader(batches, batch_size=None)
    trainer = cpu_trainer(tmp_path)
    for _ in range(2):
        results = trainer.validate(task, loader, verbose=False)
        assert 0 <= results[0]["val/map_50"] <= 1
        states = [getattr(task.val_map, name) for name in task.val_map._defaults]
        assert states and all(isinstance(s, list) and len(s) == 0 for s in states)
