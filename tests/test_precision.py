"""Mixed precision and the speed switches on CPU: bf16-mixed training steps for a classifier, a
detector and a segmenter (autocast really in effect), channels-last weights, and a compiled
network whose checkpoint loads like any other."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import datamodules
import zoo
from tasks import ImageClassifier, ObjectDetector, SemanticSegmenter
from tasks.callbacks import SpeedUp
from tests._detection_files import FAST
from tests._trainers import cpu_trainer

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:.*log_every_n_steps.*"),
    pytest.mark.filterwarnings("ignore:.*(dropped|clamped).*"),
]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes") / "digit_scenes"
    datamodules.DigitScenes(root=str(root), num_train=8, num_val=5, scene_size=64).prepare_data()
    return root


def _scene_data(kind: str, root) -> datamodules.DigitScenes:
    cls = datamodules.DigitScenes if kind == "detection" else datamodules.DigitScenesSegmentation
    return cls(root=str(root), num_train=8, num_val=5, scene_size=64, batch_size=4)


def _conv_dtypes(model: nn.Module) -> list[torch.dtype]:
    """Records the output dtype of every convolution the forward passes run."""
    seen: list[torch.dtype] = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    return seen


def _task(kind: str, data):
    if kind == "classification":
        return ImageClassifier("resnet18", num_classes=10, in_channels=1)
    if kind == "detection":
        return ObjectDetector(
            "fasterrcnn_resnet50",
            data.num_classes,
            model_kwargs=FAST["fasterrcnn_resnet50"],
            class_names=data.classes,
            log_images=0,
        )
    return SemanticSegmenter("fcn_resnet18", num_classes=data.num_classes)


METRIC = {"classification": "val/acc", "detection": "val/map_50", "segmentation": "val/miou"}


@pytest.mark.parametrize("kind", list(METRIC))
def test_bf16_mixed_trains_on_cpu(kind, scenes, tmp_path):
    torch.manual_seed(0)
    if kind == "classification":
        data = datamodules.Digits(batch_size=8, image_size=32)
    else:
        data = _scene_data(kind, scenes)
    task = _task(kind, data)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    dtypes = _conv_dtypes(task.model)
    trainer = cpu_trainer(
        tmp_path,
        precision="bf16-mixed",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
    )
    trainer.fit(task, datamodule=data)
    assert dtypes and set(dtypes) == {torch.bfloat16}  # autocast ran every convolution in bf16
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics[METRIC[kind]])
    state = task.model.state_dict()
    assert all(v.dtype == before[k].dtype for k, v in state.items())  # fp32 weights stay fp32
    assert any(not torch.equal(v, before[k]) for k, v in state.items() if v.is_floating_point())
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_channels_last_switch(tmp_path):
    torch.manual_seed(0)
    task = ImageClassifier("resnet18", num_classes=10, in_channels=1)
    trainer = cpu_trainer(
        tmp_path,
        max_steps=2,
        limit_val_batches=1,
        enable_checkpointing=False,
        callbacks=[SpeedUp(channels_last=True)],
    )
    trainer.fit(task, datamodule=datamodules.Digits(batch_size=8, image_size=32))
    convs = [m.weight for m in task.model.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not convs[1].is_contiguous()  # really NHWC (with one channel the two coincide)


def test_compiled_network_trains_and_its_checkpoint_loads(tmp_path):
    """torch.compile (the eager backend here: dynamo's graph capture without code generation,
    which a CPU test can afford) compiles in place: the state-dict keys stay the network's own,
    so zoo.load reads the checkpoint."""
    torch.manual_seed(0)
    task = ImageClassifier("lenet", num_classes=10, in_channels=1)
    trainer = cpu_trainer(
        tmp_path,
        max_steps=3,
        limit_val_batches=1,
        callbacks=[SpeedUp(compile=True, compile_kwargs={"backend": "eager"})],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*(compile|dynamo).*")
        trainer.fit(task, datamodule=datamodules.Digits(batch_size=8, image_size=28))
    assert task.model._compiled_call_impl is not None
    loaded = zoo.load(trainer.checkpoint_callback.best_model_path)
    assert loaded.state_dict().keys() == task.model.state_dict().keys()
    images = torch.randn(2, 1, 28, 28)
    task.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), task.model(images))
