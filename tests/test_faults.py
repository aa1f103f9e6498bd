"""Fault tolerance: a run killed with SIGKILL resumes with ``--ckpt_path last`` to the weights of an
uninterrupted one, checkpoints survive a crash mid-write, a non-finite loss stops training with
advice, and seeded runs are bit-identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from tasks import ImageClassifier
from tasks.callbacks import AtomicCheckpointIO, NonFiniteLoss, NonFiniteLossGuard
from tasks.cli import main
from tests._image_files import write_digit_classes
from tests._trainers import cpu_trainer

ROOT = Path(__file__).resolve().parents[1]
ENV = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _recipe(path: Path, root: Path, data: dict, seed: int = 0, epochs: int = 4) -> Path:
    """A small seeded recipe: an MLP with dropout (so the random generators matter), SGD with
    momentum, deterministic algorithms, no logger."""
    recipe = {
        "seed_everything": seed,
        "trainer": {
            "max_epochs": epochs,
            "default_root_dir": str(root),
            "accelerator": "cpu",
            "devices": 1,
            "deterministic": True,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": False,
        },
        "model": {
            "class_path": "tasks.ImageClassifier",
            "init_args": {
                "model": "mlp",
                "model_kwargs": {"hidden_sizes": [32], "dropout": 0.3, "image_size": 8},
                "optimizer": {
                    "class_path": "torch.optim.SGD",
                    "init_args": {"lr": 0.05, "momentum": 0.9},
                },
            },
        },
        "data": data,
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def _fit(recipe: Path, *flags: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "tasks.cli", "fit", "--config", str(recipe), *flags]
    return subprocess.Popen(command, cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen, timeout: float = 240) -> int:
    _, stderr = process.communicate(timeout=timeout)
    if process.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"zoo fit failed ({process.returncode}):\n{stderr[-3000:]}")
    return process.returncode


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def test_sigkilled_run_resumes_to_the_uninterrupted_weights(tmp_path):
    """Kill at batch 3 of epoch 2 (after epoch 1's checkpoint), resume with --ckpt_path last:
    the final weights equal an uninterrupted run's, the shuffles and dropout masks included
    (the checkpoint carries the random generators' states)."""
    digits = {"class_path": "datamodules.Digits", "init_args": {"batch_size": 128, "image_size": 8}}
    whole = _fit(_recipe(tmp_path / "whole.yaml", tmp_path / "whole", digits))
    recipe = _recipe(tmp_path / "killed.yaml", tmp_path / "killed", digits)
    killed = _fit(
        recipe,
        "--trainer.callbacks+=tests.fault_callbacks.SigkillAt",
        "--trainer.callbacks.epoch=2",
        "--trainer.callbacks.batch=3",
    )
    assert _finish(killed) == -signal.SIGKILL
    _finish(whole)
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] > 0  # epoch 1's, before the kill
    steps_per_epoch = state["global_step"] // 2

    assert _finish(_fit(recipe, "--ckpt_path", "last")) == 0
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 4 * steps_per_epoch
    expected = _weights(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    for key, value in resumed["state_dict"].items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-6, msg=key)
    # The control: without the generators' states the resumed run would differ (its first
    # epoch after the restart reshuffles from another state).
    assert any(not torch.equal(v, _weights(last)[k]) for k, v in state["state_dict"].items())


def test_nothing_to_resume_from_says_so_and_starts_fresh(tmp_path):
    digits = {"class_path": "datamodules.Digits", "init_args": {"batch_size": 256, "image_size": 8}}
    recipe = _recipe(tmp_path / "r.yaml", tmp_path / "run", digits, epochs=1)
    with pytest.warns(UserWarning, match=r"no last checkpoint in .*run.checkpoints to resume"):
        # deterministic: false, as torch.use_deterministic_algorithms would outlive the test
        main(
            ["fit", "--config", str(recipe), "--trainer.deterministic=false", "--ckpt_path", "last"]
        )
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_checkpoint_killed_mid_write_leaves_the_previous_one(tmp_path):
    """SIGKILL half-way through writing a checkpoint over an older one: the older one still
    loads; the half-written bytes sit in a hidden .partial file, removed by the next save."""
    path = tmp_path / "last.ckpt"
    process = subprocess.run(
        [sys.executable, "-m", "tests.fault_callbacks", str(path)], cwd=ROOT, env=ENV, timeout=60
    )
    assert process.returncode == -signal.SIGKILL
    saved = torch.load(path, weights_only=True)
    assert saved["step"] == 1 and torch.equal(saved["weights"], torch.arange(1000.0))
    (partial,) = tmp_path.glob(".last.ckpt.*.partial")
    with pytest.raises(Exception):  # noqa: B017 (torch raises RuntimeError or EOFError)
        torch.load(partial, weights_only=True)
    AtomicCheckpointIO().save_checkpoint({"step": 3}, path)
    assert torch.load(path, weights_only=True) == {"step": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def _nan_at_batch(bad_batch: int, batch_size: int = 4) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8 * batch_size, 1, 8, 8, generator=generator)
    images[bad_batch * batch_size] = float("nan")
    labels = torch.randint(0, 3, (8 * batch_size,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size)


def test_non_finite_loss_stops_before_the_update_with_advice(tmp_path):
    torch.manual_seed(0)
    task = ImageClassifier(
        "softmax_regression", num_classes=3, in_channels=1, model_kwargs={"image_size": 8}
    )
    trainer = cpu_trainer(tmp_path, max_epochs=1, callbacks=[NonFiniteLossGuard()])
    with pytest.raises(
        NonFiniteLoss,
        match=r"loss is nan at step 5 \(epoch 0, precision 32-true\).*learning rate.*check the data",
    ):
        trainer.fit(task, _nan_at_batch(5))
    assert trainer.global_step == 5
    assert all(torch.isfinite(p).all() for p in task.parameters())

    torch.manual_seed(0)
    task = ImageClassifier(
        "softmax_regression", num_classes=3, in_channels=1, model_kwargs={"image_size": 8}
    )
    trainer = cpu_trainer(tmp_path, max_epochs=1, callbacks=[NonFiniteLossGuard(enabled=False)])
    trainer.fit(task, _nan_at_batch(5))  # unguarded, the NaN reaches the weights
    assert not all(torch.isfinite(p).all() for p in task.parameters())


@pytest.mark.parametrize(
    "precision, advice",
    [
        ("16-mixed", r"bf16-mixed instead of 16-mixed \(fp16 overflows past 65504\)"),
        ("bf16-mixed", r"try 32-true precision"),
        ("32-true", r"check the data for NaN"),
    ],
)
def test_non_finite_loss_advice_fits_the_precision(precision, advice):
    """fp16 (GPU only: Lightning runs 16-mixed as bf16 on a CPU) is told to switch to bf16,
    whose range is fp32's; bf16 and fp32 runs get advice of their own."""
    strategy = SimpleNamespace(reduce_boolean_decision=lambda decision, all: decision)
    trainer = SimpleNamespace(
        strategy=strategy, precision=precision, global_step=7, current_epoch=1
    )
    with pytest.raises(
        NonFiniteLoss, match=rf"loss is inf at step 7 .*precision {precision}.*{advice}"
    ):
        NonFiniteLossGuard().on_before_backward(trainer, None, torch.tensor(float("inf")))


def test_seeded_deterministic_runs_are_bit_identical(tmp_path):
    """seed_everything + deterministic: two runs with augmentation (random crops and flips in 2
    DataLoader workers, albumentations' own generator reseeded in each) and dropout end with
    bit-identical weights; a third with another seed differs, so the comparison can fail."""
    write_digit_classes(tmp_path / "digits", per_class=8)
    folder = {
        "class_path": "datamodules.ImageFolder",
        "init_args": {
            "root": str(tmp_path / "digits"),
            "in_channels": 1,
            "image_size": 8,
            "resize_size": 10,
            "train_transforms": "crop_flip",
            "val_fraction": 0.25,
            "batch_size": 8,
            "num_workers": 2,
        },
    }
    runs = [
        _fit(_recipe(tmp_path / f"{name}.yaml", tmp_path / name, folder, seed=seed, epochs=3))
        for name, seed in (("first", 0), ("second", 0), ("other_seed", 1))
    ]
    for run in runs:
        assert _finish(run) == 0
    first, second, other = (
        _weights(tmp_path / name / "checkpoints" / "last.ckpt")
        for name in ("first", "second", "other_seed")
    )
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
