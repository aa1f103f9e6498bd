"""zoo.count_flops: a count checked by hand, the course's compute-to-communication ordering of
AlexNet, ResNet-18 and GoogLeNet (Sections 12.5 and 12.7), and every registered classifier."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo


def _tiny() -> nn.Sequential:
    # Conv 1->4 channels, 3x3, on 8x8: a 4x6x6 map; then 144 features -> 10 classes.
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)
    )


def test_tiny_model_matches_the_hand_count():
    # Convolution: 4*6*6 outputs, each a 1*3*3 dot product, 2 FLOPs per multiply-add.
    # Linear: 144*10 multiply-adds. Biases, batch norm and ReLU are not counted by PyTorch.
    conv, linear = 2 * (4 * 6 * 6) * (1 * 3 * 3), 2 * 144 * 10
    assert conv + linear == 5472
    assert zoo.count_flops(_tiny(), (1, 8, 8)) == 5472
    assert zoo.count_flops(_tiny(), (1, 8, 8), batch_size=3) == 3 * 5472


def test_every_submodule_keeps_its_mode():
    model = _tiny().train()
    model[1].eval()  # e.g. a frozen batch norm inside a training model
    zoo.count_flops(model, (1, 8, 8))
    assert model.training and model[0].training and not model[1].training
    model.eval()
    zoo.count_flops(model, (1, 8, 8))
    assert not any(module.training for module in model.modules())


def test_module_without_input_size_names_the_fix():
    with pytest.raises(ValueError, match=r"input_size=\(3, 224, 224\)"):
        zoo.count_flops(_tiny())
    with pytest.raises(ValueError, match="batch_size"):
        zoo.count_flops(_tiny(), (1, 8, 8), batch_size=0)


def test_registry_name_uses_the_registered_input_size():
    # LeNet's registered input is 1x28x28 (Section 7.6): conv 6@5x5 pad 2 -> 6x28x28, pool,
    # conv 16@5x5 -> 16x10x10, pool, then 400 -> 120 -> 84 -> 10.
    lenet = 2 * (6 * 28 * 28 * 25 + 16 * 10 * 10 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10)
    assert zoo.model_info("lenet").input_size == (1, 28, 28)
    assert zoo.count_flops("lenet") == lenet
    # An explicit size wins: four times the pixels, about four times the work.
    small, large = (zoo.count_flops("resnet18", (3, s, s)) for s in (32, 64))
    assert 3.5 * small < large < 4.5 * small


def test_meta_device_counts_what_real_weights_count():
    with torch.device("meta"):
        meta = zoo.create_model("resnet18")
    assert zoo.count_flops(meta, (3, 64, 64)) == zoo.count_flops("resnet18", (3, 64, 64))


def test_flops_per_parameter_order_googlenet_resnet18_alexnet():
    """Data parallelism pays off when a device computes much per parameter it must synchronise
    (d2l Sections 12.5 and 12.7): GoogLeNet does the most work per weight, AlexNet, whose
    parameters sit in its dense layers, the least."""
    ratios = {}
    for name in ("googlenet", "resnet18", "alexnet"):
        # Shapes alone decide the count: the meta device skips 60M random initialisations.
        with torch.device("meta"):
            model = zoo.create_model(name)
        params = sum(p.numel() for p in model.parameters())
        ratios[name] = zoo.count_flops(model, (3, 224, 224)) / params
    # Measured: GoogLeNet 452, ResNet-18 310, AlexNet 40 FLOPs per parameter (3x224x224).
    assert ratios["googlenet"] > ratios["resnet18"] > 5 * ratios["alexnet"], ratios


@pytest.mark.parametrize("name", zoo.list_models(task="classification"))
def test_every_classifier_counts_at_its_registered_size(name):
    # On the meta device (equal counts: test above): for real, the 23 forward passes at 224x224
    # (~300 GFLOPs, VGG's 130M-parameter initialisations) took 10-20 s of CPU.
    size = zoo.model_info(name).input_size
    with torch.device("meta"):
        model = zoo.create_model(name)
    flops = zoo.count_flops(model, size)
    # Every input value enters at least one multiply-add of the first layer.
    assert flops >= 2 * torch.Size(size).numel(), (name, flops)
