"""Detection datamodules (COCO, VOCDetection) and the box-aware augmentation presets.

Tiny trees in the real formats (``tests._detection_files``): JPEG photos of varying sizes, a
COCO ``instances_<split>.json`` with polygon, RLE and crowd annotations, a VOCdevkit of XML
files, both with the usual bad annotations. pycocotools and torchvision's VOCDetection read
the same files as the references.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import shutil
import warnings
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
import torchvision
from albumentations.pytorch import ToTensorV2
from jsonargparse import ArgumentParser
from PIL import Image
from pycocotools.coco import COCO as COCOApi

from datamodules import COCO, VOCDetection, transforms
from datamodules.coco import decode_coco_masks
from datamodules.detection import DetectionAnnotation, DetectionFileDataset, collate_detection
from datamodules.voc import VOC_CLASSES
from tests._detection_files import (
    COCO_CLASSES,
    EMPTY_IMAGE,
    SIZES,
    coco_segmentation,
    rectangle_mask,
    write_coco,
    write_voc,
)
from tests._image_files import photos, save_image

# pycocotools' mask decoding, under numpy 2.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

COCO_TRAIN_SUMMARY = (
    "COCO train2017: 7 images, 16 boxes; dropped 3 degenerate boxes, 1 box with unknown "
    "category 99; clamped 1 box to the image; 1 crowd region kept out of training"
)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    write_coco(root, "train2017", seed=0, bad=True)
    write_coco(root, "val2017", seed=1, bad=False)
    return root


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    return write_voc(tmp_path_factory.mktemp("voc"))


def _quiet(function, *args, **kwargs):
    """Call ``function`` without the summary warnings and pycocotools' prints."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", UserWarning)
        return function(*args, **kwargs)


def _coco(root: Path, stage: str | None = "fit", **kwargs) -> COCO:
    datamodule = _quiet(COCO, str(root), **{"batch_size": 4} | kwargs)
    if stage is not None:
        _quiet(datamodule.setup, stage)
    return datamodule


def _voc(root: Path, stage: str | None = "fit", **kwargs) -> VOCDetection:
    datamodule = _quiet(VOCDetection, str(root), **{"batch_size": 4} | kwargs)
    if stage is not None:
        _quiet(datamodule.setup, stage)
    return datamodule


def _clamped_or_none(box, height: int, width: int) -> list[float] | None:
    """The documented clean-up: clamp to the image, drop what is then empty."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = min(max(x1, 0), width), min(max(x2, 0), width)
    y1, y2 = min(max(y1, 0), height), min(max(y2, 0), height)
    return [x1, y1, x2, y2] if x2 > x1 and y2 > y1 else None


def _assert_boxes(actual: torch.Tensor, expected: list) -> None:
    # albumentations carries boxes in normalised float32 coordinates: a whole-pixel box
    # comes back within a few 1e-6 of a pixel, even through a pipeline that moves nothing.
    expected_tensor = torch.tensor(expected, dtype=torch.float32).reshape(-1, 4)
    torch.testing.assert_close(actual, expected_tensor, atol=1e-4, rtol=0)


def _items(dataset) -> list[tuple[torch.Tensor, dict]]:
    return [dataset[index] for index in range(len(dataset))]


# -- agreement with the reference readers --------------------------------------------------


def test_coco_targets_match_pycocotools_after_the_documented_conversions(coco_root: Path) -> None:
    path = coco_root / "annotations" / "instances_train2017.json"
    reference = _quiet(COCOApi, str(path))
    category_ids = sorted(reference.getCatIds())
    # The validation split is the training split again: its targets keep crowd regions.
    with pytest.warns(UserWarning, match=COCO_TRAIN_SUMMARY):
        datamodule = COCO(str(coco_root), val_split="train2017", train_transforms="none")
        datamodule.setup("fit")
    assert datamodule.classes == COCO_CLASSES and datamodule.category_ids == [1, 3, 7]
    assert datamodule.num_classes == 3
    evaluation, training = _items(datamodule.val_dataset), _items(datamodule.train_dataset)
    assert [int(t["image_id"]) for _, t in evaluation] == sorted(reference.getImgIds())
    for (image, target), (_, train_target) in zip(evaluation, training, strict=True):
        info = reference.loadImgs(int(target["image_id"]))[0]
        boxes, labels, crowd = [], [], []
        for annotation in reference.loadAnns(reference.getAnnIds(imgIds=info["id"])):
            x, y, w, h = annotation["bbox"]
            box = _clamped_or_none([x, y, x + w, y + h], info["height"], info["width"])
            if annotation["category_id"] in category_ids and box is not None:
                boxes.append(box)
                labels.append(category_ids.index(annotation["category_id"]) + 1)
                crowd.append(annotation["iscrowd"])
        assert image.shape == (3, info["height"], info["width"])
        assert target["orig_size"].tolist() == [info["height"], info["width"]]
        _assert_boxes(target["boxes"], boxes)
        assert target["labels"].tolist() == labels and target["iscrowd"].tolist() == crowd
        keep = [c == 0 for c in crowd]  # training targets: the same without the crowd
        _assert_boxes(train_target["boxes"], [b for b, k in zip(boxes, keep, strict=True) if k])
        assert train_target["labels"].tolist() == [
            lab for lab, k in zip(labels, keep, strict=True) if k
        ]
        assert train_target["iscrowd"].sum() == 0
    # The bad annotations of image 0 (48 wide): only the clamped one survives, clamped.
    first = next(t for _, t in evaluation if t["image_id"] == 900)
    _assert_boxes(first["boxes"][-1:], [[43.0, 2.0, 48.0, 10.0]])
    assert first["labels"][-1] == 3
    assert len(first["boxes"]) == 2 + 1
    assert sum(int(t["iscrowd"].sum()) for _, t in evaluation) == 1
    empty = next(t for _, t in evaluation if t["image_id"] == 900 - 37 * EMPTY_IMAGE)
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_voc_targets_match_torchvision_after_the_documented_conversion(voc_root: Path) -> None:
    with pytest.warns(UserWarning, match="VOCDetection train: 7 images, 16 boxes; dropped 3 "
                      "degenerate boxes, 1 box with unknown class 'unicorn'; clamped 1 box to "
                      "the image; 1 difficult object kept out of training"):  # fmt: skip
        datamodule = VOCDetection(str(voc_root), val_split="train", train_transforms="none")
        datamodule.setup("fit")
    assert datamodule.classes == list(VOC_CLASSES) and datamodule.category_ids[-1] == 20
    reference = torchvision.datasets.VOCDetection(
        str(voc_root.parent.parent), year="2012", image_set="train", download=False
    )
    evaluation, training = _items(datamodule.val_dataset), _items(datamodule.train_dataset)
    assert len(reference) == len(evaluation) == len(SIZES)
    for position, (picture, annotation) in enumerate(reference):
        boxes, labels, difficult = [], [], []
        for obj in annotation["annotation"].get("object", []):
            box = obj["bndbox"]
            corners = [float(box[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
            pixel_edges = [corners[0] - 1, corners[1] - 1, corners[2], corners[3]]
            box = _clamped_or_none(pixel_edges, picture.height, picture.width)
            if obj["name"] in VOC_CLASSES and box is not None:
                boxes.append(box)
                labels.append(VOC_CLASSES.index(obj["name"]) + 1)
                difficult.append(int(obj["difficult"]))
        _, target = evaluation[position]
        assert int(target["image_id"]) == position
        assert target["orig_size"].tolist() == [picture.height, picture.width]
        _assert_boxes(target["boxes"], boxes)
        assert target["labels"].tolist() == labels
        assert target["iscrowd"].tolist() == difficult
        train_target = training[position][1]
        kept = [b for b, d in zip(boxes, difficult, strict=True) if not d]
        _assert_boxes(train_target["boxes"], kept)
    # Image 0 (48 wide): the box written as (44, 3, 53, 10) is clamped to the right edge.
    _assert_boxes(evaluation[0][1]["boxes"][-1:], [[43.0, 2.0, 48.0, 10.0]])
    assert evaluation[EMPTY_IMAGE][1]["boxes"].shape == (0, 4)


def test_voc_classes_voc_found_or_listed(voc_root: Path) -> None:
    found = _voc(voc_root, stage=None, classes="found")
    assert found.classes == ["car", "cat", "dog", "person", "unicorn"]
    assert found.category_ids == [1, 2, 3, 4, 5]
    listed = _voc(voc_root, classes=["dog", "cat"])
    labels = torch.cat([t["labels"] for _, t in _items(listed.val_dataset)])
    assert set(labels.tolist()) == {1, 2} and listed.num_classes == 2
    with pytest.warns(UserWarning, match=r"unknown classes 'car', 'person'"):
        VOCDetection(str(voc_root), classes=["dog", "cat"], val_split=None).setup("fit")
    for classes, message in ((["cat", "cat"], "distinct.*'cat'"), ("coco", "neither 'voc'")):
        with pytest.raises(ValueError, match=message):
            VOCDetection(str(voc_root), classes=classes)


# -- the batch format ------------------------------------------------------------------


def test_batches_are_stacked_with_an_image_size_and_typed(coco_root: Path) -> None:
    datamodule = _coco(coco_root, image_size=32, train_transforms="ssd")
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader()):
        images, targets = next(iter(loader))
        assert isinstance(images, torch.Tensor) and images.shape == (4, 3, 32, 32)
        assert images.dtype == torch.float32 and len(targets) == 4
        for target in targets:
            assert target["boxes"].dtype == torch.float32 and target["boxes"].shape[1] == 4
            assert target["labels"].dtype == torch.int64 and target["iscrowd"].dtype == torch.int64
            assert target["image_id"].dtype == torch.int64 and target["image_id"].ndim == 0
            assert target["orig_size"].dtype == torch.int64 and target["orig_size"].shape == (2,)
            assert len(target["boxes"]) == len(target["labels"]) == len(target["iscrowd"])
            assert "masks" not in target
            assert ((target["labels"] >= 1) & (target["labels"] <= 3)).all()


def test_images_of_different_sizes_come_as_a_list(coco_root: Path) -> None:
    datamodule = _coco(coco_root, batch_size=3)
    images, targets = next(iter(datamodule.val_dataloader()))
    assert isinstance(images, list)
    assert [tuple(image.shape[1:]) for image in images] == [
        tuple(t["orig_size"].tolist()) for t in targets
    ]
    same_size = [item for item in _items(datamodule.val_dataset) if item[0].shape[1:] == (40, 48)]
    stacked, _ = collate_detection(same_size)
    assert isinstance(stacked, torch.Tensor) and stacked.shape == (2, 3, 40, 48)


def test_crowd_only_in_evaluation_and_ids_and_sizes_from_the_files(coco_root: Path) -> None:
    datamodule = _coco(coco_root, image_size=32, train_transforms="ssd")
    validation = _items(datamodule.val_dataset)
    info = json.loads((coco_root / "annotations" / "instances_val2017.json").read_text())
    sizes = {image["id"]: [image["height"], image["width"]] for image in info["images"]}
    assert [int(t["image_id"]) for _, t in validation] == sorted(sizes)
    assert all(t["orig_size"].tolist() == sizes[int(t["image_id"])] for _, t in validation)
    assert sum(int(t["iscrowd"].sum()) for _, t in validation) == 1
    for _ in range(3):  # no crowd in any training target, whatever the draw
        assert all(t["iscrowd"].sum() == 0 for _, t in _items(datamodule.train_dataset))


def test_masks_agree_with_pycocotools_ann_to_mask(coco_root: Path) -> None:
    path = coco_root / "annotations" / "instances_train2017.json"
    reference = _quiet(COCOApi, str(path))
    datamodule = _coco(coco_root, masks=True, val_split="train2017", train_transforms="none")
    kinds = set()
    for _, target in _items(datamodule.val_dataset):
        height, width = target["orig_size"].tolist()
        expected = []
        for annotation in reference.loadAnns(reference.getAnnIds(imgIds=int(target["image_id"]))):
            x, y, w, h = annotation["bbox"]
            if annotation["category_id"] != 99 and _clamped_or_none(
                [x, y, x + w, y + h], height, width
            ):
                expected.append(reference.annToMask(annotation))
                segmentation = annotation["segmentation"]
                kinds.add(
                    "polygon" if isinstance(segmentation, list) else type(segmentation["counts"])
                )
        assert target["masks"].dtype == torch.uint8
        assert target["masks"].shape == (len(expected), height, width)
        assert np.array_equal(
            target["masks"].numpy(), np.array(expected).reshape(-1, height, width)
        )
        assert all(m.sum() > 0 for m in target["masks"])
    assert kinds == {"polygon", str, list}  # polygons, RLE and uncompressed RLE (the crowd)
    resized = _coco(coco_root, masks=True, image_size=24, train_transforms="crop_flip")
    for dataset in (resized.train_dataset, resized.val_dataset):
        for _, target in _items(dataset):
            assert target["masks"].shape == (len(target["boxes"]), 24, 24)


# -- the augmentation presets ------------------------------------------------------------


def _mask_inside_box(mask: torch.Tensor, box: torch.Tensor) -> float:
    """The share of the mask's pixels inside the box grown by a pixel."""
    x1, y1, x2, y2 = box.tolist()
    rows, columns = torch.nonzero(mask, as_tuple=True)
    centres_x, centres_y = columns + 0.5, rows + 0.5
    inside = (
        (centres_x > x1 - 1) & (centres_x < x2 + 1) & (centres_y > y1 - 1) & (centres_y < y2 + 1)
    )
    return float(inside.float().mean())


@pytest.mark.parametrize("preset", transforms.DETECTION_PRESETS)
def test_every_preset_keeps_boxes_valid_and_masks_with_their_boxes(
    coco_root: Path, preset: str
) -> None:
    datamodule = _coco(coco_root, masks=True, image_size=32, train_transforms=preset)
    dataset = datamodule.train_dataset
    kept, first_boxes = 0, set()
    for seed in range(12):
        dataset.reseed(seed)
        for index, (image, target) in enumerate(_items(dataset)):
            boxes, masks = target["boxes"], target["masks"]
            assert image.shape == (3, 32, 32) and masks.shape == (len(boxes), 32, 32)
            assert (boxes >= 0).all() and (boxes <= 32).all(), boxes
            assert (boxes[:, 2] - boxes[:, 0] >= 1 - 1e-4).all(), boxes  # no degenerate box
            assert (boxes[:, 3] - boxes[:, 1] >= 1 - 1e-4).all(), boxes
            assert target["iscrowd"].sum() == 0 and len(target["labels"]) == len(boxes)
            for mask, box in zip(masks, boxes, strict=True):
                area = float((box[2] - box[0]) * (box[3] - box[1]))
                assert mask.sum() > 0 or area < 4, (preset, seed, box)  # its own mask
                if mask.sum() >= 4:  # the mask moved with its box (a flip, a crop, a zoom)
                    assert _mask_inside_box(mask, box) > 0.8, (preset, seed, box)
            kept += len(boxes)
            if index == 0 and len(boxes):
                first_boxes.add(tuple(boxes[0].round(decimals=3).tolist()))
    assert kept > 12 * 10  # most objects survive the crops
    # The presets draw: one place for the first box without augmentation, two with a
    # flip, many with a crop.
    expected = {"none": 1, "flip": 2}.get(preset)
    assert len(first_boxes) == expected if expected else len(first_boxes) > 6, first_boxes


def test_boxes_a_crop_drops_leave_with_their_labels_crowd_flags_and_masks(tmp_path: Path) -> None:
    height, width = 40, 48
    boxes = [[2, 4, 12, 20], [20, 4, 30, 30], [30, 10, 46, 38]]
    annotation = DetectionAnnotation(
        image_id=5,
        orig_size=(height, width),
        boxes=np.array(boxes, dtype=np.float32),
        labels=np.array([3, 1, 2]),
        iscrowd=np.array([0, 1, 0]),
        segmentations=tuple(coco_segmentation("rle", (height, width), box) for box in boxes),
    )
    path = save_image(tmp_path / "a.jpg", Image.fromarray(photos()[0]))
    crop = A.Compose(  # keeps columns 16-47: the first box is outside
        [A.Crop(x_min=16, y_min=0, x_max=48, y_max=40), A.ToFloat(), ToTensorV2()],
        bbox_params=A.BboxParams("pascal_voc", [transforms.BOX_IDS], min_visibility=0.3),
    )
    dataset = DetectionFileDataset([(path, annotation)], crop)
    dataset.decode_masks = decode_coco_masks
    image, target = dataset[0]
    assert image.shape == (3, 40, 32) and target["orig_size"].tolist() == [40, 48]
    _assert_boxes(target["boxes"], [[4, 4, 14, 30], [14, 10, 30, 38]])
    assert target["labels"].tolist() == [1, 2] and target["iscrowd"].tolist() == [1, 0]
    expected = np.stack([rectangle_mask((40, 32), box) for box in target["boxes"].tolist()])
    assert np.array_equal(target["masks"].numpy(), expected)


def test_flip_mirrors_boxes_exactly_at_the_files_size(coco_root: Path) -> None:
    datamodule = _coco(coco_root, val_split="train2017")
    plain = _items(datamodule.val_dataset)
    flips = 0
    for seed in range(3):
        datamodule.train_dataset.reseed(seed)
        for (image, target), (expected_image, expected) in zip(
            _items(datamodule.train_dataset), plain, strict=True
        ):
            width = image.shape[-1]
            no_crowd = expected["iscrowd"] == 0
            boxes = expected["boxes"][no_crowd]
            mirrored = torch.stack(
                [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1
            )
            if torch.equal(image, expected_image):
                assert torch.equal(target["boxes"], boxes)
            else:
                flips += 1
                assert torch.equal(image, expected_image.flip(-1))
                torch.testing.assert_close(target["boxes"], mirrored, atol=1e-4, rtol=0)
    assert 3 <= flips <= 18  # p = 1/2 over 21 draws


def test_eval_resize_scales_boxes_exactly(coco_root: Path) -> None:
    datamodule = _coco(coco_root, image_size=32, val_split="train2017", train_transforms="none")
    for (_, annotation), (image, target) in zip(
        datamodule.val_dataset.samples, _items(datamodule.val_dataset), strict=True
    ):
        height, width = annotation.orig_size
        scale = torch.tensor([32 / width, 32 / height, 32 / width, 32 / height])
        expected = torch.from_numpy(annotation.boxes) * scale
        assert image.shape == (3, 32, 32)
        torch.testing.assert_close(target["boxes"], expected, atol=1e-4, rtol=0)
        assert torch.equal(target["labels"], torch.from_numpy(annotation.labels))


def test_crop_presets_need_an_image_size_and_unknown_presets_are_named(coco_root: Path) -> None:
    for preset in ("crop", "crop_colour", "crop_flip", "ssd"):
        with pytest.raises(ValueError, match=f"'{preset}' crops.*set image_size"):
            COCO(str(coco_root), train_transforms=preset)
        with pytest.raises(ValueError, match="image_size"):
            transforms.detection_train_transform(preset, None)
    with pytest.raises(ValueError, match="'none', 'flip', 'crop', 'crop_colour'"):
        COCO(str(coco_root), train_transforms="course")
    with pytest.raises(ValueError, match="image_size=0"):
        COCO(str(coco_root), image_size=0)


def test_colour_jitter_changes_colours_but_never_flips() -> None:
    image = photos()[1]
    boxes = np.array([[2, 3, 20, 30]], dtype=np.float32)
    pipeline = transforms.detection_train_transform("crop_colour", 32)
    pipeline.set_random_seed(0)
    copy = pickle.loads(pickle.dumps(pipeline))  # for workers started with spawn
    outputs = [pipeline(image=image, bboxes=boxes, box_ids=[0]) for _ in range(20)]
    again = copy(image=image, bboxes=boxes, box_ids=[0])
    assert torch.equal(again["image"], outputs[0]["image"])
    plain = transforms.detection_eval_transform(32)(image=image, bboxes=boxes, box_ids=[0])
    assert torch.stack([o["image"].mean((1, 2)) for o in outputs]).std(0).mean() > 0.05
    # The box keeps its left edge at or left of its right half: a flip would mirror it
    # about the centre, putting a box of the left half into the right half.
    for output in outputs:
        assert np.asarray(output["bboxes"])[0, 0] < 16
    assert np.asarray(plain["bboxes"])[0].tolist() == pytest.approx(
        [32 * 2 / 48, 32 * 3 / 40, 32 * 20 / 48, 32 * 30 / 40]
    )


# -- splits, prediction, channels, workers -------------------------------------------------


def test_predict_falls_back_to_the_validation_set(coco_root: Path, voc_root: Path) -> None:
    datamodule = _coco(coco_root, stage="predict", image_size=32)
    assert datamodule.train_dataset is None  # the training split was not even read
    ids = [int(t["image_id"]) for _, targets in datamodule.predict_dataloader() for t in targets]
    info = json.loads((coco_root / "annotations" / "instances_val2017.json").read_text())
    assert ids == sorted(image["id"] for image in info["images"])
    with pytest.raises(RuntimeError, match="test_split is None"):
        _coco(coco_root, stage="test")
    held_out = _voc(voc_root, stage="predict", val_split=None, val_fraction=0.3, seed=3)
    assert len(held_out.val_dataset) == 3 and len(held_out.train_dataset) == 4
    batches = list(held_out.predict_dataloader())
    assert sum(len(targets) for _, targets in batches) == 3
    tested = _voc(voc_root, stage="predict", test_split="val")
    assert len(tested.test_dataset) == 7 and tested.val_dataset is None


def test_held_out_validation_is_a_seeded_random_split(coco_root: Path) -> None:
    first, second = (_coco(coco_root, val_split=None, val_fraction=0.3, seed=5) for _ in range(2))
    assert torch.equal(first.val_indices, second.val_indices) and len(first.val_indices) == 3
    train_ids = {int(t["image_id"]) for _, t in _items(first.train_dataset)}
    val_ids = {int(t["image_id"]) for _, t in _items(first.val_dataset)}
    assert not train_ids & val_ids and len(train_ids | val_ids) == 7


def test_grey_images_with_in_channels_1(coco_root: Path, voc_root: Path) -> None:
    datamodule = _coco(coco_root, in_channels=1, image_size=24, train_transforms="ssd")
    assert datamodule.mean == pytest.approx((0.449,)) and datamodule.in_channels == 1
    images, targets = next(iter(datamodule.train_dataloader()))
    assert images.shape == (4, 1, 24, 24) and len(targets) == 4
    voc = _voc(voc_root, in_channels=1, batch_size=2)
    images, _ = next(iter(voc.val_dataloader()))
    assert [tuple(image.shape) for image in images] == [(1, 40, 48), (1, 36, 52)]


def test_workers_decode_and_mask_lazily_as_the_main_process_does(coco_root: Path) -> None:
    options = {"masks": True, "image_size": 32, "batch_size": 3, "train_transforms": "ssd"}
    in_process = _coco(coco_root, **options)
    workers = _coco(coco_root, num_workers=2, **options)
    val_loader, train_loader = workers.val_dataloader(), workers.train_dataloader()
    try:
        batches = list(val_loader)
        train_batches = [batch for batch, _ in zip(train_loader, range(2), strict=False)]
    finally:  # stop the persistent workers now, as Trainer does at the end of a stage
        val_loader._iterator._shutdown_workers()
        train_loader._iterator._shutdown_workers()
    expected = list(in_process.val_dataloader())
    assert len(batches) == len(expected) == 3
    for (images, targets), (expected_images, expected_targets) in zip(
        batches, expected, strict=True
    ):
        assert torch.equal(images, expected_images)
        for target, reference in zip(targets, expected_targets, strict=True):
            assert target.keys() == reference.keys()
            assert all(torch.equal(target[key], reference[key]) for key in target)
    for images, targets in train_batches:
        assert images.shape == (3, 3, 32, 32)
        assert all(t["masks"].shape == (len(t["boxes"]), 32, 32) for t in targets)


# -- errors that name the file and the fix --------------------------------------------------


def test_coco_errors_name_the_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere is not a folder.*data.root"):
        COCO(str(tmp_path / "nowhere"))
    json_path = tmp_path / "annotations" / "instances_train2017.json"
    tmp_path.mkdir(exist_ok=True)
    with pytest.raises(FileNotFoundError, match=f"{json_path} does not exist.*data.root.*"
                       r"root/annotations/instances_<split>.json"):  # fmt: skip
        COCO(str(tmp_path))
    write_coco(tmp_path, "train2017")
    shutil.move(tmp_path / "train2017", tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="images folder .*train2017 does not exist"):
        _coco(tmp_path, val_split=None)
    shutil.move(tmp_path / "elsewhere", tmp_path / "train2017")
    for name in ("000000000900.jpg", "000000000863.jpg"):
        (tmp_path / "train2017" / name).unlink()
    with pytest.raises(FileNotFoundError, match="lists image .*000000000900.jpg, which does not "
                       "exist and 1 more"):  # fmt: skip
        _coco(tmp_path, val_split=None)
    json_path.write_text(json_path.read_text()[:-10])
    with pytest.raises(ValueError, match=f"{json_path} is not valid JSON"):
        COCO(str(tmp_path))
    json_path.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(ValueError, match="has no categories"):
        COCO(str(tmp_path))


def test_coco_masks_need_a_segmentation(tmp_path: Path) -> None:
    json_path = write_coco(tmp_path, "train2017", bad=False)
    dataset = json.loads(json_path.read_text())
    del dataset["annotations"][2]["segmentation"]
    json_path.write_text(json.dumps(dataset))
    _coco(tmp_path, val_split=None)  # boxes alone are fine
    with pytest.raises(ValueError, match="annotation 3 .* has no instance mask.*masks: false"):
        _coco(tmp_path, val_split=None, masks=True)
    with pytest.raises(ValueError, match="VOCDetection: masks=True.*no instance masks"):
        VOCDetection(str(tmp_path), masks=True)


def test_voc_errors_name_the_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="VOC root .*nowhere is not a folder"):
        VOCDetection(str(tmp_path / "nowhere"))
    expected = (
        f"VOC root {tmp_path} has no ImageSets/Main/train.txt: point data.root at the "
        "VOCdevkit/VOC2012 folder"
    )
    with pytest.raises(FileNotFoundError, match=expected):
        VOCDetection(str(tmp_path))
    voc = write_voc(tmp_path)
    with pytest.raises(FileNotFoundError, match="no ImageSets/Main/test.txt"):
        VOCDetection(str(voc), test_split="test")
    (voc / "Annotations" / "2012_train_002.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match="2012_train_002.xml is not valid XML"):
        _voc(voc)
    with pytest.raises(ValueError, match="2012_train_002.xml is not valid XML"):
        VOCDetection(str(voc), classes="found")  # found reads the files in __init__
    (voc / "Annotations" / "2012_train_002.xml").unlink()
    (voc / "Annotations" / "2012_train_004.xml").unlink()
    with pytest.raises(FileNotFoundError, match="2012_train_002.xml does not exist and 1 more"):
        _voc(voc)
    (voc / "JPEGImages" / "2012_val_005.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="2012_val_005.jpg does not exist"):
        _voc(voc, stage="validate", train_split="val")


# -- LightningCLI ---------------------------------------------------------------------------


def test_jsonargparse_sees_the_detection_arguments(voc_root: Path) -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(VOCDetection, "data")
    defaults = parser.get_defaults().data
    assert defaults.classes == "voc" and defaults.image_size is None
    assert defaults.train_transforms == "flip" and defaults.masks is False
    config = parser.parse_args([
        f"--data.root={voc_root}", "--data.classes=[cat, dog]", "--data.image_size=300",
        "--data.train_transforms=ssd", "--data.val_split=null",
    ])  # fmt: skip
    datamodule = parser.instantiate(config).data
    assert datamodule.classes == ["cat", "dog"] and datamodule.image_size == 300
    assert datamodule.splits == {"train": "train", "val": None, "test": None}
