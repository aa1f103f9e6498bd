"""SSD (Liu et al., 2016; Section 14.7) on zoo backbones: torchvision's SSD300-VGG16 state dict gives
torchvision's head outputs and detections, through a file and through ``weights="torchvision"``
offline; the paper's map sizes; any size and backbone for the ResNet variant; fine-tuning
surface (new class head, grey input), frozen BN and trainable stages (its overfit test is with
the other families' in test_detection_models.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torchvision
from skimage import data as skimage_data
from torch import nn
from torchvision.models import get_weight
from torchvision.ops import FrozenBatchNorm2d

import zoo
from zoo.detection.ssd import SSD300_MEAN_STD

TV_WEIGHTS = get_weight("SSD300_VGG16_Weights.COCO_V1")
MEAN, STD = (torch.tensor(stats).view(3, 1, 1) for stats in SSD300_MEAN_STD)


def _heads_and_detections(model: nn.Module, image: torch.Tensor) -> tuple[dict, dict]:
    """The head's raw outputs (via a hook) and the detections, in eval mode."""
    seen = {}
    hook = model.head.register_forward_hook(lambda module, args, out: seen.update(out))
    try:
        with torch.no_grad():
            (detection,) = model.eval()([image])
    finally:
        hook.remove()
    return seen, detection


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """torchvision's SSD300 with seeded random weights (biases and the conv4_3 scale drawn too,
    so a swapped key would show), saved where torchvision's cache keeps its COCO file; its
    outputs on a photo of a non-square size (0-1 pixels, torchvision's input)."""
    torch.manual_seed(0)
    model = torchvision.models.detection.ssd300_vgg16(
        weights=None, weights_backbone=None, num_classes=91
    )
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or name.endswith("scale_weight"):
                low, high = (10.0, 30.0) if name.endswith("scale_weight") else (-0.1, 0.1)
                param.copy_(torch.empty_like(param).uniform_(low, high, generator=generator))
    torch_home = tmp_path_factory.mktemp("torch_home")
    file = Path(torch_home, "hub", "checkpoints", Path(TV_WEIGHTS.url).name)
    file.parent.mkdir(parents=True)
    torch.save(model.state_dict(), file)
    image = torch.from_numpy(skimage_data.astronaut()[:240, :320]).permute(2, 0, 1) / 255
    heads, detection = _heads_and_detections(model, image)
    return {"torch_home": torch_home, "file": file, "image": image, "heads": heads,
            "detection": detection}  # fmt: skip


def _assert_same_outputs(model: nn.Module, reference: dict) -> None:
    heads, detection = _heads_and_detections(model, (reference["image"] - MEAN) / STD)
    for key in ("cls_logits", "bbox_regression"):
        torch.testing.assert_close(heads[key], reference["heads"][key], rtol=1e-5, atol=1e-5)
    assert len(detection["boxes"]) == len(reference["detection"]["boxes"]) > 0
    for key in ("boxes", "scores"):
        torch.testing.assert_close(
            detection[key], reference["detection"][key], rtol=1e-5, atol=1e-5
        )
    assert torch.equal(detection["labels"], reference["detection"]["labels"])
    # Boxes in the input's pixels (320 x 240), not the 300 x 300 the network saw.
    assert detection["boxes"][:, 0::2].max() > 300 and detection["boxes"][:, 1::2].max() <= 240


def test_torchvision_state_dict_file_gives_torchvision_outputs(reference):
    """A torchvision-layout .pth through the real loading path (the registry's key map): the
    same head outputs and detections as torchvision's SSD300 on the same photo, normalised
    outside the zoo model with torchvision's constants."""
    model = zoo.create_model("ssd300_vgg16", weights=str(reference["file"]))
    assert model.num_classes == 90
    assert sum(p.numel() for p in model.parameters()) == TV_WEIGHTS.meta["num_params"]
    _assert_same_outputs(model, reference)


def test_torchvision_weights_offline(reference, monkeypatch):
    """weights="torchvision" through torchvision's own cache lookup under $TORCH_HOME: COCO's 90
    class names without the background, SSD300's normalisation, torchvision's outputs."""
    monkeypatch.setenv("TORCH_HOME", str(reference["torch_home"]))
    model = zoo.create_model("ssd300_vgg16", weights="torchvision")
    cfg = model.pretrained_cfg
    assert cfg.class_names == TV_WEIGHTS.meta["categories"][1:] and len(cfg.class_names) == 90
    assert "__background__" not in cfg.class_names and cfg.class_names[0] == "person"
    assert cfg.mean == pytest.approx([0.48235, 0.45882, 0.40784])
    assert cfg.std == pytest.approx([1 / 255] * 3)
    assert cfg.source == "torchvision:SSD300_VGG16_Weights.COCO_V1"
    _assert_same_outputs(model, reference)
    # Fine-tuning from them: 3 classes, the backbone and box predictors kept.
    adapted = zoo.create_model("ssd300_vgg16", weights="torchvision", num_classes=3)
    assert adapted.num_classes == 3 and adapted.pretrained_cfg.class_names is None
    torch.testing.assert_close(
        adapted.head.regression_head.module_list[0].weight,
        model.head.regression_head.module_list[0].weight,
    )


def test_map_sizes_at_300():
    """The paper's Fig. 2 for VGG (38, 19, 10, 5, 3, 1) and its 8732 default boxes; 38, 19, 10,
    then padded extra blocks for the ResNet variant."""
    x = torch.zeros(1, 3, 300, 300)
    vgg = zoo.create_model("ssd300_vgg16", num_classes=2).eval()
    resnet = zoo.create_model("ssd300_resnet50", num_classes=2, backbone="resnet18").eval()
    with torch.no_grad():
        vgg_maps = list(vgg.backbone(x).values())
        resnet_maps = list(resnet.backbone(x).values())
        heads = vgg.head(vgg_maps)
    assert [tuple(m.shape[1:]) for m in vgg_maps] == [
        (512, 38, 38), (1024, 19, 19), (512, 10, 10), (256, 5, 5), (256, 3, 3), (256, 1, 1),
    ]  # fmt: skip
    assert heads["cls_logits"].shape == (1, 8732, 3)
    assert heads["bbox_regression"].shape == (1, 8732, 4)
    assert [tuple(m.shape[1:]) for m in resnet_maps] == [
        (128, 38, 38), (256, 19, 19), (512, 10, 10), (512, 5, 5), (256, 3, 3), (256, 2, 2),
    ]  # fmt: skip
    assert [name for name, _ in resnet.backbone.body.named_children()][-1] == "layer4"
    # conv4_3 is L2-normalised per pixel, then scaled by 20 per channel (section 3.1).
    with torch.no_grad():
        conv4_3 = vgg.backbone.features(torch.rand(1, 3, 300, 300))
        first = list(vgg.backbone(torch.rand(1, 3, 300, 300)).values())[0]
    assert conv4_3.shape[-1] == 38 and first.norm(dim=1).max() <= 20 + 1e-3


@pytest.mark.parametrize("size", [64, (64, 128)])
def test_resnet18_ssd_trains_and_detects_at_small_sizes(size):
    torch.manual_seed(0)
    model = zoo.create_model("ssd300_resnet50", num_classes=2, backbone="resnet18", size=size)
    height, width = (size, size) if isinstance(size, int) else size
    images = torch.randn(2, 3, 50, 90)  # resized to `size` inside, boxes in these pixels
    targets = [
        {"boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    losses = model.train()(images, targets)
    assert set(losses) == {"bbox_regression", "classification"}
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters())
    batch, _ = model.transform(list(images))
    assert batch.tensors.shape[-2:] == (height, width)  # size is (height, width)
    with torch.no_grad():
        detections = model.eval()(images)
    boxes = detections[0]["boxes"]
    assert len(boxes) and (boxes[:, 0::2] <= 90).all() and (boxes[:, 1::2] <= 50).all()


def test_reset_classifier_and_adapt_keep_all_but_the_class_head():
    torch.manual_seed(0)
    source = zoo.create_model("ssd300_resnet50", num_classes=5, backbone="resnet18", size=64)
    source.eval()
    state = source.state_dict()
    assert source.num_classes_in(state) == 5
    target = zoo.adapt(copy.deepcopy(source), num_classes=3, in_channels=1).eval()
    assert (target.num_classes, target.in_channels) == (3, 1)
    assert target.get_classifier() is target.head.classification_head
    # 4 default boxes on the first map, 3 classes and background each.
    assert target.get_classifier().module_list[0].out_channels == 4 * 4
    assert target.num_classes_in(target.state_dict()) == 3
    for name, value in state.items():
        mine = target.state_dict()[name]
        if name.startswith("head.classification_head"):
            assert mine.shape != value.shape, name
        elif mine.shape == value.shape:
            assert torch.equal(mine, value), name
    grey = torch.rand(1, 1, 64, 64)
    captured = {}
    for model, x in ((source, grey.expand(1, 3, 64, 64)), (target, grey)):
        outputs, _ = _heads_and_detections(model, x[0])
        captured[model is target] = outputs["bbox_regression"]
    torch.testing.assert_close(captured[True], captured[False], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="at least 1"):
        target.reset_classifier(0)


def test_frozen_bn_and_trainable_stages():
    model = zoo.create_model(
        "ssd300_resnet50", backbone="resnet18", frozen_bn=True, trainable_backbone_layers=2
    )
    body = model.backbone.body
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in body.modules()) == 20  # all of resnet18's
    # The extra blocks are new: their batch norm learns.
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.backbone.extra.modules()) == 6
    trainable = {name.split(".")[0] for name, p in body.named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "layer4"}
    assert all(p.requires_grad for p in model.head.parameters())

    vgg = zoo.create_model("ssd300_vgg16", trainable_backbone_layers=4)  # torchvision's default
    frozen = {name for name, p in vgg.backbone.named_parameters() if not p.requires_grad}
    assert frozen == {f"features.block1.{i}.0.{p}" for i in (0, 1) for p in ("weight", "bias")}
    with pytest.raises(ValueError, match=r"trainable_backbone_layers=6 is outside 0\.\.5"):
        zoo.create_model("ssd300_vgg16", trainable_backbone_layers=6)


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"no feature map at stride \[8, 16, 32\].*\[2, 4\]"):
        zoo.create_model("ssd300_resnet50", backbone="lenet")
    with pytest.raises(ValueError, match="lists no feature maps"):
        zoo.create_model("ssd300_resnet50", backbone="mlp")
    with pytest.raises(ValueError, match="size is fixed"):
        zoo.create_model("ssd300_vgg16", size=(512, 512))
    with pytest.raises(ValueError, match=r"size=\(64, 64, 64\)"):
        zoo.create_model("ssd300_resnet50", backbone="resnet18", size=(64, 64, 64))
    model = zoo.create_model("ssd300_resnet50", backbone="resnet18", size=64, num_classes=2)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model.eval()(torch.zeros(3, 64, 64))
