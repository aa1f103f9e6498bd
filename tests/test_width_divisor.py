"""``width_divisor`` narrows the course's ImageNet-era networks, as VGG's does (Section 8.2.3):
every convolution's channels (and AlexNet's dense 4096) divided, the default leaving the
published network, its parameter count and its torchvision weights as they are."""

from __future__ import annotations

import pytest
import torch

import zoo

BUILDERS = ["alexnet", "nin", "googlenet", "resnet18", "resnet34", "resnet50", "resnet101"]
BUILDERS += ["resnet152"]
# The smallest input each family takes: AlexNet's and NiN's valid 11x11/4 convolution and three
# 3x3/2 max-pools need 65 and 67 pixels; GoogLeNet and ResNet pad everything, so 32 is where
# their stride-32 map is 1x1.
MIN_SIZE = {"alexnet": 65, "nin": 67, "googlenet": 32}


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _min_size(name: str) -> int:
    return MIN_SIZE.get(name, 32)


@pytest.mark.parametrize("width_divisor", [4, 8])
@pytest.mark.parametrize("name", BUILDERS)
def test_narrow_network_trains_on_its_smallest_input(name, width_divisor):
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=10, in_channels=1, width_divisor=width_divisor)
    x = torch.randn(2, 1, _min_size(name), _min_size(name))
    logits = model(x)
    assert logits.shape == (2, 10)
    logits.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("width_divisor", [4, 8])
@pytest.mark.parametrize("name", BUILDERS)
def test_parameters_and_feature_channels_shrink(name, width_divisor):
    full = zoo.create_model(name, num_classes=10, in_channels=1)
    narrow = zoo.create_model(name, num_classes=10, in_channels=1, width_divisor=width_divisor)
    # A convolution's weight loses both its channel counts (1 / d^2), biases and BN one (1 / d);
    # with a 10-class head the weights dominate, so the whole network shrinks nearly d^2 times.
    assert _num_params(narrow) * width_divisor**2 / 2 <= _num_params(full)
    assert [f.name for f in narrow.feature_info] == [f.name for f in full.feature_info]
    pairs = [
        (wide.channels, thin.channels)
        for wide, thin in zip(full.feature_info, narrow.feature_info, strict=True)
    ]
    # AlexNet's features are its hidden dense layer's, whose 4096 are divided too.
    pairs.append((full.num_features, narrow.num_features))
    for wide, thin in pairs:
        # GoogLeNet's Inception outputs concatenate four divided paths: up to 3 channels fewer.
        assert wide // width_divisor - 3 <= thin <= wide // width_divisor
    assert [f.stride for f in narrow.feature_info] == [f.stride for f in full.feature_info]
    narrow.eval()
    size = _min_size(name)
    with torch.no_grad():
        maps = narrow.forward_intermediates(torch.randn(1, 1, size, size))
    assert [m.shape[1] for m in maps.values()] == [f.channels for f in narrow.feature_info]


@pytest.mark.parametrize("name", BUILDERS)
def test_narrow_network_adapts_and_resets_its_classifier(name):
    model = zoo.create_model(name, num_classes=10, in_channels=1, width_divisor=8).eval()
    size = _min_size(name)
    zoo.adapt(model, num_classes=3, in_channels=3)
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 3)
        model.reset_classifier(5)
        assert model(torch.randn(2, 3, size, size)).shape == (2, 5)
        model.reset_classifier(0)
        assert model(torch.randn(2, 3, size, size)).shape == (2, model.num_features)


@pytest.mark.parametrize("name", BUILDERS)
def test_default_width_is_the_published_network(name):
    info = zoo.model_info(name)
    assert _num_params(zoo.create_model(name)) == info.num_params
    assert _num_params(zoo.create_model(name, width_divisor=1)) == info.num_params


@pytest.mark.parametrize("width_divisor", [0, -2])
@pytest.mark.parametrize("name", BUILDERS)
def test_width_divisor_below_one_is_refused(name, width_divisor):
    with pytest.raises(ValueError, match=f"width_divisor must be >= 1, got {width_divisor}"):
        zoo.create_model(name, width_divisor=width_divisor)


def test_widths_never_fall_below_one():
    model = zoo.create_model("googlenet", num_classes=10, in_channels=1, width_divisor=1024)
    assert min(f.channels for f in model.feature_info) >= 1
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_alexnet_needs_65_pixels():
    """The course's AlexNet pads its first convolution by 1 (torchvision's by 2, which takes 63)."""
    model = zoo.create_model("alexnet", num_classes=10, in_channels=1, width_divisor=8).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 65, 65)).shape == (1, 10)
        with pytest.raises(RuntimeError):
            model(torch.randn(1, 1, 64, 64))


def test_torchvision_variants_keep_their_width():
    for name in ("alexnet_torchvision", "googlenet_torchvision"):
        with pytest.raises(TypeError):
            zoo.create_model(name, width_divisor=4)


@pytest.mark.parametrize("name", ["resnet18", "vgg11"])
def test_narrow_network_refuses_torchvision_weights_before_downloading(name, serve_torchvision):
    """ImageNet weights fit only the published widths: asked for a narrowed network, they are
    refused with the reason, before anything is fetched."""
    calls = serve_torchvision()
    with pytest.raises(ValueError, match=f"width_divisor=4 narrows '{name}', but torchvision's"):
        zoo.create_model(name, weights="torchvision", width_divisor=4)
    assert not calls
    model = zoo.create_model(name, weights="torchvision", width_divisor=1)
    assert _num_params(model) == zoo.model_info(name).num_params
