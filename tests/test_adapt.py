"""``zoo.adapt`` (Section 14.2): new heads that reuse the rows of shared classes, and input layers
adapted to any channel count so that a grey image keeps the activations of its RGB copy."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from zoo import PretrainedConfig

# One model per family (the deeper variants repeat the same first layer and head).
FAMILIES = ["softmax_regression", "mlp", "lenet", "lenet_bn", "alexnet", "nin", "googlenet",
            "resnet18", "resnet50", "vgg11_bn"]  # fmt: skip


def _input(name: str, channels: int, batch: int = 2) -> torch.Tensor:
    _, height, width = zoo.model_info(name).input_size
    side = 96 if height > 28 else height  # the ImageNet-era families take any size from 96 px
    torch.manual_seed(1)
    return torch.randn(batch, 1, side, side if height > 28 else width).expand(-1, channels, -1, -1)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("source,target", [(3, 1), (1, 3), (3, 4), (1, 4), (4, 3)])
def test_grey_input_keeps_its_activations(name, source, target):
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=5, in_channels=source).eval()
    grey = _input(name, 1)
    with torch.no_grad():
        before = model(grey.expand(-1, source, -1, -1))
        zoo.adapt(model, in_channels=target)
        after = model(grey.expand(-1, target, -1, -1))
    assert model.in_channels == target
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_input_weight_rule():
    weight = torch.randn(8, 3, 5, 5)
    torch.testing.assert_close(zoo.adapt_input_weight(weight, 1), weight.sum(1, keepdim=True))
    six = zoo.adapt_input_weight(weight, 6)  # a multiple: repeated, halved, colours kept apart
    torch.testing.assert_close(six, torch.cat([weight, weight], 1) / 2)
    four = zoo.adapt_input_weight(weight, 4)
    torch.testing.assert_close(four, weight.sum(1, keepdim=True).expand(-1, 4, -1, -1) / 4)


def _named(name: str, class_names: list[str], **kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=len(class_names), **kwargs)
    model.pretrained_cfg = PretrainedConfig(
        class_names=class_names, mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.3], in_channels=3
    )
    return model


@pytest.mark.parametrize("name", ["resnet18", "vgg11", "alexnet", "googlenet", "mlp"])
def test_shared_classes_keep_their_rows(name):
    kwargs = {"in_channels": 3, "image_size": 8} if name == "mlp" else {}
    model = _named(name, ["cat", "dog", "hotdog", "crane", "crane"], **kwargs)
    old = model.get_classifier()
    old_weight, old_bias = old.weight.detach().clone(), old.bias.detach().clone()
    zoo.adapt(model, class_names=["not-hotdog", "hotdog", "crane", "dog"])
    new = model.get_classifier()
    assert new is not old and new.out_features == 4 and model.num_classes == 4
    for row, source in ((1, 2), (2, 3), (3, 1)):  # "crane" twice: the first one
        assert torch.equal(new.weight[row], old_weight[source])
        assert torch.equal(new.bias[row], old_bias[source])
    # The new class starts from a fresh initialisation, not from any old row.
    assert not any(torch.equal(new.weight[0], w) for w in old_weight)
    assert model.pretrained_cfg.class_names == ["not-hotdog", "hotdog", "crane", "dog"]


def test_same_classes_keep_the_head():
    model = _named("resnet18", ["a", "b", "c"])
    head = model.get_classifier()
    zoo.adapt(model, num_classes=3)
    zoo.adapt(model, class_names=["a", "b", "c"])
    assert model.get_classifier() is head
    zoo.adapt(model, class_names=["c", "b", "a"])  # same count, other order: a new head, reused
    assert model.get_classifier() is not head
    torch.testing.assert_close(model.get_classifier().weight[0], head.weight[2])


def test_new_head_without_names_is_fresh_and_cfg_follows():
    model = _named("resnet18", ["a", "b", "c"])
    zoo.adapt(model, num_classes=7, in_channels=1)
    cfg = model.pretrained_cfg
    assert model(torch.randn(1, 1, 96, 96)).shape == (1, 7)
    assert cfg.class_names is None and cfg.in_channels == 1
    assert cfg.mean == pytest.approx([0.4]) and cfg.std == pytest.approx([0.7 / 3])
    zoo.adapt(model, num_classes=0)  # a feature extractor
    assert model(torch.randn(1, 1, 96, 96)).shape == (1, 512)


def test_nin_head_is_not_linear_so_rows_are_not_copied():
    model = _named("nin", ["a", "b", "c"])
    with pytest.warns(UserWarning, match="not a linear or convolutional layer"):
        zoo.adapt(model, class_names=["b", "z"])
    assert model(torch.randn(1, 3, 96, 96)).shape == (1, 2)


def test_bad_arguments():
    model = zoo.create_model("lenet")
    with pytest.raises(ValueError, match="class_names has 2 names for num_classes=3"):
        zoo.adapt(model, num_classes=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match="in_channels must be >= 1"):
        zoo.adapt(model, in_channels=0)
    with pytest.raises(TypeError, match="no reset_classifier"):
        zoo.adapt(nn.Sequential(nn.Conv2d(3, 4, 3)), num_classes=2)
