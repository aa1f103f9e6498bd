"""Fine-tuning in the tasks (Section 14.2): per-unit learning rates that survive schedulers, frozen
stages that do not move (batch-norm statistics included), thawing on schedule, under DDP too, and
the confusion matrix logged at test time."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

import zoo
from tasks import ImageClassifier
from tasks.finetune import FineTuning
from tests._trainers import cpu_trainer

ROOT = Path(__file__).parents[1]


@pytest.fixture(autouse=True)
def _quiet():
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*log_every_n_steps.*")


def _loader(num_batches: int = 3, classes: int = 4, batch: int = 8, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(num_batches * batch, 3, 32, 32, generator=generator)
    labels = torch.randint(0, classes, (num_batches * batch,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=batch)


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    return cpu_trainer(tmp_path, **({"enable_checkpointing": False, "max_epochs": 1} | kwargs))


def _task(**kwargs) -> ImageClassifier:
    torch.manual_seed(0)
    defaults = dict(model="resnet18", num_classes=4, in_channels=3)
    return ImageClassifier(**(defaults | kwargs))


def _cosine(optimizer):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _unchanged(before: dict, module: torch.nn.Module) -> bool:
    return all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_units_and_learning_rate_scales():
    task = _task(head_lr_mult=10, layer_lr_decay=0.5)
    names = [name for name, _ in task.finetuning.units]
    assert names == ["stem", "layer1", "layer2", "layer3", "layer4", "pre_logits", "head"]
    optimizer = task.configure_optimizers()
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["head"] == pytest.approx(1e-2)  # Adam's 1e-3 x 10
    assert lrs["layer4"] == pytest.approx(1e-3 * 0.5**2)  # pre_logits (no parameters) counts
    assert lrs["stem"] == pytest.approx(1e-3 * 0.5**6)
    assert lrs["layer4/no_decay"] == lrs["layer4"]


@pytest.mark.parametrize("scheduler", ["cosine", "warmup"])
def test_head_multiplier_survives_schedulers(tmp_path, scheduler):
    def warmup(optimizer):
        return torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=3)

    task = _task(
        head_lr_mult=10,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9),
        scheduler=_cosine if scheduler == "cosine" else warmup,
    )
    ratios = []

    class Record(L.Callback):
        def on_train_epoch_end(self, trainer, module):
            groups = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}
            ratios.append(groups["head"] / groups["layer1"])

    _trainer(tmp_path, max_epochs=3, callbacks=[Record()]).fit(task, _loader(1))
    assert ratios == pytest.approx([10.0] * 3)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_frozen_backbone_does_not_move(tmp_path, optimizer):
    """Frozen for the whole run: no gradients, no update, batch-norm statistics untouched."""

    def make(params):
        if optimizer == "sgd":
            return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-2)
        return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)

    task = _task(freeze="backbone", optimizer=make, scheduler=_cosine)
    backbone, head = _state(task.model.features), _state(task.model.fc)
    assert not any(p.requires_grad for p in task.model.features.parameters())
    _trainer(tmp_path, max_epochs=2).fit(task, _loader())
    assert _unchanged(backbone, task.model.features)  # running_mean/var included
    assert not _unchanged(head, task.model.fc)


def test_bottom_stages_frozen_top_ones_train(tmp_path):
    task = _task(freeze=2)
    before = _state(task.model)
    _trainer(tmp_path).fit(task, _loader())
    assert _same_prefix(before, task.model, "features.stem.")
    assert _same_prefix(before, task.model, "features.layer1.")
    assert not _same_prefix(before, task.model, "features.layer2.")
    assert not _same_prefix(before, task.model, "fc.")


def _same_prefix(before: dict, model: torch.nn.Module, prefix: str) -> bool:
    now = model.state_dict()
    keys = [k for k in now if k.startswith(prefix)]
    assert keys, prefix
    return all(torch.equal(before[k], now[k]) for k in keys)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_thawing_on_schedule(tmp_path, optimizer):
    """Frozen until epoch 2 (learning rate 0 for those steps, gradients still flowing): the stages
    do not move, not even by weight decay or momentum, until the schedule thaws them."""

    def make(params):
        if optimizer == "sgd":
            return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-2)
        return torch.optim.Adam(params, lr=1e-3, weight_decay=1e-2)

    task = _task(freeze="backbone", unfreeze_at_epochs=[1, 2], optimizer=make, scheduler=_cosine)
    assert all(p.requires_grad for p in task.parameters())  # the same graph on every rank
    initial = _state(task.model)
    seen = {}

    class Record(L.Callback):
        def on_train_epoch_end(self, trainer, module):
            seen[trainer.current_epoch] = {
                unit: _same_prefix(initial, module.model, prefix)
                for unit, prefix in (("layer4", "features.layer4."), ("stem", "features.stem."))
            }
            seen[trainer.current_epoch]["stem_bn_eval"] = not module.model.features.stem.training

    _trainer(tmp_path, max_epochs=3, callbacks=[Record()]).fit(task, _loader())
    # Epoch 0: all frozen. Epoch 1: the top unit below the head (pre_logits has no parameters,
    # so nothing visible moves). Epoch 2, the last listed: everything thaws.
    assert seen[0] == {"layer4": True, "stem": True, "stem_bn_eval": True}
    assert seen[1] == {"layer4": True, "stem": True, "stem_bn_eval": True}
    assert seen[2] == {"layer4": False, "stem": False, "stem_bn_eval": False}


def test_gradual_unfreezing_order():
    model = copy.deepcopy(_task().model)
    finetuning = FineTuning(model, freeze=3, unfreeze_at_epochs=[2, 4, 6])
    assert finetuning.frozen_at(0) == {"stem", "layer1", "layer2"}
    assert finetuning.frozen_at(2) == {"stem", "layer1"}
    assert finetuning.frozen_at(4) == {"stem"}
    assert finetuning.frozen_at(6) == set()


def test_bad_finetuning_arguments():
    with pytest.raises(ValueError, match=r"freeze=9 must be .* from 0 to 5"):
        _task(freeze=9)
    with pytest.raises(ValueError, match="nothing is frozen"):
        _task(unfreeze_at_epochs=[2])
    with pytest.raises(ValueError, match="layer_lr_decay=1.5"):
        _task(layer_lr_decay=1.5)
    with pytest.raises(ValueError, match="need a zoo classifier"):
        ImageClassifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4)), freeze=1)


def test_confusion_matrix_is_logged_at_test(tmp_path):
    task = _task(class_names=["ant", "bee", "cat", "dog"])
    logger = L.pytorch.loggers.TensorBoardLogger(tmp_path, name="logs")
    trainer = _trainer(tmp_path, logger=logger)
    trainer.test(task, _loader(), verbose=False)
    png = Path(logger.log_dir) / "test_confusion_matrix.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert "test/confusion_matrix" in events.Tags()["images"]


def test_frozen_stages_stay_frozen_under_ddp(tmp_path):
    """Two CPU processes (gloo): stages frozen until an epoch keep ``requires_grad`` so DDP syncs
    them once they thaw; before that neither rank moves them, and the ranks agree throughout."""
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "tests.ddp_finetune", str(tmp_path)],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )
    initial = torch.load(tmp_path / "initial.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # Parameters agree exactly; batch-norm running statistics are each rank's own (DDP broadcasts
    # rank 0's at every forward, then each rank updates them with its own batch).
    params = [k for k in initial if "running_" not in k and "num_batches" not in k]
    for key in params:
        torch.testing.assert_close(ranks[0][key], ranks[1][key], rtol=0, atol=0)
    backbone = [k for k in params if k.startswith("features.")]
    head = [k for k in params if k.startswith("fc.")]
    for rank in ranks:  # epoch 0: the backbone is frozen, the head learns
        assert all(torch.equal(initial[k], rank[f"epoch0/{k}"]) for k in backbone)
        assert not all(torch.equal(initial[k], rank[f"epoch0/{k}"]) for k in head)
    # epoch 1: thawed, and DDP keeps the ranks in step although each saw other images
    assert all(not torch.equal(initial[k], ranks[0][k]) for k in backbone)


def test_torchvision_weights_are_adapted_and_recorded(tmp_path, serve_torchvision):
    """ImageNet GoogLeNet -> 3 grey classes: shared class names keep their ImageNet rows, the
    builder argument the weights imply (transform_input) is recorded, and the checkpoint reloads
    without fetching the weights again."""
    torch.manual_seed(0)
    reference = torchvision.models.googlenet(weights=None, init_weights=True).eval()
    calls = serve_torchvision(reference.state_dict())
    names = ["tench", "not-a-fish", "zebra"]
    task = ImageClassifier(
        "googlenet_torchvision", num_classes=3, in_channels=1, class_names=names,
        weights="torchvision",
    )  # fmt: skip
    assert len(calls) == 1 and task.model_kwargs["transform_input"] is True
    head = task.model.get_classifier()
    for row, imagenet_row in ((0, 0), (2, 340)):  # tench and zebra in ImageNet's order
        assert torch.equal(head.weight[row], reference.fc.weight[imagenet_row])
    trainer = _trainer(tmp_path)
    grey = DataLoader(TensorDataset(torch.randn(4, 1, 96, 96), torch.tensor([0, 1, 2, 0])))
    trainer.fit(task, grey)
    trainer.save_checkpoint(tmp_path / "googlenet.ckpt")

    loaded = zoo.load(tmp_path / "googlenet.ckpt")
    restored = ImageClassifier.load_from_checkpoint(tmp_path / "googlenet.ckpt").eval()
    assert len(calls) == 1  # neither fetched anything
    assert loaded.pretrained_cfg.class_names == names
    x = torch.randn(2, 1, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), task.model.eval()(x))
        torch.testing.assert_close(restored(x), task.model(x))


def test_weights_from_a_zoo_checkpoint_reuse_shared_rows(tmp_path):
    """Fine-tuning from our own checkpoint (digits 0-4 -> digits 3-7): the body is copied, the
    rows of 3 and 4 too, and the other rows start fresh."""
    source = _task(class_names=["0", "1", "2", "3"])
    trainer = _trainer(tmp_path)
    trainer.fit(source, _loader(1))
    trainer.save_checkpoint(tmp_path / "source.ckpt")
    target = ImageClassifier(
        "resnet18", num_classes=3, in_channels=1, class_names=["3", "2", "7"],
        weights=str(tmp_path / "source.ckpt"),
    )  # fmt: skip
    old, new = source.model.get_classifier(), target.model.get_classifier()
    assert torch.equal(new.weight[0], old.weight[3]) and torch.equal(new.weight[1], old.weight[2])
    stem = target.model.features.stem[0][0].weight
    torch.testing.assert_close(stem, source.model.features.stem[0][0].weight.sum(1, keepdim=True))


class _Folder(L.LightningDataModule):
    """Stands in for a file data module: its normalisation, and a few grey images."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def train_dataloader(self) -> DataLoader:
        images, labels = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 2, 0])
        return DataLoader(TensorDataset(images, labels), batch_size=4)


def test_normalisation_other_than_the_weights_is_reported(tmp_path):
    source = _task(in_channels=1, class_names=["a", "b", "c", "d"])
    trainer = _trainer(tmp_path)
    trainer.fit(source, _Folder((0.3,), (0.4,)))  # records the data module's mean and std
    trainer.save_checkpoint(tmp_path / "grey.ckpt")
    for mean, warns in (((0.3,), False), ((0.449,), True)):
        task = ImageClassifier(
            "resnet18", num_classes=3, in_channels=1, weights=str(tmp_path / "grey.ckpt")
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _trainer(tmp_path, max_steps=1).fit(task, _Folder(mean, (0.4,)))
        messages = [str(w.message) for w in caught if "expect inputs normalised" in str(w.message)]
        assert bool(messages) == warns, messages
        if warns:
            assert "mean [0.3] and std [0.4]" in messages[0] and "--data.mean" in messages[0]
