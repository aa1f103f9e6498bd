"""Segmentation datamodules (VOCSegmentation, COCOSegmentation, DigitScenesSegmentation) and the
mask-aware augmentation presets.

Tiny trees in the real formats: a VOCdevkit of JPEG photos and palette PNG masks
(``tests._segmentation_files``), the COCO tree of the detection tests (polygons, RLE, a crowd,
overlapping objects of different classes) and a small DigitScenes tree. torchvision's
VOCSegmentation and pycocotools' ``annToMask`` read the same files as the references.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from jsonargparse import ArgumentParser
from PIL import Image
from pycocotools.coco import COCO as COCOApi

from datamodules import (
    COCOSegmentation,
    DigitScenesSegmentation,
    VOCSegmentation,
    collate_segmentation,
    transforms,
)
from datamodules.segmentation import read_mask
from datamodules.voc import VOC_CLASSES
from tests._detection_files import COCO_CLASSES, write_coco
from tests._segmentation_files import SIZES, save_palette_png, write_voc_segmentation

# pycocotools' mask decoding, under numpy 2.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # the model input is pixels / 255
CROP = (32, 40)  # smaller than SIZES[1] (36 x 32) in width and SIZES[3] (28 x 36) in both


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    return write_voc_segmentation(tmp_path_factory.mktemp("voc"))


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    write_coco(root, "train2017", seed=0, bad=True)
    write_coco(root, "val2017", seed=1, bad=False)
    return root


@pytest.fixture(scope="module")
def scenes_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("scenes") / "digits"


def _quiet(function, *args, **kwargs):
    """Call ``function`` without the summary warnings and pycocotools' prints."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", UserWarning)
        return function(*args, **kwargs)


def _setup(datamodule, stage: str = "fit"):
    _quiet(datamodule.setup, stage)
    return datamodule


def _items(dataset) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [dataset[index] for index in range(len(dataset))]


def _position_image(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An image whose pixels spell out their row and column, and a mask computed from them."""
    rows, columns = np.mgrid[:height, :width]
    image = np.stack([rows, columns, (rows * 3 + columns) % 256], -1).astype(np.uint8)
    return image, _mask_of(image)


def _mask_of(image: np.ndarray) -> np.ndarray:
    return ((image[..., 0].astype(np.int64) * 7 + image[..., 1]) % 21).astype(np.uint8)


# -- agreement with the reference readers --------------------------------------------------


def test_voc_agrees_with_torchvision_voc_segmentation(voc_root: Path) -> None:
    datamodule = _setup(VOCSegmentation(str(voc_root), val_split="train", **RAW))
    assert datamodule.classes == ["background", *VOC_CLASSES] and datamodule.num_classes == 21
    assert datamodule.ignore_index == 255 and datamodule.crop_size == (320, 480)
    reference = torchvision.datasets.VOCSegmentation(
        str(voc_root.parent.parent), year="2012", image_set="train", download=False
    )
    evaluation = _items(datamodule.val_dataset)
    assert len(reference) == len(evaluation) == len(SIZES)
    rings = 0
    for (picture, target), (image, mask) in zip(reference, evaluation, strict=True):
        assert target.mode == "P"
        expected_mask = torch.from_numpy(np.asarray(target).astype(np.int64))
        assert mask.dtype == torch.int64 and torch.equal(mask, expected_mask)
        expected_image = torch.from_numpy(np.array(picture)).permute(2, 0, 1) / 255
        assert image.dtype == torch.float32
        torch.testing.assert_close(image, expected_image, atol=1e-6, rtol=0)
        values = set(mask.unique().tolist())
        assert 0 in values and values <= set(range(21)) | {255}
        rings += 255 in values
    assert rings == len(SIZES)


def _expected_coco_mask(reference: COCOApi, image_id: int, class_of: dict[int, int]) -> np.ndarray:
    """The documented painting, written independently: count the classes covering each
    pixel; one gives that class, two or more 255, as do crowd regions of kept categories."""
    info = reference.loadImgs(image_id)[0]
    covered = np.zeros((len(class_of) + 1, info["height"], info["width"]), dtype=bool)
    crowd = np.zeros((info["height"], info["width"]), dtype=bool)
    for annotation in reference.loadAnns(reference.getAnnIds(imgIds=image_id)):
        class_index = class_of.get(annotation["category_id"])
        if class_index is None:
            continue
        pixels = reference.annToMask(annotation).astype(bool)
        if annotation["iscrowd"]:
            crowd |= pixels
        else:
            covered[class_index] |= pixels
    expected = covered.argmax(0).astype(np.int64)
    expected[(covered.sum(0) > 1) | crowd] = 255
    return expected


def test_coco_masks_agree_with_pycocotools_ann_to_mask(coco_root: Path) -> None:
    path = coco_root / "annotations" / "instances_train2017.json"
    reference = _quiet(COCOApi, str(path))
    # Category 3 ("cat") is left out: its objects become background.
    datamodule = _quiet(
        COCOSegmentation, str(coco_root), val_split="train2017", categories=[7, 1], **RAW
    )
    assert datamodule.classes == ["background", "coffee", "astronaut"]
    assert datamodule.category_ids == [7, 1] and datamodule.num_classes == 3
    with pytest.warns(UserWarning, match=r"COCOSegmentation train2017: 7 images, \d+ objects "
                      r"painted \(1 crowd regions as 255\); \d+ objects of other categories "
                      r"left as background \(unknown category ids \[99\]\)"):  # fmt: skip
        datamodule.setup("fit")
    seen = {"overlap": 0, "crowd": 0, "left out": 0}
    for (image, mask), image_id in zip(
        _items(datamodule.val_dataset), sorted(reference.getImgIds()), strict=True
    ):
        expected = _expected_coco_mask(reference, image_id, {7: 1, 1: 2})
        assert mask.dtype == torch.int64 and np.array_equal(mask.numpy(), expected)
        info = reference.loadImgs(image_id)[0]
        assert image.shape == (3, info["height"], info["width"])
        # Each case occurs: cat pixels as background, a crowd, two classes overlapping.
        everything = _expected_coco_mask(reference, image_id, {7: 1, 1: 2, 3: 3})
        seen["left out"] += int(((everything == 3) & (expected == 0)).sum())
        crowd = np.zeros_like(expected, dtype=bool)
        for annotation in reference.loadAnns(reference.getAnnIds(imgIds=image_id)):
            if annotation["iscrowd"]:
                crowd |= reference.annToMask(annotation) > 0
        seen["crowd"] += int(crowd.sum())
        seen["overlap"] += int(((expected == 255) & ~crowd).sum())
    assert all(count > 0 for count in seen.values()), seen
    all_categories = _quiet(COCOSegmentation, str(coco_root))
    assert all_categories.classes == ["background", *COCO_CLASSES]


def test_digit_scenes_masks_agree_with_the_coco_tree_of_the_same_scenes(scenes_root) -> None:
    options = {"num_train": 12, "num_val": 4, "batch_size": 4}
    datamodule = DigitScenesSegmentation(str(scenes_root), **options)
    # Known before the files exist, so the CLI can link num_classes into the model.
    assert not scenes_root.exists()
    assert datamodule.classes == ["background", *map(str, range(10))]
    assert datamodule.num_classes == 11
    _setup(datamodule)
    images, masks = next(iter(datamodule.train_dataloader()))
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.float32
    assert masks.shape == (4, 64, 64) and masks.dtype == torch.int64
    assert set(masks.unique().tolist()) <= set(range(11)) | {255}
    # The COCO tree's instance masks, painted by COCOSegmentation: equal wherever the VOC
    # masks have no ring; the ring is background in COCO, next to an object.
    coco = _setup(COCOSegmentation(str(scenes_root / "coco"), "train", "val", **RAW), "validate")
    voc_root = str(scenes_root / "VOCdevkit" / "VOC2012")
    voc = _setup(VOCSegmentation(voc_root, classes=datamodule.classes, **RAW), "validate")
    assert coco.classes == datamodule.classes
    digit_pixels = 0
    for (_, painted), (_, mask) in zip(
        _items(coco.val_dataset), _items(voc.val_dataset), strict=True
    ):
        ring = mask == 255
        assert torch.equal(painted[~ring], mask[~ring]) and (painted[ring] == 0).all()
        grown = torch.nn.functional.max_pool2d((painted > 0)[None].float(), 3, 1, 1)[0] > 0
        assert ring.any() and (grown[ring]).all()
        digit_pixels += int((mask > 0).sum() - ring.sum())
    assert digit_pixels > 4 * 100
    scaled = _setup(
        DigitScenesSegmentation(
            str(scenes_root), crop_size=64, train_transforms="scale_crop", **options
        )
    )
    images, masks = next(iter(scaled.train_dataloader()))
    assert images.shape == (4, 3, 64, 64) and masks.shape == (4, 64, 64)


# -- the crop presets ----------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["crop", "crop_flip"])
def test_crops_take_the_same_window_of_image_and_mask(preset: str) -> None:
    pipeline = transforms.segmentation_train_transform(preset, CROP, **RAW)
    flips = 0
    for size in ((40, 48), (32, 40), (60, 41)):
        image, mask = _position_image(*size)
        for _ in range(8):
            out = pipeline(image=image, mask=mask)
            pixels = (out["image"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            assert pixels.shape[:2] == CROP and tuple(out["mask"].shape) == CROP
            assert np.array_equal(out["mask"].numpy(), _mask_of(pixels))
            rows, columns = pixels[..., 0].astype(int), pixels[..., 1].astype(int)
            assert (np.diff(rows, axis=0) == 1).all() and (np.diff(rows, axis=1) == 0).all()
            steps = np.unique(np.diff(columns, axis=1))
            assert len(steps) == 1 and steps[0] in ((1, -1) if preset == "crop_flip" else (1,))
            flips += steps[0] == -1
    assert (flips > 0) == (preset == "crop_flip")


def test_small_images_are_padded_with_ignore_or_dropped(voc_root: Path, caplog) -> None:
    image, mask = _position_image(20, 30)
    pipeline = transforms.segmentation_train_transform("crop", CROP)
    out = pipeline(image=image, mask=mask)
    assert tuple(out["mask"].shape) == CROP
    assert np.array_equal(out["mask"][:20, :30].numpy(), mask)  # bottom and right padding
    assert (out["mask"][20:] == 255).all() and (out["mask"][:, 30:] == 255).all()
    # The mean colour, rounded to whole pixel values: within half a grey level of 0.
    padding = out["image"][:, 20:]
    assert padding.abs().max() < 0.5 / 255 / min(transforms.IMAGENET_STD)
    padded = _setup(VOCSegmentation(str(voc_root), crop_size=CROP, batch_size=5))
    assert len(padded.train_dataset) == len(SIZES)
    images, masks = next(iter(padded.train_dataloader()))
    assert images.shape == (5, 3, *CROP) and masks.shape == (5, *CROP)
    assert (masks == 255).float().mean() > 0.05  # the padding of the small ones
    caplog.set_level(logging.INFO)
    dropped = _setup(VOCSegmentation(str(voc_root), crop_size=CROP, small_images="drop"))
    assert len(dropped.train_dataset) == len(SIZES) - 2 and len(dropped.val_dataset) == len(SIZES)
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert lines == [
        "VOCSegmentation train: dropped 2 of 5 training images smaller than the 32 x 40 crop "
        "(small_images='drop')"
    ]
    assert all(image.shape[1:] == CROP for image, _ in _items(dropped.train_dataset))


def test_scale_crop_keeps_mask_values_and_varies_the_scale() -> None:
    image, mask = _position_image(40, 48)
    pipeline = transforms.segmentation_train_transform("scale_crop_flip", CROP, **RAW)
    pipeline.set_random_seed(0)
    copy = pickle.loads(pickle.dumps(pipeline))  # workers started with spawn
    assert torch.equal(
        copy(image=image, mask=mask)["mask"], pipeline(image=image, mask=mask)["mask"]
    )
    row_steps = set()
    for _ in range(40):
        out = pipeline(image=image, mask=mask)
        assert tuple(out["mask"].shape) == CROP
        assert set(out["mask"].unique().tolist()) <= set(np.unique(mask).tolist()) | {255}
        rows = (out["image"][0] * 255).round()
        valid = out["mask"] != 255
        span = rows[valid].max() - rows[valid].min() if valid.any() else 0
        row_steps.add(round(float(span) / max(int(valid.any(1).sum()) - 1, 1), 1))
        # Nearest-neighbour for masks: a mask of two values keeps them, none in between.
        two = pipeline(image=image, mask=np.where(mask % 2 == 0, 1, 20).astype(np.uint8))
        assert set(two["mask"].unique().tolist()) <= {1, 20, 255}
    # Rows 1/scale apart: scale in 0.5-2, enlarged and shrunk.
    assert min(row_steps) < 0.8 and max(row_steps) > 1.1 and max(row_steps) <= 2


# -- batches and collation --------------------------------------------------------------------


def test_eval_batches_pad_to_the_largest_image_with_zero_and_ignore(voc_root: Path) -> None:
    datamodule = _setup(VOCSegmentation(str(voc_root), batch_size=3))
    items = _items(datamodule.val_dataset)
    images, masks = next(iter(datamodule.val_dataloader()))
    height, width = max(s[0] for s in SIZES[:3]), max(s[1] for s in SIZES[:3])
    assert images.shape == (3, 3, height, width) and masks.shape == (3, height, width)
    for row, (image, mask) in enumerate(items[:3]):
        h, w = mask.shape
        assert torch.equal(images[row, :, :h, :w], image) and torch.equal(masks[row, :h, :w], mask)
        assert (images[row, :, h:] == 0).all() and (images[row, :, :, w:] == 0).all()
        assert (masks[row, h:] == 255).all() and (masks[row, :, w:] == 255).all()
    same = collate_segmentation(items[:1] * 2)
    assert torch.equal(same[0][1], items[0][0]) and torch.equal(same[1][0], items[0][1])
    grey = _setup(VOCSegmentation(str(voc_root), in_channels=1, crop_size=CROP, batch_size=5))
    images, masks = next(iter(grey.train_dataloader()))
    assert images.shape == (5, 1, *CROP) and masks.dtype == torch.int64


def test_held_out_validation_and_predict_on_it(voc_root: Path) -> None:
    datamodule = _setup(
        VOCSegmentation(str(voc_root), val_split=None, val_fraction=0.4, seed=1), "predict"
    )
    assert len(datamodule.val_dataset) == 2 and len(datamodule.train_dataset) == 3
    assert sum(len(masks) for _, masks in datamodule.predict_dataloader()) == 2
    with pytest.raises(RuntimeError, match="test_split is None.*ImageSets/Segmentation"):
        _setup(VOCSegmentation(str(voc_root)), "test")


def test_datasets_pickle_for_spawned_workers(coco_root: Path, voc_root: Path) -> None:
    for datamodule in (
        COCOSegmentation(str(coco_root), train_transforms="flip"),
        VOCSegmentation(str(voc_root), crop_size=CROP),
    ):
        _setup(datamodule)
        copy = pickle.loads(pickle.dumps(datamodule.val_dataset))
        assert torch.equal(copy[1][1], datamodule.val_dataset[1][1])
        image, mask = pickle.loads(pickle.dumps(datamodule.train_dataset))[1]
        assert image.shape[0] == 3 and mask.dtype == torch.int64


# -- errors that name the value, the file and the fix -----------------------------------------


def test_presets_crop_sizes_and_small_images_are_checked(voc_root: Path) -> None:
    with pytest.raises(ValueError, match="unknown segmentation preset.*'none', 'flip', 'crop'"):
        VOCSegmentation(str(voc_root), train_transforms="course")
    for preset in ("crop", "crop_flip", "scale_crop", "scale_crop_flip"):
        with pytest.raises(ValueError, match=f"'{preset}' crops to crop_size.*set crop_size"):
            VOCSegmentation(str(voc_root), crop_size=None, train_transforms=preset)
    with pytest.raises(ValueError, match="small_images='shrink' must be 'pad'.*or 'drop'"):
        VOCSegmentation(str(voc_root), small_images="shrink")
    for crop_size in (0, (32,), (32, -1)):
        with pytest.raises(ValueError, match="crop_size=.* must be a positive int"):
            VOCSegmentation(str(voc_root), crop_size=crop_size)
    with pytest.raises(ValueError, match="classes='coco' is neither 'voc'"):
        VOCSegmentation(str(voc_root), classes="coco")
    with pytest.raises(ValueError, match="at least one class"):
        VOCSegmentation(str(voc_root), classes=["background"])
    assert VOCSegmentation(str(voc_root), crop_size=24).crop_size == (24, 24)


def test_voc_layout_errors_name_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="VOC root .*nowhere is not a folder"):
        VOCSegmentation(str(tmp_path / "nowhere"))
    voc = write_voc_segmentation(tmp_path, sizes=SIZES[:2], split_names=("train",))
    with pytest.raises(FileNotFoundError, match=f"VOC root {voc} has no ImageSets/Segmentation/"
                       "val.txt: point data.root at the VOCdevkit/VOC2012 folder"):  # fmt: skip
        VOCSegmentation(str(voc))
    (voc / "SegmentationClass" / "2012_train_001.png").unlink()
    with pytest.raises(FileNotFoundError, match="lists 2012_train_001, but .*2012_train_001.png"):
        _setup(VOCSegmentation(str(voc), val_split=None))


def test_bad_masks_name_the_file_and_the_fix(tmp_path: Path) -> None:
    voc = write_voc_segmentation(tmp_path, sizes=SIZES[:3], num_classes=4)
    masks = voc / "SegmentationClass"
    # Classes 1-3 only: a mask value of 7 is neither a class nor 255.
    save_palette_png(masks / "2012_val_001.png", np.full((36, 32), 7, dtype=np.uint8))
    four = ["background", "a", "b", "c"]
    with pytest.raises(ValueError, match=r"mask .*2012_val_001.png holds values \[7\].*4 classes"
                       ".*set classes to match the data"):  # fmt: skip
        _setup(VOCSegmentation(str(voc), classes=four, train_transforms="none"))  # in setup
    save_palette_png(masks / "2012_val_001.png", np.zeros((36, 32), dtype=np.uint8))
    datamodule = _setup(VOCSegmentation(str(voc), classes=four, train_transforms="none"))
    save_palette_png(
        masks / "2012_val_001.png", np.zeros((30, 32), dtype=np.uint8)
    )  # changed since
    with pytest.raises(ValueError, match=r"2012_val_001.png is 30 x 32 .* image .*2012_val_001.jpg"
                       " is 36 x 32"):  # fmt: skip
        datamodule.val_dataset[1]
    save_palette_png(masks / "2012_val_001.png", np.zeros((36, 32), dtype=np.uint8))
    # An RGB mask in VOC's colours reads as its indices; other colours are refused by name.
    indices = np.asarray(Image.open(masks / "2012_val_002.png"))
    Image.open(masks / "2012_val_002.png").convert("RGB").save(masks / "rgb.png")
    assert np.array_equal(read_mask(masks / "rgb.png"), indices)
    Image.new("RGB", (4, 4), (1, 2, 3)).save(masks / "rgb.png")
    with pytest.raises(
        ValueError, match=r"rgb.png is an RGB image with colours outside.*\(1, 2, 3\)"
    ):
        read_mask(masks / "rgb.png")
    (masks / "2012_train_000.png").write_bytes(b"")
    with pytest.raises(
        ValueError, match="unreadable mask file.*2012_train_000.png.*skip_bad_files"
    ):
        _setup(VOCSegmentation(str(voc), classes=four))
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        skipped = VOCSegmentation(str(voc), classes=four, skip_bad_files=True)
        skipped.setup("fit")
    assert len(skipped.train_dataset) == 2


def test_coco_categories_are_checked(coco_root: Path) -> None:
    with pytest.raises(
        ValueError, match=r"categories=\[1, 5\].*\[5\] are not among them.*1 \(astronaut\)"
    ):
        COCOSegmentation(str(coco_root), categories=[1, 5])
    with pytest.raises(ValueError, match=r"\[1\] repeat"):
        COCOSegmentation(str(coco_root), categories=[1, 1])


def test_jsonargparse_sees_the_segmentation_arguments(voc_root: Path) -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(VOCSegmentation, "data")
    defaults = parser.get_defaults().data
    assert defaults.crop_size == (320, 480) and defaults.train_transforms == "crop_flip"
    assert defaults.small_images == "pad" and defaults.classes == "voc"
    config = parser.parse_args([
        f"--data.root={voc_root}", "--data.crop_size=[24, 28]", "--data.small_images=drop",
        "--data.train_transforms=scale_crop_flip",
    ])  # fmt: skip
    datamodule = parser.instantiate(config).data
    assert datamodule.crop_size == (24, 28) and datamodule.small_images == "drop"
    scenes = ArgumentParser(exit_on_error=False)
    scenes.add_class_arguments(DigitScenesSegmentation, "data")
    defaults = scenes.get_defaults().data
    assert defaults.crop_size is None and defaults.train_transforms == "none"
