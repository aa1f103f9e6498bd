"""Every registered model, parametrised from the registry (STYLE rule 7): shape, finite outputs,
backward, the classifier contract, export; plus seeded golden outputs for a few models."""

from __future__ import annotations

import copy
import functools
import json
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from zoo import Classifier

CLASSIFIERS = zoo.list_models(task="classification")
# Models returning one tensor; detectors (tests/test_detection_models.py) return losses or boxes.
TENSOR_MODELS = CLASSIFIERS + zoo.list_models(task="regression")
# The ImageNet-era families must run on 1 or 3 channels at any size from 96 up (course recipes
# resize Fashion-MNIST to 96 or 224); the course's own small models are 28x28 grey-scale.
SMALL_INPUT = {"lenet", "lenet_bn", "mlp", "softmax_regression"}
IMAGENET_ERA = [n for n in CLASSIFIERS if zoo.model_info(n).input_size == (3, 224, 224)]


def _input_shape(name: str, in_channels: int | None = None, size: int = 96) -> tuple[int, ...]:
    info = zoo.model_info(name)
    if name in SMALL_INPUT or info.task != "classification" or info.input_size[-1] < 28:
        return info.input_size
    return (in_channels or info.input_size[0], size, size)


@functools.lru_cache(maxsize=2)
def _seeded_model(name: str, num_classes: int, in_channels: int | None) -> nn.Module:
    # Reused across tests: initialising VGG's 130M parameters dominates these tests. Bounded:
    # keeping every variant (8 VGGs alone are 4 GB) took a worker past 12 GB, and two such
    # workers past CI's 24 GB.
    torch.manual_seed(0)
    if zoo.model_info(name).task != "classification":
        return zoo.create_model(name)
    shape = _input_shape(name, in_channels)
    return zoo.create_model(name, num_classes=num_classes, in_channels=shape[0])


def _build(name: str, num_classes: int = 7, in_channels: int | None = None) -> nn.Module:
    """A fresh copy of the seeded model, so a test may train or modify it."""
    return copy.deepcopy(_seeded_model(name, num_classes, in_channels))


def test_registry_lists_the_course():
    expected = {
        "softmax_regression", "perceptron", "mlp", "linear_regression", "lenet", "lenet_bn",
        "alexnet", "nin", "googlenet", "resnet18", "resnet34", "resnet50", "resnet101",
        "resnet152",
    } | {f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")}  # fmt: skip
    assert expected <= set(zoo.list_models())
    assert zoo.list_models("resnet*") == [
        "resnet101",
        "resnet152",
        "resnet18",
        "resnet34",
        "resnet50",
    ]
    assert zoo.list_models(task="regression") == ["linear_regression"]


def test_registry_rejects_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):

        @zoo.register_model(task="classification", input_size=(1, 28, 28))
        def lenet():  # noqa: F811 - the duplicate is the point
            return nn.Identity()

    with pytest.raises(ValueError, match="unknown model 'resnet19'.*resnet18"):
        zoo.create_model("resnet19")


@pytest.mark.parametrize("name", zoo.list_models())
def test_model_info(name):
    info = zoo.model_info(name)
    assert info.name == name and info.family
    assert info.task in {"classification", "regression", "detection", "segmentation"}
    assert "Section" in (info.builder.__doc__ or ""), "every builder cites its course section"


@pytest.mark.parametrize(
    "name,num_params",
    [
        ("softmax_regression", 784 * 10 + 10),
        ("mlp", 784 * 256 + 256 + 256 * 10 + 10),
        ("lenet", 61_706),  # LeNet-5 with 10 classes
        ("resnet18", 11_689_512),  # torchvision's counts: same architecture
        ("resnet50", 25_557_032),
        ("vgg16", 138_357_544),
        ("vgg11_bn", 132_868_840),
    ],
)
def test_parameter_counts(name, num_params):
    assert zoo.model_info(name).num_params == num_params


@pytest.mark.parametrize("name", TENSOR_MODELS)
def test_forward_backward(name):
    torch.manual_seed(0)
    model = _build(name).train()
    x = torch.randn(2, *_input_shape(name))
    out = model(x)
    expected = (2, 7) if zoo.model_info(name).task == "classification" else (2, 1)
    assert out.shape == expected
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), param_name


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_contract(name):
    torch.manual_seed(0)
    model = _build(name).eval()
    assert isinstance(model, Classifier) and model.num_classes == 7
    x = torch.randn(2, *_input_shape(name))
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
        torch.testing.assert_close(model.forward_head(features), logits)
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)

        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.num_classes == 3
        model.reset_classifier(0)  # feature extractor: the pre-logits vector
        assert model(x).shape == (2, model.num_features)


@pytest.mark.parametrize(
    "name", [n for n in CLASSIFIERS if n not in ("mlp", "perceptron", "softmax_regression")]
)
def test_feature_maps_at_named_strides(name):
    model = _build(name).eval()
    shape = _input_shape(name, size=224)
    with torch.no_grad():
        maps = model.forward_intermediates(torch.randn(1, *shape))
    assert list(maps) == [info.name for info in model.feature_info]
    for info in model.feature_info:
        fmap = maps[info.name]
        assert fmap.shape[1] == info.channels, info
        # Nominal stride: valid (unpadded) convolutions lose a few pixels at the border
        # (LeNet-BN: 28 -> 4 at stride 4), but a wrong stride is off by a factor of two.
        assert abs(fmap.shape[-1] - shape[-1] / info.stride) <= 3, (info, tuple(fmap.shape))
    strides = [info.stride for info in model.feature_info]
    assert strides == sorted(strides)


# The deeper variants of VGG and ResNet repeat the blocks of the shallowest, tested here.
@pytest.mark.parametrize(
    "name",
    [
        n
        for n in IMAGENET_ERA
        if not n.startswith(("vgg13", "vgg16", "vgg19", "resnet101", "resnet152"))
    ],
)
@pytest.mark.parametrize("in_channels,size", [(1, 96), (3, 160), (1, 224)])
def test_imagenet_families_take_any_channels_and_size(name, in_channels, size):
    model = _seeded_model(name, 10, in_channels).eval()
    with torch.no_grad():
        assert model(torch.randn(1, in_channels, size, size)).shape == (1, 10)


@pytest.mark.parametrize("name", TENSOR_MODELS)
def test_export(name):
    """Every model exports with torch.export (the successor of TorchScript) and agrees with eager."""
    torch.manual_seed(0)
    model = _build(name).eval()
    x = torch.randn(2, *_input_shape(name))
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "lenet", "resnet18"])
def test_torchscript(name):
    model = _build(name).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, *_input_shape(name))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


GOLDEN = Path(__file__).parent / "golden" / "model_outputs.json"
GOLDEN_MODELS = [
    "softmax_regression",
    "mlp",
    "lenet",
    "lenet_bn",
    "nin",
    "googlenet",
    "resnet18",
    "vgg11_bn",
]


def _golden_output(name: str) -> list[float]:
    torch.manual_seed(0)
    model = _build(name, num_classes=5, in_channels=1).eval()
    x = torch.linspace(-1, 1, math.prod(_input_shape(name, 1))).reshape(1, *_input_shape(name, 1))
    with torch.no_grad():
        return [round(v, 6) for v in model(x)[0].tolist()]


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_golden_outputs(name):
    """Seeded outputs pinned; regenerate with ZOO_REGEN_GOLDEN=1 after an intended change."""
    outputs = _golden_output(name)
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if os.environ.get("ZOO_REGEN_GOLDEN"):
        golden[name] = outputs
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    assert name in golden, "no golden output yet: run with ZOO_REGEN_GOLDEN=1"
    torch.testing.assert_close(
        torch.tensor(outputs), torch.tensor(golden[name]), rtol=1e-4, atol=1e-5
    )
