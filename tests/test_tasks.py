"""The tasks with real training steps: Regressor against the closed form, ImageClassifier on the
embedded digits, checkpoints that load with weights_only=True, zoo.load, optimizer groups."""

from __future__ import annotations

import functools
import warnings

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import zoo
from datamodules import Digits, SyntheticRegression
from tasks import ImageClassifier, Regressor
from tests._trainers import cpu_trainer


@pytest.fixture(autouse=True)
def _quiet():
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*log_every_n_steps.*")


def test_linear_regression_matches_least_squares(tmp_path):
    """Minibatch SGD (Section 3.4) converges to the closed-form solution (Section 3.1.1.2)."""
    L.seed_everything(0)
    data = SyntheticRegression(weights=[2.0, -3.4], bias=4.2, noise=0.01, batch_size=32)
    task = Regressor("linear_regression", {"in_features": 2}, loss="l2")
    cpu_trainer(tmp_path, max_epochs=15, enable_checkpointing=False).fit(task, datamodule=data)

    features, targets = data.datasets["train"].tensors
    design = torch.cat([features, torch.ones(len(features), 1)], dim=1).double()
    closed_form = torch.linalg.lstsq(design, targets.double().unsqueeze(1)).solution.squeeze(1)
    learned = torch.cat([task.model.weight.detach()[0], task.model.bias.detach()]).double()
    torch.testing.assert_close(learned, closed_form, atol=1e-2, rtol=0)
    torch.testing.assert_close(
        closed_form, torch.tensor([2.0, -3.4, 4.2]).double(), atol=2e-3, rtol=0
    )


@pytest.mark.parametrize("loss", ["l1", "huber"])
def test_robust_losses_also_recover_the_weights(tmp_path, loss):
    L.seed_everything(0)
    data = SyntheticRegression(noise=0.01, batch_size=32)
    task = Regressor("linear_regression", {"in_features": 2}, loss=loss)
    trainer = cpu_trainer(tmp_path, max_epochs=15, enable_checkpointing=False)
    trainer.fit(task, datamodule=data)
    learned = torch.cat([task.model.weight.detach()[0], task.model.bias.detach()])
    torch.testing.assert_close(learned, torch.tensor([2.0, -3.4, 4.2]), atol=0.05, rtol=0)
    assert trainer.validate(task, datamodule=data, verbose=False)[0]["val/mse"] < 1e-2


def test_mlp_regression_fits_what_a_line_cannot(tmp_path):
    """An MLP (Section 5.1) fits y = x^2, where the best line is the mean (MSE = Var[x^2] = 2)."""
    torch.manual_seed(0)
    x = torch.randn(512, 1)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, x.square().squeeze(1)), batch_size=64
    )
    results = {}
    for model, kwargs in (
        ("linear_regression", {"in_features": 1}),
        ("mlp", {"in_channels": 1, "image_size": 1, "num_classes": 1, "hidden_sizes": [32, 32]}),
    ):
        L.seed_everything(0)
        task = Regressor(model, kwargs, optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
        trainer = cpu_trainer(tmp_path, max_epochs=40, enable_checkpointing=False)
        trainer.fit(task, train_dataloaders=loader)
        results[model] = trainer.validate(task, loader, verbose=False)[0]["val/mse"]
    assert results["linear_regression"] > 1.0
    assert results["mlp"] < 0.1 * results["linear_regression"]


def test_regressor_rejects_unknown_loss():
    with pytest.raises(ValueError, match="unknown regression loss 'l3'"):
        Regressor("linear_regression", loss="l3")


@functools.cache
def _trained_digits_classifier(root: str) -> tuple[L.Trainer, ImageClassifier, Digits]:
    L.seed_everything(0)
    data = Digits(batch_size=64)
    task = ImageClassifier(
        "lenet",
        num_classes=10,
        in_channels=1,
        model_kwargs={"activation": "relu", "pooling": "max"},
        class_names=Digits.classes,
        optimizer=lambda params: torch.optim.Adam(params, lr=3e-3),
    )
    trainer = cpu_trainer(
        root,
        max_epochs=4,
        logger=L.pytorch.loggers.TensorBoardLogger(root, name="logs"),
        callbacks=[
            L.pytorch.callbacks.ModelCheckpoint(
                dirpath=f"{root}/checkpoints", filename="best", monitor="val/loss"
            )
        ],
    )
    trainer.fit(task, datamodule=data)
    return trainer, task, data


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _trained_digits_classifier(str(tmp_path_factory.mktemp("digits")))


def test_image_classifier_learns_digits(trained):
    trainer, task, data = trained
    metrics = trainer.callback_metrics
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_top5"} <= set(metrics)
    assert "train/acc_top5" not in metrics  # top-5 is an evaluation metric here
    assert metrics["val/acc"] > 0.9
    test = trainer.test(task, datamodule=data, ckpt_path="best", verbose=False)[0]
    assert test["test/acc"] > 0.9 and test["test/acc_top5"] >= test["test/acc"]


def test_checkpoint_is_plain_data(trained):
    trainer, _, _ = trained
    checkpoint = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    assert hparams["model"] == "lenet" and hparams["class_names"] == Digits.classes
    assert "optimizer" not in hparams
    assert checkpoint["zoo"]["mean"] == list(Digits.mean) and checkpoint["zoo"]["image_size"] == 28
    assert checkpoint["zoo"]["zoo_version"] == zoo.__version__  # which release wrote it
    restored = ImageClassifier.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert restored.hparams.model_kwargs == {"activation": "relu", "pooling": "max"}


def test_zoo_load_rebuilds_the_trained_network(trained):
    trainer, _, data = trained
    path = trainer.checkpoint_callback.best_model_path
    model = zoo.load(path)
    task = ImageClassifier.load_from_checkpoint(path).eval()
    data.setup("test")
    images, _ = next(iter(data.test_dataloader()))
    with torch.no_grad():
        torch.testing.assert_close(model(images), task(images))
    cfg = model.pretrained_cfg
    assert cfg.class_names == [str(d) for d in range(10)] and cfg.in_channels == 1
    # The attached preprocessing turns an ordinary RGB picture into the model's input.
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), np.uint8))
    x = cfg.transforms()(picture)
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert model(x[None]).softmax(-1).sum().item() == pytest.approx(1.0)


def test_zoo_load_explains_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        zoo.load(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="has no 'zoo' record"):
        zoo.load(tmp_path / "foreign.ckpt")


def test_predict_returns_probabilities(trained):
    trainer, task, data = trained
    batches = trainer.predict(task, datamodule=data)
    probs = torch.cat(batches)
    assert probs.shape == (360, 10)
    torch.testing.assert_close(probs.sum(-1), torch.ones(360))


def test_module_instead_of_registry_name(tmp_path):
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    task = ImageClassifier(net, num_classes=10, in_channels=1)
    assert "model" not in task.hparams  # a module is not plain data: pass it again to load
    trainer = cpu_trainer(tmp_path, max_steps=3, limit_val_batches=1)
    trainer.fit(task, datamodule=Digits(batch_size=32))
    path = trainer.checkpoint_callback.best_model_path
    assert "zoo" not in torch.load(path, weights_only=True)
    restored = ImageClassifier.load_from_checkpoint(
        path, model=nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    )
    torch.testing.assert_close(restored.model[1].weight, task.model[1].weight)


def test_weight_decay_skips_biases_and_norms():
    task = ImageClassifier(
        "lenet_bn", optimizer=lambda groups: torch.optim.SGD(groups, lr=0.1, weight_decay=1e-2)
    )
    groups = task.configure_optimizers().param_groups
    # One pair of groups per unit (block1, block2, pre_logits, head): weights, then the rest.
    assert [g["name"] for g in groups][:2] == ["block1", "block1/no_decay"]
    decay = [p for g in groups if not g["name"].endswith("/no_decay") for p in g["params"]]
    no_decay = [p for g in groups if g["name"].endswith("/no_decay") for p in g["params"]]
    for group in groups:
        assert group["weight_decay"] == (0.0 if group["name"].endswith("/no_decay") else 1e-2)
    assert all(p.ndim > 1 for p in decay) and all(p.ndim == 1 for p in no_decay)
    bn = task.model.features.block1[1]
    assert any(p is bn.weight for p in no_decay)
    assert len(decay) + len(no_decay) == len(list(task.parameters()))
    everything = ImageClassifier("lenet_bn", decay_norm_and_bias=True).configure_optimizers()
    assert all(g["weight_decay"] == 0 for g in everything.param_groups)  # Adam's default
    assert [g["name"] for g in everything.param_groups] == [
        "block1", "block2", "pre_logits", "head"
    ]  # fmt: skip


def test_scheduler_is_stepped_per_epoch():
    task = ImageClassifier(
        "mlp",
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
    )
    config = task.configure_optimizers()
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)
    assert config["lr_scheduler"]["interval"] == "epoch"


def test_bad_task_arguments():
    with pytest.raises(ValueError, match="class_names has 2 names for num_classes=10"):
        ImageClassifier("lenet", class_names=["a", "b"])
    with pytest.raises(ValueError, match="unknown model 'lenet6'"):
        ImageClassifier("lenet6")


def test_label_smoothing_changes_the_loss():
    torch.manual_seed(0)
    images, labels = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    plain, smooth = ImageClassifier("lenet"), ImageClassifier("lenet", label_smoothing=0.2)
    smooth.load_state_dict(plain.state_dict())
    loss_plain = plain._shared_step((images, labels), "val")
    loss_smooth = smooth._shared_step((images, labels), "val")
    expected = torch.nn.functional.cross_entropy(plain(images), labels, label_smoothing=0.2)
    torch.testing.assert_close(loss_smooth, expected)
    assert not torch.isclose(loss_plain, loss_smooth)
