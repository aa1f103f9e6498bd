"""Property-based fuzzing of boxes and masks (issue 16): random, often broken, box sets and masks
through every augmentation preset, the anchor labelling of Section 14.4, YOLO's target
assignment and loss, and the detectors' target check.

Boxes come empty, degenerate (zero width or height, x2 < x1), huge (1e6), negative, NaN or inf,
partly or wholly outside the image, and by the hundred. The properties: nothing fails with a
library's traceback (a ``ValueError`` naming the bad box only where that is the documented
behaviour: ``Detector.check_targets``); every box an augmentation keeps is finite, non-empty and
inside the output image, with its id and mask; labelling and losses stay finite for finite boxes;
a class mask keeps its values, 255 (ignore) included, and pads with 255.

Hypothesis runs derandomized (the same examples on every run) and few of them, so the file
stays within seconds; each augmentation is seeded from the example.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import zoo
from datamodules import transforms
from zoo.detection.anchors import multibox_prior, multibox_target
from zoo.detection.yolo import STRIDES, assign_targets

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(FUZZ, max_examples=25)

# A coordinate in pixels of an image of at most 64 pixels a side: mostly in or near it, often a
# value that breaks naive code.
NASTY = (0.0, 1.0, 1e6, -1e6, -1.0, math.nan, math.inf, -math.inf)
_coordinate = st.one_of(
    st.floats(-30.0, 100.0, width=32),
    st.integers(-5, 70).map(float),  # whole pixels: equal corners make zero-size boxes
    st.sampled_from(NASTY),
)


def _boxes(max_boxes: int = 12, coordinate: st.SearchStrategy = _coordinate):
    shape = st.tuples(st.integers(0, max_boxes), st.just(4))
    return hnp.arrays(np.float32, shape, elements=coordinate)


_finite_boxes = _boxes(coordinate=st.floats(-1e6, 1e6, width=32) | st.sampled_from((0.0, 1e6)))
_side = st.integers(4, 64)


def _valid(boxes: np.ndarray) -> np.ndarray:
    """Rows that are finite with positive width and height."""
    with np.errstate(invalid="ignore"):
        return (
            np.isfinite(boxes).all(axis=1)
            & (boxes[:, 2] > boxes[:, 0])
            & (boxes[:, 3] > boxes[:, 1])
        )


def _in_view(boxes: np.ndarray, height: int, width: int, least: float = 0.0) -> np.ndarray:
    """Rows whose width and height inside a ``height`` x ``width`` image, once clipped to it,
    are positive (and at least ``least``)."""
    clipped = boxes.astype(np.float64).copy()
    with np.errstate(invalid="ignore"):
        clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
        clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
        sides = clipped[:, 2:] - clipped[:, :2]
        return ((sides > 0) & (sides >= least - 1e-6)).all(axis=1)


def _rectangle_masks(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[N, H, W]`` uint8: each box's whole pixels, filled with 1 (empty for a broken box)."""
    masks = np.zeros((len(boxes), height, width), dtype=np.uint8)
    with np.errstate(invalid="ignore"):
        edges = np.nan_to_num(boxes.astype(np.float64), posinf=1e6, neginf=-1e6).round()
    edges[:, 0::2] = edges[:, 0::2].clip(0, width)
    edges[:, 1::2] = edges[:, 1::2].clip(0, height)
    for mask, (x1, y1, x2, y2) in zip(masks, edges.astype(np.int64), strict=True):
        mask[y1:y2, x1:x2] = 1
    return masks


def _check_kept_boxes(out: dict, num_boxes: int) -> tuple[np.ndarray, np.ndarray]:
    """The properties every detection pipeline keeps; returns the kept boxes and their ids."""
    height, width = out["image"].shape[-2:]
    kept = np.asarray(out["bboxes"], dtype=np.float64).reshape(-1, 4)
    ids = np.asarray(out[transforms.BOX_IDS], dtype=np.int64)
    assert len(ids) == len(kept)  # one id (label) per kept box
    assert len(set(ids.tolist())) == len(ids) and ((ids >= 0) & (ids < num_boxes)).all()
    assert np.isfinite(kept).all()
    assert ((kept[:, 2] > kept[:, 0]) & (kept[:, 3] > kept[:, 1])).all(), kept
    assert (kept[:, 0::2] >= 0).all() and (kept[:, 0::2] <= width).all(), (kept, width)
    assert (kept[:, 1::2] >= 0).all() and (kept[:, 1::2] <= height).all(), (kept, height)
    return kept, ids


# --------------------------------------------------------------------------------------------
# 1. Detection augmentation: every preset, random image sizes, broken boxes
# --------------------------------------------------------------------------------------------


# Every training preset, and "eval" for the evaluation pipeline.
PIPELINES = (*transforms.DETECTION_PRESETS, "eval")


def _detection_pipeline(preset: str, image_size: int | None, masks: bool, seed: int):
    if preset == "eval":
        return transforms.detection_eval_transform(image_size, masks=masks)
    pipeline = transforms.detection_train_transform(preset, image_size, masks=masks)
    pipeline.set_random_seed(seed)
    return pipeline


def _crops(preset: str) -> bool:
    """Whether a detection preset crops, so needs an int ``image_size``."""
    if preset == "eval":
        return False
    try:
        transforms.check_detection_preset(preset, None)
    except ValueError:
        return True
    return False


def _sizes_for(preset: str):
    """Output sizes a preset takes: the cropping ones need an int."""
    return st.sampled_from((16, 33)) if _crops(preset) else st.sampled_from((None, 16, 33))


@pytest.mark.parametrize("preset", PIPELINES)
@FUZZ
@given(data=st.data(), height=_side, width=_side, boxes=_boxes(), seed=st.integers(0, 2**16))
@example(data=None, height=40, width=50, boxes=np.array([[10, 5, 5, 10]], np.float32), seed=0)
@example(data=None, height=40, width=50, boxes=np.array([[5, 5, 5, 10]], np.float32), seed=0)
@example(data=None, height=40, width=50, boxes=np.array([[60, 50, 70, 60]], np.float32), seed=0)
@example(data=None, height=40, width=50, boxes=np.array([[math.nan, 1, 5, 5]], np.float32), seed=0)
def test_detection_presets_keep_only_valid_boxes_with_their_ids(
    preset, data, height, width, boxes, seed
):
    # Before issue 16, albumentations raised on a zero-size, inverted, NaN or out-of-image box
    # ("x_max is less than or equal to x_min for bbox [0.1 0.125 0.1 0.25 0.]", in its own
    # normalised coordinates); now such boxes are dropped with their ids.
    image_size = 16 if data is None else data.draw(_sizes_for(preset), label="image_size")
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    pipeline = _detection_pipeline(preset, image_size, masks=False, seed=seed)
    out = pipeline(image=image, bboxes=boxes, box_ids=np.arange(len(boxes)))
    if image_size is not None:
        assert tuple(out["image"].shape) == (3, image_size, image_size)
    _, ids = _check_kept_boxes(out, len(boxes))
    # Only boxes that have something in view can be kept.
    assert _in_view(boxes, height, width)[ids].all()
    if preset == "none" and image_size is None:
        # No geometry at all: every box at least a pixel wide and high in view stays (training
        # drops thinner ones).
        assert ids.tolist() == np.flatnonzero(_in_view(boxes, height, width, 1.0)).tolist()
    if preset == "eval":
        # Evaluation has no minimum size: it keeps every box with an area in view (those of
        # less than a millionth of a pixel are albumentations' rounding to drop).
        assert set(np.flatnonzero(_in_view(boxes, height, width, 1e-3)).tolist()) <= set(ids)


def test_detection_eval_drops_only_boxes_with_nothing_in_view():
    boxes = np.array(
        [[2, 3, 20, 30], [5, 5, 5, 10], [10, 5, 5, 10], [-50, -50, -1, -1], [math.nan, 1, 5, 5],
         [0, 0, 1e6, 1e6], [-math.inf, 2, 10, 12], [0.5, 0.5, 0.75, 0.75]],
        dtype=np.float32,
    )  # fmt: skip
    image = np.zeros((40, 50, 3), dtype=np.uint8)
    out = transforms.detection_eval_transform(20)(
        image=image, bboxes=boxes, box_ids=np.arange(len(boxes))
    )
    kept, ids = _check_kept_boxes(out, len(boxes))
    assert ids.tolist() == [0, 5, 6, 7]  # the tiny box too: evaluation has no minimum size
    np.testing.assert_allclose(kept[1], [0, 0, 20, 20], atol=1e-4)  # the huge box, clipped
    np.testing.assert_allclose(kept[2], [0, 1, 4, 6], atol=1e-4)  # -inf, clipped at 0


@pytest.mark.parametrize("preset", PIPELINES)
@FEW
@given(
    height=_side,
    width=_side,
    boxes=_boxes(coordinate=st.integers(-10, 70).map(float) | st.sampled_from(NASTY)),
    seed=st.integers(0, 2**16),
)
def test_detection_presets_move_masks_with_their_boxes(preset, height, width, boxes, seed):
    image_size = None if not _crops(preset) and seed % 2 else 24
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    masks = _rectangle_masks(boxes, height, width)
    pipeline = _detection_pipeline(preset, image_size, masks=True, seed=seed)
    inputs = {"image": image, "bboxes": boxes, "box_ids": np.arange(len(boxes))}
    if len(boxes):  # albumentations cannot stack an empty list of masks
        inputs["masks"] = masks
    out = pipeline(**inputs)
    _, ids = _check_kept_boxes(out, len(boxes))
    if not len(boxes):
        return
    out_masks = np.asarray(out["masks"])
    # Every input box keeps its mask, at the output's size, still binary (nearest resampling;
    # the zoom-out canvas fills instance masks with 0, not with an object).
    assert out_masks.shape == (len(boxes), *out["image"].shape[-2:])
    assert set(np.unique(out_masks).tolist()) <= {0, 1}
    kept = np.asarray(out["bboxes"], dtype=np.float64).reshape(-1, 4)
    for (x1, y1, x2, y2), mask in zip(kept, out_masks[ids], strict=True):
        ys, xs = np.nonzero(mask)
        if len(xs):  # a kept box's mask sits on it: its centre is inside the box
            assert x1 - 1 <= xs.mean() + 0.5 <= x2 + 1 and y1 - 1 <= ys.mean() + 0.5 <= y2 + 1


@pytest.mark.parametrize("preset", ["ssd", "none"])
def test_hundreds_of_boxes_keep_their_ids(preset):
    rng = np.random.default_rng(16)
    corners = rng.uniform(-20, 80, (400, 2, 2))
    boxes = np.concatenate([corners.min(1), corners.max(1)], axis=1)[:, [0, 1, 2, 3]]
    boxes = np.concatenate([boxes, rng.uniform(-20, 80, (100, 4))]).astype(np.float32)
    image = rng.integers(0, 256, (48, 60, 3), dtype=np.uint8)
    pipeline = _detection_pipeline(preset, 32, masks=False, seed=16)
    out = pipeline(image=image, bboxes=boxes, box_ids=np.arange(len(boxes)))
    kept, ids = _check_kept_boxes(out, len(boxes))
    assert len(kept) > 100
    if preset == "none":  # a plain resize: each kept box is its input box, scaled
        scale = np.array([32 / 60, 32 / 48] * 2)
        clipped = boxes[ids].astype(np.float64)
        clipped[:, 0::2] = clipped[:, 0::2].clip(0, 60)
        clipped[:, 1::2] = clipped[:, 1::2].clip(0, 48)
        np.testing.assert_allclose(kept, clipped * scale, atol=1e-3)


# --------------------------------------------------------------------------------------------
# 2. Anchor labelling (Section 14.4.3)
# --------------------------------------------------------------------------------------------

_ANCHORS = multibox_prior((4, 5), sizes=[0.75, 0.5, 0.25], ratios=[1, 2, 0.5])
_normalised = st.one_of(
    st.floats(-1.5, 2.5, width=32),
    st.sampled_from((0.0, 0.5, 1.0, 1e6, -1e6)),
)


@FUZZ
@given(
    batch=st.lists(_boxes(max_boxes=10, coordinate=_normalised), min_size=1, max_size=3),
    iou_threshold=st.sampled_from((0.0, 0.3, 0.5, 1.0)),
)
@example(batch=[np.array([[0.6, 0.6, 0.2, 0.2]], np.float32)], iou_threshold=0.0)
def test_multibox_target_is_finite_and_consistent_for_finite_boxes(batch, iou_threshold):
    # Found by this test: with iou_threshold 0, every anchor took its best box even at IoU 0,
    # an inverted box included, whose log size is NaN.
    targets = [{"boxes": torch.from_numpy(b), "labels": torch.arange(1, len(b) + 1)} for b in batch]
    offsets, mask, labels = multibox_target(_ANCHORS, targets, iou_threshold)
    num_anchors = len(_ANCHORS)
    assert offsets.shape == mask.shape == (len(batch), num_anchors, 4)
    assert labels.shape == (len(batch), num_anchors)
    assert torch.isfinite(offsets).all()
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(mask[..., 0] == 1, labels > 0)
    assert (offsets[mask == 0] == 0).all()
    for image_labels, boxes in zip(labels, batch, strict=True):
        assert image_labels.max() <= len(boxes)
        # Only boxes with an area can be matched: an anchor never overlaps an empty one.
        matched = image_labels[image_labels > 0] - 1
        assert _valid(boxes)[matched.numpy()].all()


@FEW
@given(boxes=_boxes(max_boxes=6, coordinate=st.sampled_from(NASTY) | _normalised))
def test_multibox_target_with_non_finite_boxes_does_not_crash(boxes):
    # Non-finite boxes are the detectors' check_targets' to refuse; the labelling itself must
    # still return tensors of the right shape, not raise.
    target = {"boxes": torch.from_numpy(boxes), "labels": torch.ones(len(boxes), dtype=torch.long)}
    offsets, mask, labels = multibox_target(_ANCHORS, [target])
    assert offsets.shape == (1, len(_ANCHORS), 4) and labels.shape == (1, len(_ANCHORS))


# --------------------------------------------------------------------------------------------
# 3. YOLO: target assignment and loss; 4. Detector.check_targets
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yolo():
    torch.manual_seed(16)
    return zoo.create_model("yolo_resnet18", num_classes=3, neck_channels=16, head_depth=1).train()


def _targets(boxes: np.ndarray, num_classes: int = 3) -> list[dict[str, torch.Tensor]]:
    labels = torch.arange(len(boxes)) % num_classes + 1
    return [{"boxes": torch.from_numpy(boxes), "labels": labels}]


@FUZZ
@given(boxes=_finite_boxes, height=st.integers(32, 96), width=st.integers(32, 96))
@example(boxes=np.array([[30, 30, 10, 10]], np.float32), height=64, width=64)
def test_yolo_assignment_stays_in_the_grid_and_the_loss_is_finite(yolo, boxes, height, width):
    # Found by this test: an inverted box (x2 < x1) has a negative width, whose ratio to every
    # anchor passed the anchor_t test, so it was assigned and gave a loss_box of 52.
    sizes = torch.tensor([[height, width]])
    anchors = yolo.anchors_for(sizes)
    centres = torch.from_numpy(boxes).double()
    centres = torch.cat([(centres[:, :2] + centres[:, 2:]) / 2, centres[:, 2:] - centres[:, :2]], 1)
    for scale, stride in enumerate(STRIDES):
        grid = torch.flip(-(-sizes // stride), dims=[1])
        target, image, anchor, cells = assign_targets(
            centres.float(),
            torch.zeros(len(boxes), dtype=torch.long),
            anchors[:, scale],
            stride,
            grid,
        )
        assert len(target) == len(image) == len(anchor) == len(cells)
        assert ((cells >= 0) & (cells < grid[0])).all()
        assert (centres[target, 2:] > 0).all()  # only boxes with a size are assigned
    # The loss, on random predictions of the head, is finite for every box check_targets takes.
    raw = [torch.randn(1, 3, -(-height // s), -(-width // s), 8) * 4 for s in STRIDES]
    try:
        targets = yolo.check_targets(_targets(boxes))
    except ValueError as error:
        assert "x1 <= x2" in str(error)
        return
    losses = yolo.loss(raw, anchors, sizes, targets)
    assert all(torch.isfinite(value) for value in losses.values()), losses
    assert losses["loss_box"] <= yolo.gains["loss_box"] * 3 * len(STRIDES)  # 1 - CIoU <= 3


def test_hundreds_of_boxes_label_anchors_and_cells_finitely(yolo):
    rng = np.random.default_rng(16)
    corners = rng.uniform(-0.2, 1.2, (300, 2, 2))
    boxes = np.concatenate([corners.min(1), corners.max(1)], axis=1).astype(np.float32)
    offsets, mask, labels = multibox_target(_ANCHORS, _targets(boxes))
    assert torch.isfinite(offsets).all() and mask.sum() > 0
    pixels = boxes * 64
    sizes = torch.tensor([[64, 64]])
    raw = [torch.randn(1, 3, 64 // s, 64 // s, 8) for s in STRIDES]
    losses = yolo.loss(raw, yolo.anchors_for(sizes), sizes, yolo.check_targets(_targets(pixels)))
    assert all(torch.isfinite(value) for value in losses.values())


def test_yolo_trains_a_step_on_boxes_at_the_edges(yolo):
    boxes = np.array(
        [[0, 0, 64, 48], [63, 47, 64, 48], [-10, -10, 5, 5], [60, 0, 1e6, 10], [3, 3, 3, 9]],
        dtype=np.float32,
    )
    images = torch.randn(1, 3, 48, 64)
    losses = yolo(images, _targets(boxes))
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    yolo.zero_grad()


_broken = st.sampled_from(
    [
        ([[math.nan, 0, 5, 5]], "not finite"),
        ([[0, 0, math.inf, 5]], "not finite"),
        ([[1, 1, 4, 4], [0, -math.inf, 5, 5]], "not finite"),
        ([[10, 10, 5, 20]], "x1 <= x2"),
        ([[1, 1, 4, 4], [0, 8, 5, 2]], "x1 <= x2"),
    ]
)


@FUZZ
@given(
    batch=st.lists(_finite_boxes, min_size=0, max_size=3), broken=_broken, where=st.integers(0, 3)
)
def test_check_targets_names_the_broken_box(yolo, batch, broken, where):
    # Before issue 16 check_targets looked at labels only: a NaN box went on into the loss.
    fine = [b[_valid(b)] for b in batch]
    targets = [t for b in fine for t in _targets(b)]
    assert yolo.check_targets(targets) is targets  # valid boxes pass untouched
    bad_boxes, expected = broken
    bad = _targets(np.array(bad_boxes, np.float32))[0]
    where = min(where, len(targets))
    targets.insert(where, bad)
    with pytest.raises(ValueError, match=expected) as caught:
        yolo.check_targets(targets)
    assert f"targets[{where}]" in str(caught.value)


def test_check_targets_names_a_target_without_boxes_or_of_the_wrong_shape(yolo):
    one = torch.ones(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"targets\[0\] has keys \['labels'\]"):
        yolo.check_targets([{"labels": one}])
    with pytest.raises(ValueError, match=r"boxes of shape \(2, 5\).*give boxes as \[N, 4\]"):
        yolo.check_targets([{"boxes": torch.zeros(2, 5), "labels": one}])
    with pytest.raises(ValueError, match=r"targets\[1\].*labels of shape \(2,\)"):
        boxes = torch.tensor([[1.0, 1.0, 4.0, 4.0]])
        yolo.check_targets([{"boxes": boxes, "labels": one[:1]}, {"boxes": boxes, "labels": one}])
    assert yolo.check_targets([]) == []


def test_check_targets_keeps_its_label_message(yolo):
    target = {"boxes": torch.tensor([[1.0, 1.0, 4.0, 4.0]]), "labels": torch.tensor([0])}
    with pytest.raises(ValueError, match="outside 1..3"):
        yolo.check_targets([target])


# --------------------------------------------------------------------------------------------
# 5. Segmentation masks: uint8 class maps with 255 = ignore, every preset
# --------------------------------------------------------------------------------------------

MEAN_FLAG = round(255 * transforms.IMAGENET_MEAN[2])  # the padding colour of the flag channel


def _coordinate_image(height: int, width: int) -> np.ndarray:
    """An image whose pixels say where they came from: x in red, y in green, 255 in blue (the
    padding's blue is the mean colour, about 104)."""
    ys, xs = np.mgrid[:height, :width]
    return np.stack([xs, ys, np.full_like(xs, 255)], axis=-1).astype(np.uint8)


def _source_pixels(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` standardised back to 0-255 values, ``[H, W, 3]``."""
    mean, std = np.array(transforms.IMAGENET_MEAN), np.array(transforms.IMAGENET_STD)
    return (image.permute(1, 2, 0).numpy() * std + mean) * 255


@st.composite
def _class_masks(draw):
    height, width = draw(st.integers(3, 40)), draw(st.integers(3, 40))
    values = draw(st.lists(st.integers(0, 20) | st.just(255), min_size=1, max_size=4, unique=True))
    picks = draw(hnp.arrays(np.uint8, (height, width), elements=st.integers(0, len(values) - 1)))
    return np.asarray(values, dtype=np.uint8)[picks]


@pytest.mark.parametrize("small_images", transforms.SMALL_IMAGES)
@pytest.mark.parametrize("preset", transforms.SEGMENTATION_PRESETS)
@FUZZ
@given(
    mask=_class_masks(),
    crop=st.tuples(st.integers(2, 48), st.integers(2, 48)),
    seed=st.integers(0, 2**16),
)
@example(mask=np.full((5, 7), 255, np.uint8), crop=(9, 9), seed=0)
def test_segmentation_presets_carry_every_mask_value(preset, small_images, mask, crop, seed):
    height, width = mask.shape
    crops = transforms.segmentation_preset_crops(preset)
    if small_images == "drop":
        if not crops:
            return  # the same pipeline as "pad"
        if "scale" not in preset:  # the caller has left out images smaller than the crop
            crop = (min(crop[0], height), min(crop[1], width))
    pipeline = transforms.segmentation_train_transform(preset, crop, small_images=small_images)
    pipeline.set_random_seed(seed)
    out = pipeline(image=_coordinate_image(height, width), mask=mask)
    image, out_mask = out["image"], out["mask"]
    assert out_mask.dtype == torch.uint8 and out_mask.shape == image.shape[-2:]
    if crops:
        assert tuple(out_mask.shape) == crop
    out_mask = out_mask.numpy()
    pixels = _source_pixels(image)
    padded = np.abs(pixels[..., 2] - MEAN_FLAG) < 2
    assert (np.abs(pixels[..., 2][~padded] - 255) < 2).all()  # every pixel is image or padding
    # Padding is ignored (255) in the mask, never class 0; no new class appears.
    assert (out_mask[padded] == 255).all()
    assert set(np.unique(out_mask).tolist()) <= set(np.unique(mask).tolist()) | {255}
    xs, ys = pixels[..., 0][~padded], pixels[..., 1][~padded]
    if "scale" not in preset:
        # Flips and crops move pixels without resampling: each mask pixel is the one under
        # its image pixel, 255 included.
        sources = mask[np.rint(ys).astype(int), np.rint(xs).astype(int)]
        np.testing.assert_array_equal(out_mask[~padded], sources)
    else:
        # A rescale resamples: the image bilinearly or by area, the mask nearest-neighbour, so
        # each mask pixel's value is found in the mask within a pixel of the image's source.
        found = np.zeros(len(xs), dtype=bool)
        values = out_mask[~padded]
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                y = np.clip(np.floor(ys).astype(int) + dy, 0, height - 1)
                x = np.clip(np.floor(xs).astype(int) + dx, 0, width - 1)
                found |= mask[y, x] == values
                y1 = np.clip(np.ceil(ys).astype(int) + dy, 0, height - 1)
                x1 = np.clip(np.ceil(xs).astype(int) + dx, 0, width - 1)
                found |= mask[y1, x1] == values
        assert found.all()


@FEW
@given(mask=_class_masks())
def test_segmentation_eval_keeps_the_mask_as_it_is(mask):
    out = transforms.segmentation_eval_transform()(image=_coordinate_image(*mask.shape), mask=mask)
    assert out["mask"].dtype == torch.uint8
    np.testing.assert_array_equal(out["mask"].numpy(), mask)
