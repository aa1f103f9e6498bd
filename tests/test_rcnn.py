"""The R-CNN family (Section 14.8): torchvision's Faster and Mask R-CNN on zoo backbones give
torchvision's outputs from torchvision's weights, freeze and train the layers torchvision does,
fine-tune to new classes and channels, and say what Mask R-CNN needs."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import get_weight

import zoo
from zoo.backbones import freeze_batch_norm
from zoo.detection.rcnn import IMAGENET_MEAN_STD, FasterRCNN

SMALL = {"min_size": 160, "max_size": 224}  # torchvision resizes inside; small keeps CPUs quick
MEAN, STD = (torch.tensor(v)[:, None, None] for v in IMAGENET_MEAN_STD)


def _torchvision_detector(name: str) -> nn.Module:
    """torchvision's model as its COCO weights are laid out (frozen BN, three trainable stages),
    with random weights and random BN statistics."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(
        name, weights=None, weights_backbone=None, num_classes=91, **SMALL
    )
    generator = torch.Generator().manual_seed(1)
    for module in model.backbone.body.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.uniform_(-0.5, 0.5, generator=generator)
    freeze_batch_norm(model.backbone.body)
    # What torchvision's builder does with weights (without, it trains every stage).
    for key, parameter in model.backbone.body.named_parameters():
        parameter.requires_grad_(key.startswith(("layer2", "layer3", "layer4")))
    return model.eval()


@pytest.mark.parametrize("name", ["fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn"])
def test_torchvision_weights_give_torchvision_detections(name, serve_torchvision):
    reference = _torchvision_detector(name)
    calls = serve_torchvision(reference.state_dict())
    model = zoo.create_model(name, weights="torchvision", **SMALL).eval()

    weights = get_weight(zoo.model_info(name).torchvision_weights)
    assert calls and calls[0][0] is weights
    assert sum(p.numel() for p in model.parameters()) == weights.meta["num_params"]
    cfg = model.pretrained_cfg
    assert len(cfg.class_names) == 90 and cfg.class_names[0] == "person"  # no background
    assert (cfg.mean, cfg.std) == tuple(list(v) for v in IMAGENET_MEAN_STD)
    assert cfg.image_size is None  # the model resizes inside, as torchvision's does

    image = torch.rand(3, 150, 200, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        (theirs,) = reference([image])
        (ours,) = model([(image - MEAN) / STD])  # the zoo normalises outside the model
        (predicted,) = model.predict((image * 255).round().byte())
    assert len(theirs["boxes"]) > 0 and set(ours) == set(theirs)
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-5)
    assert predicted["boxes"].shape[1] == 4 and (predicted["boxes"][:, 2] <= 200).all()

    # The layers torchvision trains from its weights are the ones the zoo model trains.
    key_map = zoo.model_info(name).torchvision_key_map
    trained = {key_map(k) for k, p in reference.named_parameters() if p.requires_grad}
    assert trained == {k for k, p in model.named_parameters() if p.requires_grad}


def test_faster_rcnn_without_fpn_uses_the_stride_16_map():
    model = zoo.create_model("fasterrcnn_resnet50", num_classes=4, backbone="resnet18", **SMALL)
    maps = model.backbone(torch.zeros(1, 3, 160, 192))
    assert list(maps) == ["0"] and maps["0"].shape == (1, 256, 10, 12)  # resnet18's layer3
    assert model.rpn.head.cls_logits.out_channels == 15  # 5 sizes x 3 ratios per position
    with pytest.raises(ValueError, match=r"no feature map at stride \[8, 16, 32\]"):
        zoo.create_model("fasterrcnn_resnet50_fpn", backbone="lenet")


def test_trainable_layers_and_frozen_bn_follow_torchvision():
    model = FasterRCNN(3, backbone="resnet18", frozen_bn=True, trainable_backbone_layers=2)
    body = model.backbone.body
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    frozen = {name.split(".")[0] for name, p in body.named_parameters() if not p.requires_grad}
    trained = {name.split(".")[0] for name, p in body.named_parameters() if p.requires_grad}
    assert frozen == {"stem", "layer1", "layer2"} and trained == {"layer3", "layer4"}
    with pytest.raises(ValueError, match="outside 0..5"):
        FasterRCNN(3, backbone="resnet18", trainable_backbone_layers=6)


def test_mask_rcnn_needs_masks_and_reports_them():
    torch.manual_seed(0)
    model = zoo.create_model(
        "maskrcnn_resnet50_fpn", num_classes=2, backbone="resnet18", mask_channels=16, **SMALL
    )
    assert model.roi_heads.mask_predictor.mask_fcn_logits.in_channels == 16
    images = torch.randn(2, 3, 64, 80)
    boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0]])
    targets = [
        {"boxes": boxes, "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    with pytest.raises(ValueError, match="masks: true"):
        model(images, targets)
    mask = torch.zeros(1, 64, 80, dtype=torch.uint8)
    mask[0, 6:50, 4:40] = 1
    targets[0]["masks"], targets[1]["masks"] = mask, torch.zeros(0, 64, 80, dtype=torch.uint8)
    losses = model(images, targets)
    assert {"loss_mask", "loss_classifier", "loss_objectness"} <= set(losses)
    model.eval()
    with torch.no_grad():
        detections = model(images)
    for detection in detections:
        assert detection["masks"].shape == (len(detection["boxes"]), 1, 64, 80)


def test_new_classes_and_grey_images_keep_the_rest():
    """zoo.adapt on a trained R-CNN (Section 14.2): new box (and mask) predictors, the backbone,
    RPN and heads kept, and a grey image detected as its RGB copy is."""
    torch.manual_seed(0)
    source = zoo.create_model("maskrcnn_resnet50_fpn", num_classes=5, backbone="resnet18", **SMALL)
    target = zoo.adapt(copy.deepcopy(source), num_classes=2, in_channels=1).eval()
    heads = target.roi_heads
    assert heads.box_predictor.cls_score.out_features == 3
    assert heads.mask_predictor.mask_fcn_logits.out_channels == 3
    new = ("roi_heads.box_predictor", "roi_heads.mask_predictor", "backbone.body.stem.0.0")
    for key, value in source.state_dict().items():
        if not key.startswith(new):
            assert torch.equal(target.state_dict()[key], value), key
    grey = torch.rand(1, 1, 96, 96)
    source.eval()
    with torch.no_grad():
        rgb_maps = source.backbone(grey.expand(1, 3, 96, 96))
        grey_maps = target.backbone(grey)
    for key in rgb_maps:
        torch.testing.assert_close(grey_maps[key], rgb_maps[key], rtol=1e-4, atol=1e-4)


def test_fine_tuning_from_torchvision_weights_keeps_all_but_the_predictor(serve_torchvision):
    """The course's fine-tuning (Section 14.2) from COCO weights: ObjectDetector(weights=...)
    with the data's three classes loads every COCO weight, then gives the box predictor three
    classes; the checkpoint's record rebuilds the same network (frozen BN included)."""
    from tasks import ObjectDetector

    reference = _torchvision_detector("fasterrcnn_resnet50_fpn")
    serve_torchvision(reference.state_dict())
    task = ObjectDetector(
        "fasterrcnn_resnet50_fpn", 3, weights="torchvision", model_kwargs=SMALL, log_images=0
    )
    model = task.model
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # 3 classes + background
    key_map = zoo.model_info("fasterrcnn_resnet50_fpn").torchvision_key_map
    ours = model.state_dict()
    for key, value in reference.state_dict().items():
        if not key.startswith("roi_heads.box_predictor"):
            assert torch.equal(ours[key_map(key)], value), key
    rebuilt = zoo.create_model("fasterrcnn_resnet50_fpn", **task.zoo_record()["model_kwargs"])
    assert rebuilt.state_dict().keys() == ours.keys()
