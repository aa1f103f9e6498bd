"""Segmentation models (Sections 14.10-14.11): the transposed convolution as the course derives it,
every registered segmenter from the registry, and torchvision parity for FCN and DeepLabV3."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import zoo
from zoo.layers import bilinear_kernel, bilinear_upsampling, conv_transpose_output_size
from zoo.segmentation import Segmenter

SEGMENTERS = zoo.list_models(task="segmentation")
# Cheap builder arguments per model: the registry test checks shapes, not capacity.
FAST = {"deeplabv3_resnet50": {"backbone": "resnet18", "atrous_rates": (1, 2, 3)}}


# -- transposed convolution (Section 14.10) -------------------------------------------------------


@pytest.mark.parametrize(
    "kernel_size, stride, padding", [(2, 2, 0), (3, 1, 1), (4, 2, 1), (5, 3, 0)]
)
def test_transposed_convolution_output_size_is_the_course_formula(kernel_size, stride, padding):
    layer = nn.ConvTranspose2d(1, 1, kernel_size, stride=stride, padding=padding)
    for size in (1, 4, 7):
        out = layer(torch.zeros(1, 1, size, size)).shape[-1]
        assert out == conv_transpose_output_size(size, kernel_size, stride, padding)
        assert out == stride * size + kernel_size - 2 * padding - stride


@pytest.mark.parametrize("padding", [0, 1, 2, 5])
def test_kernel_of_twice_padding_plus_stride_doubles_the_size(padding):
    stride = 2
    layer = nn.ConvTranspose2d(3, 3, 2 * padding + stride, stride=stride, padding=padding)
    assert layer(torch.zeros(1, 3, 9, 13)).shape[-2:] == (18, 26)


def test_transposed_convolution_is_the_course_example():
    # Section 14.10.1: X = [[0, 1], [2, 3]], K = [[0, 1], [2, 3]], stride 1.
    layer = nn.ConvTranspose2d(1, 1, 2, bias=False)
    layer.weight.data = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    out = layer(torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]]))
    assert out[0, 0].tolist() == [[0, 0, 1], [0, 4, 6], [4, 12, 9]]


@pytest.mark.parametrize("factor", [2, 3, 8, 32])
def test_bilinear_kernel_upsamples_as_bilinear_interpolation(factor):
    image = torch.rand(1, 3, 7, 5)
    upsampled = bilinear_upsampling(3, factor)(image)
    expected = F.interpolate(image, scale_factor=factor, mode="bilinear", align_corners=False)
    assert upsampled.shape == expected.shape
    inner = (..., slice(factor, -factor), slice(factor, -factor))  # zero padding at the border
    torch.testing.assert_close(upsampled[inner], expected[inner], atol=1e-5, rtol=0)


def test_bilinear_kernel_values():
    weight = bilinear_kernel(2, 2, 4)  # factor 2, centre 1.5: taps 0.25, 0.75, 0.75, 0.25
    tent = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(weight[0, 0], tent[:, None] * tent[None, :])
    assert weight[0, 1].abs().sum() == 0 and weight[1, 0].abs().sum() == 0
    odd = bilinear_kernel(1, 1, 3)[0, 0]  # factor 2, centre 1: 0.5, 1, 0.5
    torch.testing.assert_close(odd[1], torch.tensor([0.5, 1.0, 0.5]))
    with pytest.raises(ValueError, match="must all be positive"):
        bilinear_kernel(0, 1, 4)


# -- every registered segmenter --------------------------------------------------------------------


@pytest.mark.parametrize("name", SEGMENTERS)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_is_input_sized_at_odd_sizes(name, in_channels):
    torch.manual_seed(0)
    model = zoo.create_model(
        name, num_classes=3, in_channels=in_channels, aux_loss=True, **FAST.get(name, {})
    )
    assert isinstance(model, Segmenter) and model.num_classes == 3
    for height, width in ((33, 47), (64, 64), (77, 50)):
        images = torch.randn(2, in_channels, height, width)
        outputs = model(images)
        assert set(outputs) == {"out", "aux"}
        for scores in outputs.values():
            assert scores.shape == (2, 3, height, width)
            assert torch.isfinite(scores).all()
    (outputs["out"].sum() + outputs["aux"].sum()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    assert set(model(torch.randn(1, in_channels, 41, 39))) == {"out", "aux"}


@pytest.mark.parametrize("name", SEGMENTERS)
def test_reset_classifier_and_adapt_keep_the_backbone(name):
    model = zoo.create_model(name, num_classes=5, aux_loss=True, **FAST.get(name, {}))
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    zoo.adapt(model, num_classes=2, in_channels=1)
    assert model.num_classes == 2 and model.in_channels == 1
    assert model.get_classifier().out_channels == 2
    for key, value in model.backbone.state_dict().items():
        if "stem.0.0" not in key:  # the first conv was adapted to one channel
            assert torch.equal(value, backbone[key]), key
    assert model(torch.randn(2, 1, 40, 40))["aux"].shape == (2, 2, 40, 40)


def test_course_fcn_is_the_course_s():
    model = zoo.create_model("fcn_resnet18", num_classes=21)
    assert isinstance(model.upsample, nn.ConvTranspose2d)
    assert model.upsample.kernel_size == (64, 64) and model.upsample.stride == (32, 32)
    assert model.upsample.padding == (16, 16)
    torch.testing.assert_close(model.upsample.weight.data, bilinear_kernel(21, 21, 64))
    assert isinstance(model.get_classifier(), nn.Conv2d) and model.get_classifier().kernel_size == (
        1,
        1,
    )
    # The backbone is ResNet-18 without its global pooling and dense layer: 1/32 of the input.
    assert model.backbone(torch.zeros(1, 3, 320, 480))["0"].shape == (1, 512, 10, 15)
    dilated = zoo.create_model("fcn_resnet18_os8")
    assert dilated.backbone(torch.zeros(1, 3, 64, 64))["0"].shape == (1, 512, 8, 8)
    assert dilated.upsample.stride == (8, 8)


def test_deeplabv3_upsamples_by_interpolation_or_a_learnt_transposed_convolution():
    small = {"backbone": "resnet18", "atrous_rates": (1, 2, 3), "num_classes": 4}
    assert zoo.create_model("deeplabv3_resnet50", **small).upsample is None  # the paper's
    model = zoo.create_model("deeplabv3_resnet50", upsampling="transposed", **small)
    torch.testing.assert_close(model.upsample.weight.data, bilinear_kernel(4, 4, 16))
    assert model(torch.randn(2, 3, 61, 70))["out"].shape == (2, 4, 61, 70)
    model.reset_classifier(6)
    assert model.upsample.in_channels == 6 and model(torch.randn(2, 3, 40, 40))["out"].shape[1] == 6


def test_adapt_copies_the_rows_of_shared_classes():
    model = zoo.create_model("fcn_resnet18", num_classes=3)
    model.pretrained_cfg = zoo.PretrainedConfig(class_names=["background", "cat", "dog"])
    old = model.get_classifier().weight.detach().clone()
    zoo.adapt(model, class_names=["background", "dog", "bird"])
    new = model.get_classifier().weight
    assert torch.equal(new[0], old[0]) and torch.equal(new[1], old[2])
    assert not torch.equal(new[2], old[1])


def test_bare_state_dict_loads_at_its_own_number_of_classes(tmp_path):
    trained = zoo.create_model("fcn_resnet18_os8", num_classes=4)
    path = tmp_path / "fcn.pth"
    torch.save(trained.state_dict(), path)
    loaded = zoo.create_model("fcn_resnet18_os8", weights=str(path))
    assert loaded.num_classes == 4
    adapted = zoo.create_model("fcn_resnet18_os8", weights=str(path), num_classes=6)
    assert adapted.num_classes == 6


def test_dilated_resnet_matches_torchvision():
    torch.manual_seed(0)
    dilation = (False, True, True)
    reference = torchvision.models.resnet50(replace_stride_with_dilation=list(dilation)).eval()
    model = zoo.create_model("resnet50", replace_stride_with_dilation=dilation).eval()
    state = {
        zoo.model_info("resnet50").torchvision_key_map(k): v
        for k, v in reference.state_dict().items()
    }
    model.load_state_dict(state)
    images = torch.randn(1, 3, 71, 57)
    torch.testing.assert_close(model(images), reference(images), atol=1e-5, rtol=0)
    assert [info.stride for info in model.feature_info] == [4, 8, 8, 8]


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="output_stride=4 must be one of 8, 16 or 32"):
        zoo.create_model("fcn_resnet18", output_stride=4)
    with pytest.raises(ValueError, match="'vgg11' is not a ResNet"):
        zoo.create_model("fcn_resnet18_os8", backbone="vgg11")
    with pytest.raises(ValueError, match="head='dense'"):
        zoo.create_model("fcn_resnet18", head="dense")
    with pytest.raises(ValueError, match="three positive dilation rates"):
        zoo.create_model("deeplabv3_resnet50", atrous_rates=(6, 12))
    with pytest.raises(ValueError, match="at least 2"):
        zoo.create_model("fcn_resnet18", num_classes=1)
    with pytest.raises(ValueError, match="needs 3 booleans"):
        zoo.create_model("resnet18", replace_stride_with_dilation=(True,))


# -- torchvision parity ----------------------------------------------------------------------------


def _random_torchvision(name: str) -> nn.Module:
    """torchvision's model with random weights and random BN statistics, as trained weights have."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(
        name, weights=None, weights_backbone=None, num_classes=21, aux_loss=True
    )
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("name", ["fcn_resnet50", "deeplabv3_resnet50"])
def test_torchvision_weights_give_torchvision_s_outputs(name, serve_torchvision):
    reference = _random_torchvision(name)
    calls = serve_torchvision(reference.state_dict())
    model = zoo.create_model(name, weights="torchvision").eval()
    assert calls and "COCO_WITH_VOC_LABELS_V1" in str(calls[0][0])
    cfg = model.pretrained_cfg
    assert len(cfg.class_names) == 21 and cfg.class_names[0] == "__background__"
    assert cfg.mean == pytest.approx([0.485, 0.456, 0.406]) and cfg.resize_size == 520
    assert model.aux_classifier is not None  # the weights bring their auxiliary head
    expected_params = torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]
    assert sum(p.numel() for p in model.parameters()) == expected_params
    images = torch.randn(2, 3, 75, 61)
    with torch.no_grad():
        ours, theirs = model(images), reference(images)
    for key in ("out", "aux"):
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-5, rtol=0)
    # Fine-tuning from those weights: everything but the class layers is kept.
    adapted = zoo.create_model(name, weights="torchvision", num_classes=3)
    assert adapted.num_classes == 3
    torch.testing.assert_close(adapted.backbone.state_dict(), model.backbone.state_dict())


def test_torchvision_layout_file_loads(tmp_path):
    reference = _random_torchvision("fcn_resnet50")
    path = tmp_path / "fcn_resnet50_coco.pth"
    torch.save(reference.state_dict(), path)
    model = zoo.create_model("fcn_resnet50", weights=str(path), aux_loss=True).eval()
    images = torch.randn(1, 3, 40, 52)
    with torch.no_grad():
        torch.testing.assert_close(
            model(images)["out"], reference(images)["out"], atol=1e-5, rtol=0
        )
