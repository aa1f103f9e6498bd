"""Every registered detector, parametrised from the registry: a training step and an eval step on a
tiny batch with an image without objects, any size and channel count, ``predict`` in the caller's
pixels; a short overfit per family that must find both boxes; and TinySSD against the course
(Section 14.7)."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

import zoo
from tests._detection_files import FAST
from zoo.detection import box_iou

DETECTORS = zoo.list_models(task="detection")


def _targets(size: int) -> list[dict[str, torch.Tensor]]:
    """Two images' targets in pixels: two objects, then none; with the boxes' masks, which
    instance segmenters train on and the others ignore."""
    boxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [size * 0.5, size * 0.4, size - 2.0, size - 1.0]])
    masks = torch.zeros(2, size, size, dtype=torch.uint8)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.long().tolist(), strict=True):
        mask[y1:y2, x1:x2] = 1
    return [
        {"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks},
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, size, size, dtype=torch.uint8),
        },
    ]


def test_registry_lists_the_detectors():
    assert "tinyssd" in DETECTORS
    info = zoo.model_info("tinyssd")
    assert info.family == "tinyssd" and info.input_size == (3, 256, 256)


@pytest.mark.parametrize("name", DETECTORS)
@pytest.mark.parametrize("in_channels,size", [(3, 64), (1, 96), (3, 77)])
def test_training_and_eval_step(name, in_channels, size):
    torch.manual_seed(0)
    kwargs = FAST.get(name, {})
    model = zoo.create_model(name, num_classes=3, in_channels=in_channels, **kwargs).train()
    images = torch.randn(2, in_channels, size, size)
    losses = model(images, _targets(size))
    assert losses and all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

    model.eval()
    with torch.no_grad():
        detections = model(list(images))  # a list of same-size images is accepted
    assert len(detections) == 2
    for detection in detections:
        assert set(detection) >= {"boxes", "scores", "labels"}
        boxes, scores, labels = detection["boxes"], detection["scores"], detection["labels"]
        assert boxes.dtype == torch.float32 and boxes.shape == (len(scores), 4)
        assert labels.dtype == torch.int64 and len(labels) == len(scores)
        assert ((labels >= 1) & (labels <= 3)).all()
        assert (boxes >= 0).all() and (boxes <= size).all()
        assert (scores[:-1] >= scores[1:]).all()  # sorted


@pytest.mark.parametrize("name", DETECTORS)
def test_training_needs_valid_targets(name):
    model = zoo.create_model(name, num_classes=2, **FAST.get(name, {})).train()
    images = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="needs targets"):
        model(images)
    bad = [{"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([3])}]
    with pytest.raises(ValueError, match=r"outside 1\.\.2"):
        model(images, bad)
    background = [{"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([0])}]
    with pytest.raises(ValueError, match="background"):
        model(images, background)


def test_tinyssd_says_how_small_an_image_may_be():
    model = zoo.create_model("tinyssd").eval()
    with pytest.raises(ValueError, match="at least 64 x 64"):
        model(torch.zeros(1, 3, 48, 64))


def test_tinyssd_is_the_course_model():
    """Section 14.7.1: a 256x256 input gives maps of 32, 16, 8, 4 and 1 pixels, 4 anchors each:
    5444 anchors; with one class, 2 class scores and 4 offsets per anchor."""
    model = zoo.create_model("tinyssd").eval()
    x = torch.zeros(32, 3, 256, 256)
    with torch.no_grad():
        maps = model.feature_maps(x)
        anchors, cls, offsets = model.forward_head(x)
    assert [m.shape[-1] for m in maps] == [32, 16, 8, 4, 1]
    assert [m.shape[1] for m in maps] == [64, 128, 128, 128, 128]
    assert (
        anchors.shape == (5444, 4) and cls.shape == (32, 5444, 2) and offsets.shape == (32, 5444, 4)
    )
    # The first scale's first pixel: sizes 0.2 and 0.272 at ratio 1, then 0.2 at ratios 2 and 1/2.
    centre = 0.5 / 32
    widths = anchors[:4, 2] - anchors[:4, 0]
    torch.testing.assert_close(
        anchors[:4, :2].add(anchors[:4, 2:]).div(2), torch.full((4, 2), centre)
    )
    torch.testing.assert_close(widths, torch.tensor([0.2, 0.272, 0.2 * 2**0.5, 0.2 / 2**0.5]))


def test_tinyssd_on_a_backbone_taps_its_feature_maps():
    model = zoo.create_model("tinyssd", num_classes=2, backbone="resnet18").eval()
    with torch.no_grad():
        maps = model.feature_maps(torch.zeros(1, 3, 128, 128))
    # resnet18's layer2, layer3, layer4 (strides 8, 16, 32), one down-sampling block, the pool.
    assert [tuple(m.shape[1:]) for m in maps] == [
        (128, 16, 16), (256, 8, 8), (512, 4, 4), (128, 2, 2), (128, 1, 1),
    ]  # fmt: skip
    assert list(model.base_net.named_children())[-1][0] == "layer4"  # no pool, no fc
    with pytest.raises(ValueError, match="feature maps"):
        zoo.create_model("tinyssd", backbone="mlp")


def test_predict_returns_boxes_in_the_callers_pixels():
    torch.manual_seed(0)
    model = zoo.create_model("tinyssd", num_classes=2)
    model.pretrained_cfg = zoo.PretrainedConfig(
        class_names=["a", "b"], mean=[0.5] * 3, std=[0.25] * 3, image_size=64
    )
    image = Image.new("RGB", (200, 100), (90, 120, 30))
    (detection,) = model.predict(image)
    boxes = detection["boxes"]
    assert len(boxes) and not model.training
    assert boxes[:, 2].max() <= 200 and boxes[:, 3].max() <= 100
    # The same detections as the model on the resized input, scaled by (200/64, 100/64).
    x = model.pretrained_cfg.transforms()(image)
    with torch.no_grad():
        (direct,) = model(x[None])
    scale = torch.tensor([200 / 64, 100 / 64, 200 / 64, 100 / 64])
    torch.testing.assert_close(boxes, direct["boxes"] * scale)


# Per family: builder arguments, image side, copies of the scene in the batch, Adam steps, rate.
# SSD's ResNet variant ends in 1x1 maps whose batch norm needs two images; YOLO's backbone BN is
# frozen, since one 64-pixel image gives 2x2 maps at stride 32 whose batch statistics are far
# from the running ones eval mode uses.
OVERFIT = {
    "tinyssd": ({}, 64, 1, 60, 3e-3),
    "ssd300_resnet50": ({"backbone": "resnet18", "size": 96}, 96, 2, 40, 1e-3),
    "yolo_resnet18": ({**FAST["yolo_resnet18"], "frozen_bn": True}, 64, 1, 80, 3e-3),
}


@pytest.mark.parametrize("name", OVERFIT)
def test_overfits_one_scene(name):
    """Two bright boxes on a dark image, a few dozen Adam steps: each must come back as the top
    detection of its class with IoU > 0.5. Anchors (default boxes, grid cells), their labelling,
    the encoding, the loss and the decoding all have to agree for that."""
    kwargs, size, copies, steps, lr = OVERFIT[name]
    torch.manual_seed(0)
    images = torch.rand(copies, 3, size, size) * 0.2
    truth = torch.tensor([[8.0, 10.0, 30.0, 36.0], [34.0, 20.0, 60.0, 52.0]]) * size / 64
    for box in truth.long():
        images[:, :, box[1] : box[3], box[0] : box[2]] += 0.8
    targets = [{"boxes": truth, "labels": torch.tensor([1, 2])}] * copies
    model = zoo.create_model(name, num_classes=2, **kwargs).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        sum(model(images, targets).values()).backward()
        optimizer.step()
    with torch.no_grad():
        (detection,) = model.eval()(images[:1])
    for label, box in zip((1, 2), truth, strict=True):
        mine = detection["labels"] == label
        assert mine.any(), f"class {label} not detected"
        best = detection["boxes"][mine][0]  # sorted by score
        assert box_iou(best[None], box[None]).item() > 0.5, (label, best, box)


def test_a_trained_detector_adapts_to_new_classes_and_channels():
    """A detection checkpoint's weights, fine-tuned on other data: create_model(weights=...)
    with another num_classes / in_channels keeps everything but the class predictors, and a grey
    image gives the boxes its RGB copy gave (zoo.adapt, Section 14.2)."""
    torch.manual_seed(0)
    source = zoo.create_model("tinyssd", num_classes=10).eval()
    target = zoo.adapt(copy.deepcopy(source), num_classes=3, in_channels=1).eval()
    assert target.num_classes == 3 and target.in_channels == 1
    assert target.cls_predictors[0].out_channels == 4 * (3 + 1)
    for name, value in source.state_dict().items():
        if not name.startswith("cls_predictors"):
            mine = target.state_dict()[name]
            assert mine.shape != value.shape or torch.equal(mine, value), name
    grey = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        _, _, rgb_offsets = source.forward_head(grey.expand(1, 3, 64, 64))
        _, _, grey_offsets = target.forward_head(grey)
    torch.testing.assert_close(grey_offsets, rgb_offsets, rtol=1e-4, atol=1e-5)
