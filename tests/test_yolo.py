"""YOLO (zoo/detection/yolo.py): YOLOv5's decoding against its encoding, the assignment on hand-made
boxes, a prediction built from the assignment that has no loss, padding, fine-tuning (its overfit
test is with the other families' in test_detection_models.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torchvision.ops import box_convert

import zoo
from zoo.detection.yolo import (
    STRIDES,
    YOLO,
    YOLOV3_ANCHORS,
    assign_targets,
    decode_boxes,
    encode_boxes,
)

# A slim neck and head: the tests exercise the logic, not the capacity.
SLIM = {"neck_channels": 32, "head_depth": 1}


def _model(num_classes: int = 3, **kwargs) -> YOLO:
    return zoo.create_model("yolo_resnet18", num_classes=num_classes, **(SLIM | kwargs))


def test_registered_with_yolov3_anchors_scaled_to_each_image_or_fixed():
    info = zoo.model_info("yolo_resnet18")
    assert info.family == "yolo" and info.input_size == (3, 416, 416)
    model = _model()
    # A 416-pixel side gives YOLOv3's anchors in pixels; the longer side sets the scale.
    anchors = model.anchors_for(torch.tensor([[300, 416], [64, 32]]))
    assert anchors.shape == (2, 3, 3, 2)
    torch.testing.assert_close(anchors[0, 0, 0], torch.tensor([10.0, 13.0]))
    torch.testing.assert_close(anchors[0, 2, 2], torch.tensor([373.0, 326.0]))
    torch.testing.assert_close(anchors[1], anchors[0] * 64 / 416)
    # anchor_side fixes them in pixels whatever the image size.
    fixed = _model(anchor_side=416).anchors_for(torch.tensor([[300, 416], [64, 32]]))
    torch.testing.assert_close(fixed, anchors[:1].expand(2, -1, -1, -1))


def test_decoding_inverts_the_encoding_of_every_assignment():
    """Every (cell, anchor) a box is assigned to can express it exactly: encoding the box as raw
    predictions there and decoding them gives the box back."""
    torch.manual_seed(0)
    sizes = torch.tensor([[96, 128], [64, 64]])  # (H, W)
    corners = torch.rand(40, 2) * 50
    boxes = torch.cat([corners, corners + 4 + torch.rand(40, 2) * 40], dim=1)
    boxes = box_convert(boxes, "xyxy", "cxcywh")
    image_index = torch.arange(40) % 2
    anchors = YOLO.anchors_for(_model(), sizes)
    assigned = 0
    for scale, stride in enumerate(STRIDES):
        grid = torch.flip(-(-sizes // stride), dims=[1])
        target, image, anchor, cells = assign_targets(
            boxes, image_index, anchors[:, scale], stride, grid
        )
        assert (image == image_index[target]).all()
        assert ((cells >= 0) & (cells < grid[image])).all()  # inside each image's own grid
        scale_anchors = anchors[image, scale, anchor]
        raw = encode_boxes(boxes[target], cells, scale_anchors, stride)
        assert torch.isfinite(raw).all()
        torch.testing.assert_close(
            decode_boxes(raw, cells, scale_anchors, stride), boxes[target], rtol=0, atol=1e-3
        )
        assigned += len(target)
    assert assigned > 40  # several positions per box


def test_assignment_on_a_hand_made_case():
    """Stride 16, anchors 10x10, 20x40 and 120x120 px, a 128x128 image (8x8 cells) and a 64x64 one
    batched with it (4x4 cells of its own)."""
    anchors = torch.tensor([[10.0, 10.0], [20.0, 40.0], [120.0, 120.0]]).expand(2, 3, 2)
    boxes = torch.tensor(
        [
            [37.0, 50.0, 24.0, 30.0],  # cell (2, 3), centre in its upper-left quarter
            [120.0, 118.0, 12.0, 12.0],  # cell (7, 7): the last column, the lower half of a row
            [60.0, 40.0, 100.0, 90.0],  # image 1, cell (3, 2), right half: its last column
        ]
    )
    grid = torch.tensor([[8, 8], [4, 4]])
    target, image, anchor, cells = assign_targets(boxes, torch.tensor([0, 0, 1]), anchors, 16, grid)
    columns = (target.tolist(), image.tolist(), anchor.tolist(), cells.tolist())
    found = {(t, i, a, *cell) for t, i, a, cell in zip(*columns, strict=True)}
    expected = {
        # Box 0 (24x30): anchors 0 and 1 are within a factor 4 (120x120 is 5 times wider); its
        # cell, the one on its left and the one above (its centre is 0.31 and 0.13 into the cell).
        *((0, 0, a, x, y) for a in (0, 1) for x, y in ((2, 3), (1, 3), (2, 2))),
        # Box 1 (12x12): anchors 0 (and 20x40, 40 / 12 = 3.3); centre 0.5 across (no
        # neighbour), 0.375 down (the cell above).
        *((1, 0, a, x, y) for a in (0, 1) for x, y in ((7, 7), (7, 6))),
        # Box 2 (100x90): only 120x120; 0.75 across, but the cell on its right is past the
        # 64-pixel image (the padded batch has one there: not assigned); 0.5 down, none.
        (2, 1, 2, 3, 2),
    }
    assert found == expected and len(target) == len(expected)


def test_a_prediction_built_from_the_assignment_has_no_loss():
    """Raw predictions that decode to the true boxes at the assigned (cell, anchor) pairs, with
    objectness and class logits saturated there and negative everywhere else, have (almost) zero
    loss: so the objectness target of every unassigned pair is 0, of every assigned one 1."""
    model = _model(num_classes=2).train()
    sizes = torch.tensor([[64, 96], [64, 96]])
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [50.0, 10.0, 90.0, 60.0]]),
         "labels": torch.tensor([1, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]  # fmt: skip
    boxes = box_convert(targets[0]["boxes"], "xyxy", "cxcywh")
    anchors = model.anchors_for(sizes)
    raw = []
    for scale, stride in enumerate(STRIDES):
        pred = torch.full((2, 3, 64 // stride, 96 // stride, 5 + 2), -30.0)
        grid = torch.flip(-(-sizes // stride), dims=[1])
        target, image, anchor, cells = assign_targets(
            boxes, torch.zeros(2, dtype=torch.long), anchors[:, scale], stride, grid
        )
        at = (image, anchor, cells[:, 1], cells[:, 0])
        pred[at + (slice(0, 4),)] = encode_boxes(
            boxes[target], cells, anchors[image, scale, anchor], stride
        )
        pred[at + (4,)] = 30.0
        pred[at + (5 + targets[0]["labels"][target] - 1,)] = 30.0
        raw.append(pred)
    losses = model.loss(raw, anchors, sizes, targets)
    assert set(losses) == {"loss_box", "loss_obj", "loss_cls"}
    assert all(value < 1e-4 for value in losses.values()), losses
    # One unassigned pair (image 1 has no objects) claiming an object costs YOLOv5's balance
    # (4.0 at stride 8) times 30 over that scale's pairs.
    raw[0][1, 0, 0, 0, 4] = 30.0
    loss_obj = model.loss(raw, anchors, sizes, targets)["loss_obj"]
    expected = torch.tensor(4.0 * 30 / raw[0][..., 4].numel())
    torch.testing.assert_close(loss_obj, expected, atol=1e-4, rtol=1e-3)


def test_padding_leaves_an_images_detections_alone():
    """A 70x90 image alone and batched with a larger one (both padded to 96x96) gives the same
    detections, inside its own 90x70 pixels; the same image as a tensor too."""
    torch.manual_seed(0)
    model = _model().eval()
    image, other = torch.randn(3, 70, 90), torch.randn(3, 96, 96)
    with torch.no_grad():
        (alone,) = model([image])
        batched = model([other, image])[1]
        (as_tensor,) = model(image[None])
    assert len(alone["boxes"]) > 0
    for detection in (batched, as_tensor):
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(detection[key], alone[key])
    assert (alone["boxes"][:, 2] <= 90).all() and (alone["boxes"][:, 3] <= 70).all()
    assert (alone["boxes"][:, 2] > 0).all() and (alone["boxes"][:, 3] > 0).all()


def test_a_trained_yolo_adapts_to_new_classes_and_one_channel():
    torch.manual_seed(0)
    source = _model(num_classes=10).eval()
    assert source.num_classes_in(source.state_dict()) == 10
    target = zoo.adapt(copy.deepcopy(source), num_classes=3, in_channels=1).eval()
    assert target.num_classes == 3 and target.in_channels == 1
    assert target.get_classifier()[0].out_channels == 3 * 3
    assert target.num_classes_in(target.state_dict()) == 3
    for name, value in source.state_dict().items():
        if not name.startswith("head.cls_preds"):
            mine = target.state_dict()[name]
            assert mine.shape != value.shape or torch.equal(mine, value), name
    grey = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        rgb = source.forward_head(grey.expand(1, 3, 64, 64))
        one = target.forward_head(grey)
    for a, b in zip(rgb, one, strict=True):  # boxes and objectness; the classes are new
        torch.testing.assert_close(b[..., :5], a[..., :5], rtol=1e-4, atol=1e-4)
        assert b.shape[-1] == 5 + 3


def test_other_backbones_and_errors():
    model = _model(backbone="vgg11_bn").eval()
    with torch.no_grad():
        (detection,) = model(torch.randn(1, 3, 40, 32))
    assert (detection["boxes"][:, 2:] <= torch.tensor([32.0, 40.0])).all()
    with pytest.raises(ValueError, match=r"no feature map at stride \[8, 16, 32\]"):
        _model(backbone="lenet")
    with pytest.raises(ValueError, match="feature maps"):
        _model(backbone="mlp")
    with pytest.raises(ValueError, match="anchors"):
        _model(anchors=YOLOV3_ANCHORS[:2])
    with pytest.raises(ValueError, match="3-channel images"):
        model(torch.randn(1, 1, 64, 64))
    model.train()
    bad = [{"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([4])}]
    with pytest.raises(ValueError, match=r"outside 1\.\.3"):
        model(torch.randn(1, 3, 64, 64), bad)
