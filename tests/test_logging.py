"""What a run leaves behind: the CSV and Weights & Biases presets (configs/trainer/csv.yaml,
wandb.yaml) record metrics, learning rates and hyper-parameters; TensorBoard stays the default;
the model summary states parameters and FLOPs; the classifier draws its sample predictions."""

from __future__ import annotations

import csv
import json
import os
import re
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.model_summary import get_human_readable_count

import tasks.classification
import zoo
from datamodules import Digits
from tasks import ImageClassifier
from tasks._figures import predictions_figure
from tasks.cli import main
from tests._trainers import cpu_trainer

ROOT = Path(__file__).parents[1]
RECIPE = ROOT / "configs" / "classification" / "lenet_digits.yaml"
PRESETS = ROOT / "configs" / "trainer"
# Two short epochs: 3 training batches each, every metric logged at both epoch ends.
SHORT = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=3"]


def _wandb_records(path: Path) -> list:
    """The records of a ``run-<id>.wandb`` file, parsed with wandb's own protobuf schema.

    wandb 0.31 writes offline runs as a LevelDB-style log (a 7-byte ``:W&B`` header, then 32 KiB
    blocks of records, each ``crc32 | length | type``) and has no Python reader left (the Go
    ``wandb-core`` reads them); nor does it write ``files/wandb-summary.json`` offline.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a wandb transaction log"
    records, pending, position, block = [], b"", 7, 32768
    while position + 7 <= len(data):
        left = block - position % block
        checksum, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if left < 7 or (kind == 0 and length == 0):  # a block's zero-padded tail
            position += left
            continue
        chunk = data[position + 7 : position + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == checksum, "corrupt record"
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # full / first, middle / last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _wandb_history(records) -> list[dict]:
    return [
        {
            item.key or "/".join(item.nested_key): json.loads(item.value_json)
            for item in r.history.item
        }
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]


def test_csv_and_wandb_presets_record_metrics_and_hyperparameters(tmp_path):
    """``zoo fit RECIPE --config csv.yaml --config wandb.yaml`` under ``WANDB_MODE=offline``, as
    a user runs it: both loggers land under default_root_dir with the same numbers, and the model
    summary printed at fit start counts parameters and FLOPs."""
    run = tmp_path / "run"
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        # wandb's own folders (debug logs, artifacts, settings) inside tmp_path, not in $HOME.
        **{f"WANDB_{k}_DIR": str(tmp_path / "wandb_home") for k in ("CACHE", "CONFIG", "DATA")},
        "WANDB_DIR": str(tmp_path / "wandb_home"),
    }
    presets = ["--config", str(PRESETS / "csv.yaml"), "--config", str(PRESETS / "wandb.yaml")]
    command = [sys.executable, "-m", "tasks.cli", "fit", "--config", str(RECIPE), *presets]
    command += [*SHORT, "--trainer.default_root_dir", str(run)]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]

    # The summary (Lightning's ModelSummary, fed by the task's example input) counts what
    # zoo.count_flops counts for the recipe's LeNet.
    lenet = zoo.create_model("lenet", activation="relu", pooling="max")
    params = get_human_readable_count(sum(p.numel() for p in lenet.parameters()))
    flops = get_human_readable_count(zoo.count_flops(lenet, (1, 28, 28)))
    printed = done.stdout + done.stderr
    assert re.search(rf"^{re.escape(params)}\s+Total params$", printed, re.M), printed[-2000:]
    assert re.search(rf"^{re.escape(flops)}\s+Total Flops$", printed, re.M), printed[-2000:]

    # CSV: one row per logging event, the epoch metrics and the LearningRateMonitor's rates.
    csv_dir = run / "csv" / "version_0"
    with open(csv_dir / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    columns = set(rows[0])
    assert {"val/acc", "val/loss", "train/loss", "epoch", "step"} <= columns
    assert any(c.startswith("lr-") for c in columns), sorted(columns)
    csv_val_loss = [float(r["val/loss"]) for r in rows if r["val/loss"]]
    assert len(csv_val_loss) == 2 and len([r for r in rows if r["train/loss"]]) == 2
    hparams = (csv_dir / "hparams.yaml").read_text()
    assert "model: lenet" in hparams and "label_smoothing: 0.1" in hparams

    # Weights & Biases: one offline run whose log holds the same metrics and the config.
    (offline,) = (run / "wandb").glob("offline-run-*")
    (log,) = offline.glob("run-*.wandb")
    records = _wandb_records(log)
    history = _wandb_history(records)
    wandb_val_loss = [h["val/loss"] for h in history if "val/loss" in h]
    assert wandb_val_loss == pytest.approx(csv_val_loss, rel=1e-6)
    assert len([h for h in history if "train/loss" in h]) == 2
    assert any(key.startswith("lr-") for h in history for key in h)
    (config,) = [r.config for r in records if r.WhichOneof("record_type") == "config"]
    recorded = {item.key: json.loads(item.value_json) for item in config.update}
    assert recorded["model"] == "lenet" and recorded["label_smoothing"] == 0.1
    assert recorded["batch_size"] == 64  # the data module's hyper-parameters join the model's
    # The sample-prediction figure reaches wandb too, once per epoch.
    assert len([h for h in history if "val/predictions/_type" in h]) == 2
    assert len(list((offline / "files" / "media" / "images").rglob("predictions_*.png"))) == 2


def test_tensorboard_stays_the_default_logger(tmp_path, monkeypatch):
    """Without a logger preset: a TensorBoard events file under default_root_dir with the
    metrics, the learning rates and one prediction figure per epoch (none in the sanity check)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*log_every_n_steps.*")
    quick = [*SHORT, "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"]
    main(["fit", "--config", str(RECIPE), *quick, "--trainer.default_root_dir", str(tmp_path)])
    log_dir = tmp_path / "lightning_logs" / "version_0"
    assert list(log_dir.glob("events.out.tfevents.*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "lightning_logs"]
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"val/acc", "val/loss", "train/loss"} <= set(scalars)
    assert any(tag.startswith("lr-") for tag in scalars), scalars
    # Drawn after each epoch's 3 training steps; the sanity check (step 0) draws nothing.
    assert [image.step for image in events.Images("val/predictions")] == [3, 6]
    assert (log_dir / "val_predictions.png").stat().st_size > 1000


def test_predictions_figure_titles_colours_and_pixels():
    """ "predicted (true)" titles, green when right and red when wrong, class names when given,
    and the image de-normalised back to its pixels."""
    mean, std = (0.5,), (0.25,)
    pixels = torch.tensor([[0.0, 0.5], [0.75, 1.0]])
    images = ((pixels - mean[0]) / std[0]).expand(3, 1, 2, 2)
    figure = predictions_figure(images, [1, 2, 0], [1, 0, 0], ["cat", "dog", "fox"], mean, std)
    assert len(figure.axes) == 1  # one grid image: an axes per image cost 8 ms each
    titles = figure.texts  # figure text, one per image in order (cheaper than axes titles)
    assert [t.get_text() for t in titles] == ["dog (dog)", "fox (cat)", "cat (cat)"]
    assert [t.get_color() for t in titles] == ["green", "red", "green"]
    grid = figure.axes[0].get_images()[0].get_array()
    # 2 x 2 cells of 2 x 2 pixels, a 1-pixel gap around each and a 1-pixel title band above.
    assert grid.shape == (2 * 5, 2 * 4, 3)  # grey images drawn as RGB
    first, third = grid[2:4, 1:3], grid[7:9, 1:3]
    assert first[..., 0].tolist() == [[0, 128], [191, 255]]  # round(255 * pixel)
    assert (first == third).all() and (grid[:2] == 255).all()  # white around the images
    plain = predictions_figure(images[:1], torch.tensor([3]), torch.tensor([4]))
    assert plain.texts[0].get_text() == "3 (4)"  # without class names: the indices


def test_classifier_draws_only_where_the_figure_is_kept(tmp_path, monkeypatch):
    """``log_images`` images of the first validation batch, drawn once per epoch and logged with
    ``log_png``; a run without a logger draws nothing (drawing costs ~0.05 s an epoch)."""
    drawn = []

    def spy(*args, **kwargs):
        drawn.append(figure := predictions_figure(*args, **kwargs))
        return figure

    monkeypatch.setattr(tasks.classification, "predictions_figure", spy)
    quick = dict(max_epochs=1, limit_train_batches=1, limit_val_batches=2, num_sanity_val_steps=1)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*log_every_n_steps.*")
    task = ImageClassifier("lenet", log_images=3)
    cpu_trainer(tmp_path / "quiet", **quick).fit(task, datamodule=Digits(batch_size=8))
    assert drawn == []
    logger = TensorBoardLogger(tmp_path / "logged")
    cpu_trainer(tmp_path / "logged", logger=logger, **quick).fit(
        ImageClassifier("lenet", log_images=3), datamodule=Digits(batch_size=8)
    )
    assert len(drawn) == 1 and len(drawn[0].texts) == 3
    titles = [text.get_text() for text in drawn[0].texts]
    assert all(re.fullmatch(r"\d \(\d\)", title) for title in titles), titles
    assert (Path(logger.log_dir) / "val_predictions.png").is_file()


def test_progress_bar_is_redrawn_on_a_clock(monkeypatch):
    """The CLI's bar redraws at most every ``min_interval`` seconds, and always at an epoch's
    last batch (Lightning's redraws after every batch: ~0.4 ms a step)."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    from tasks.callbacks import ProgressBar
    from tasks.cli import ZooCLI

    cli = ZooCLI(args=[f"--config={RECIPE}", "--trainer.max_epochs=1"], run=False)
    bars = [c for c in cli.trainer.callbacks if isinstance(c, TQDMProgressBar)]
    assert len(bars) == 1 and type(bars[0]) is ProgressBar
    assert cli.trainer.progress_bar_callback is bars[0]
    clock = iter([0.0, 0.05, 0.09, 0.12, 0.13, 0.5])
    monkeypatch.setattr("tasks.callbacks.time.monotonic", lambda: next(clock))
    bar = ProgressBar(min_interval=0.1)
    assert [bar._should_update(n, 6) for n in range(1, 7)] == [1, 0, 0, 1, 0, 1]
    quiet = ZooCLI(args=[f"--config={RECIPE}", "--trainer.enable_progress_bar=false"], run=False)
    assert quiet.trainer.progress_bar_callback is None


def test_quiet_lightning_for_a_notebook_keeps_warnings():
    """``quiet_lightning(info=False)``: Lightning's INFO lines (devices, seeds, restored
    checkpoints) go, its warnings stay; ``zoo`` itself keeps the INFO lines."""
    import logging

    from tasks import quiet_lightning

    parents = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in parents]
    seeds = logging.getLogger("lightning.fabric.utilities.rank_zero")
    try:
        quiet_lightning()
        assert seeds.isEnabledFor(logging.INFO)
        quiet_lightning(info=False)
        assert not seeds.isEnabledFor(logging.INFO) and seeds.isEnabledFor(logging.WARNING)
        assert not logging.getLogger("lightning.pytorch.callbacks").isEnabledFor(logging.INFO)
    finally:  # setLevel also clears logging's cache of effective levels
        for logger, level in zip(parents, levels, strict=True):
            logger.setLevel(level)
