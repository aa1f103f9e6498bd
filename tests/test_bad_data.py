"""Every bad dataset on disk speaks (issue 16): one readable error naming the file and the fix,
raised by ``prepare_data`` or ``setup`` before training starts, or the documented handling (a
broken annotation dropped and counted in the split's report line); never a raw library
traceback, never a crash in a DataLoader worker mid-epoch.

Each test builds the bad data in its real format in a tmp folder, as a stranger's download
would look, and reads it with the real loaders, as a user would: construct the datamodule,
``prepare_data()``, ``setup()``, then index the datasets or iterate a loader.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import (
    COCO,
    MNIST,
    COCOSegmentation,
    DigitScenes,
    DigitScenesSegmentation,
    FashionMNIST,
    ImageFolder,
    ImageNetSubset,
    VOCDetection,
    VOCSegmentation,
    write_idx,
)
from datamodules import scenes as scenes_module
from datamodules.scenes import write_digit_scenes
from tests._detection_files import write_coco, write_voc
from tests._idx_files import IDX_FILES, write_mnist_files
from tests._image_files import photos, save_image, write_digit_classes, write_ilsvrc
from tests._segmentation_files import save_palette_png, write_voc_segmentation

REPO = Path(__file__).resolve().parents[1]


def _run(datamodule, stage: str = "fit"):
    """What a Trainer does before and during an epoch: prepare, set up, read every batch."""
    datamodule.prepare_data()
    datamodule.setup(stage)
    loaders = (
        [datamodule.train_dataloader(), datamodule.val_dataloader()]
        if stage == "fit"
        else [getattr(datamodule, f"{stage}_dataloader")()]
    )
    for loader in loaders:
        for _ in loader:
            pass
    return datamodule


def _report_lines(function: Callable[[], object]) -> list[str]:
    """The warnings ``function`` gives (where the split reports of the datamodules go)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        function()
    return [str(warning.message) for warning in caught]


# -- ImageFolder ------------------------------------------------------------------------------


def _folder(root: Path, **kwargs) -> ImageFolder:
    options = dict(image_size=8, resize_size=8, batch_size=4, train_transforms="none")
    return ImageFolder(str(root), **{**options, **kwargs})


def test_image_folder_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"root .*nowhere is not a folder; point data.root"):
        _folder(tmp_path / "nowhere")


def test_image_folder_images_directly_in_root(tmp_path: Path) -> None:
    save_image(tmp_path / "cat.jpg", Image.fromarray(photos()[1]))
    with pytest.raises(FileNotFoundError, match=r"has no class folders.*root/<class>/<image>.jpg"):
        _folder(tmp_path)


def test_image_folder_train_without_val_holds_validation_out(tmp_path: Path) -> None:
    write_digit_classes(tmp_path / "train", per_class=2)
    datamodule = _run(_folder(tmp_path, val_fraction=0.5))
    assert datamodule.split_dirs["val"] is None
    assert len(datamodule.train_dataset) + len(datamodule.val_dataset) == 20


def test_image_folder_val_with_other_classes(tmp_path: Path) -> None:
    write_digit_classes(tmp_path / "train", per_class=2)
    write_digit_classes(tmp_path / "val", per_class=1)
    (tmp_path / "val" / "3").rename(tmp_path / "val" / "three")
    with pytest.raises(FileNotFoundError, match=r"val has classes \['three'\] that the training "
                       r"split .*train lacks \(it has 10 class folders\).*named after"):  # fmt: skip
        _folder(tmp_path).setup("fit")


def test_image_folder_empty_class_folder(tmp_path: Path) -> None:
    write_digit_classes(tmp_path, per_class=2)
    shutil.rmtree(tmp_path / "4")
    (tmp_path / "4").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"class folder .*4 has no images.*remove the class"
    ):
        _folder(tmp_path).setup("fit")


@pytest.mark.parametrize("damage", ["zero-byte", "truncated"])
def test_image_folder_bad_jpeg_is_named_in_setup(tmp_path: Path, damage: str) -> None:
    write_digit_classes(tmp_path, per_class=2)
    jpeg = tmp_path / "2" / "0.jpg"
    data = jpeg.read_bytes()
    jpeg.write_bytes(b"" if damage == "zero-byte" else data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(str(jpeg)) + ".*skip_bad_files: true"):
        _folder(tmp_path).setup("fit")
    skipping = _folder(tmp_path, skip_bad_files=True, val_fraction=0)
    assert any("skipped 1 unreadable" in line for line in _report_lines(lambda: _run(skipping)))
    assert len(skipping.train_dataset) == 19


def test_image_folder_damage_only_a_decode_finds_names_the_file(tmp_path: Path) -> None:
    # Garbage inside a PNG's image data, header and end chunk intact: setup's cheap check
    # passes it, so the loader that decodes it must name it.
    write_digit_classes(tmp_path, per_class=2)
    buffer = io.BytesIO()
    Image.fromarray(photos()[0]).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.find(b"IDAT") + 40
    data[start : start + 20] = bytes(20)
    (tmp_path / "5" / "corrupt.png").write_bytes(bytes(data))
    datamodule = _folder(tmp_path, val_fraction=0)
    datamodule.setup("fit")
    position = [path.name for path, _ in datamodule.train_dataset.samples].index("corrupt.png")
    with pytest.raises(ValueError, match=r"cannot decode image .*5/corrupt.png.*skip_bad_files"):
        datamodule.train_dataset[position]


def test_image_folder_every_file_unreadable_and_skipped(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "0.jpg").write_bytes(b"")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "0.png").write_bytes(b"not a png")
    with pytest.raises(
        ValueError,
        match=r"train split has no images \(2 listed, all unreadable and skipped\): replace the files$",
    ):
        _folder(tmp_path, skip_bad_files=True).setup("fit")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 4}, r"num_classes=4, but ImageFolder has num_classes=10"),
        ({"in_channels": 1}, r"in_channels=1, but ImageFolder has in_channels=3"),
    ],
    ids=["classes", "channels"],
)
def test_image_folder_that_disagrees_with_the_model(tmp_path: Path, kwargs, message) -> None:
    """In Python the task and the data each state their classes and channels (the CLI links
    them): a mismatch stops in setup, before a step, not as cross-entropy's "Target 7 is out of
    bounds" or a convolution's channel error."""
    from tasks import ImageClassifier
    from tests._trainers import cpu_trainer

    write_digit_classes(tmp_path / "digits", per_class=2)
    task = ImageClassifier("lenet", **{"num_classes": 10, "in_channels": 3, **kwargs})
    trainer = cpu_trainer(tmp_path, max_epochs=1)
    with pytest.raises(ValueError, match=message + r".*Build the task with"):
        trainer.fit(task, _folder(tmp_path / "digits", image_size=28, resize_size=28))
    assert trainer.global_step == 0


# -- ImageNetSubset ---------------------------------------------------------------------------


def _imagenet(root: Path, **kwargs) -> ImageNetSubset:
    options = dict(image_size=8, resize_size=8, batch_size=4, train_transforms="none")
    return ImageNetSubset(str(root), **{**options, **kwargs})


def test_imagenet_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere/ILSVRC/Data/CLS-LOC/train .*data.root"):
        _imagenet(tmp_path / "nowhere")


def test_imagenet_without_train(tmp_path: Path) -> None:
    data = write_ilsvrc(tmp_path, "folders", train=1, val=1)
    shutil.rmtree(data / "train")
    with pytest.raises(FileNotFoundError, match=r"found no class folders in .*train.*train/<wnid>"):
        _imagenet(tmp_path)


def test_imagenet_flat_val_without_solution_file(tmp_path: Path) -> None:
    write_ilsvrc(tmp_path, "flat", train=1, val=1)
    (tmp_path / "LOC_val_solution.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"labels must come from LOC_val_solution.csv"):
        _imagenet(tmp_path).setup("test")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"image;label\nx;y\n", r"header \['image;label'\] lacks ImageId and PredictionString"),
        (b"ImageId,PredictionString\nILSVRC2012_val_00000000\n", r"csv, line 2: .* no"),
        (b"\xff\xfe\x00\x01\x80binary", r"LOC_val_solution.csv is not a UTF-8 text file"),
    ],
    ids=["header", "row", "binary"],
)
def test_imagenet_malformed_solution_file(tmp_path: Path, content: bytes, message: str) -> None:
    write_ilsvrc(tmp_path, "flat", train=1, val=1)
    (tmp_path / "LOC_val_solution.csv").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        _imagenet(tmp_path).setup("test")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"n01440764\n", r"LOC_synset_mapping.txt, line 1: 'n01440764' is not '<wnid> <name>"),
        (b"\x89PNG\r\n\x1a\n\x00\xff", r"LOC_synset_mapping.txt is not a UTF-8 text file"),
    ],
    ids=["line", "binary"],
)
def test_imagenet_malformed_synset_mapping(tmp_path: Path, content: bytes, message: str) -> None:
    write_ilsvrc(tmp_path, "folders", train=1, val=1)
    (tmp_path / "LOC_synset_mapping.txt").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        _imagenet(tmp_path)


def test_imagenet_subset_wnid_not_there(tmp_path: Path) -> None:
    write_ilsvrc(tmp_path, "folders", train=1, val=1)
    with pytest.raises(FileNotFoundError, match=r"no class folder for n09999999 .*copy those"):
        _imagenet(tmp_path, subset=["n01440764", "n09999999"])


def test_imagenet_subset_count_beyond_the_class_folders(tmp_path: Path) -> None:
    write_ilsvrc(tmp_path, "folders", train=1, val=1)
    with pytest.raises(ValueError, match=r"subset=99 classes, but .* has 14 class folders"):
        _imagenet(tmp_path, subset=99)


# -- MNIST / FashionMNIST IDX -----------------------------------------------------------------


def test_mnist_missing_files_offline_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as raised:
        MNIST(str(tmp_path)).prepare_data()
    message = str(raised.value)
    assert "missing train-images-idx3-ubyte" in message and "download=True" in message
    assert (
        f"Put the four IDX files of MNIST (from http://yann.lecun.com/exdb/mnist/) in {tmp_path}"
        in message
    )
    assert str(tmp_path / "MNIST" / "raw") in message


def test_fashion_mnist_failed_download_says_so_and_where_to_put_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: [Errno -3] no network")

    monkeypatch.setattr(FashionMNIST, "_torchvision_dataset", offline)
    with pytest.raises(FileNotFoundError) as raised:
        FashionMNIST(str(tmp_path), download=True).prepare_data()
    message = str(raised.value)
    assert "Downloading with torchvision failed: Error downloading" in message
    assert "Put the four IDX files of FashionMNIST" in message and str(tmp_path) in message


def _mnist_files(root: Path) -> Path:
    write_mnist_files(root, num_train=20, num_test=10, gz=False)
    return root


def _mnist_setup(root: Path) -> MNIST:
    datamodule = MNIST(str(root), batch_size=8)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_mnist_truncated_idx_file(tmp_path: Path) -> None:
    images = _mnist_files(tmp_path) / IDX_FILES["train"][0]
    images.write_bytes(images.read_bytes()[:5000])
    with pytest.raises(ValueError, match=re.escape(str(images)) + r": file is truncated.*again"):
        _mnist_setup(tmp_path)


def test_mnist_truncated_gzip_file(tmp_path: Path) -> None:
    write_mnist_files(tmp_path, num_train=20, num_test=10, gz=True)
    images = tmp_path / f"{IDX_FILES['train'][0]}.gz"
    images.write_bytes(images.read_bytes()[:500])
    with pytest.raises(ValueError, match=r"idx3-ubyte.gz: corrupt or truncated gzip stream"):
        _mnist_setup(tmp_path)


def test_mnist_wrong_magic_number(tmp_path: Path) -> None:
    labels = _mnist_files(tmp_path) / IDX_FILES["train"][1]
    labels.write_bytes(b"\x08\x08\x08\x01" + labels.read_bytes()[4:])
    with pytest.raises(ValueError, match=r"idx1-ubyte is not an IDX file: .* 08 08 08 01"):
        _mnist_setup(tmp_path)


def test_mnist_images_and_labels_of_different_counts(tmp_path: Path) -> None:
    labels = _mnist_files(tmp_path) / IDX_FILES["train"][1]
    write_idx(labels, torch.zeros(19, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"expected 20 labels to match .*different splits"):
        _mnist_setup(tmp_path)


def test_mnist_labels_outside_the_classes(tmp_path: Path) -> None:
    labels = _mnist_files(tmp_path) / IDX_FILES["test"][1]
    write_idx(labels, (torch.arange(10) + 3).to(torch.uint8))  # 3..12
    with pytest.raises(ValueError, match=re.escape(str(labels)) + r": labels span 3..12, but "
                       r"MNIST has 10 classes \(0..9\)"):  # fmt: skip
        MNIST(str(tmp_path)).setup("test")


def test_mnist_images_file_that_holds_no_uint8_images(tmp_path: Path) -> None:
    images = _mnist_files(tmp_path) / IDX_FILES["train"][0]
    write_idx(images, torch.zeros(20, 28 * 28, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"idx3-ubyte: expected uint8 images \[N, H, W\], got "
                       r"torch.int32 of shape \(20, 784\); is it an images file"):  # fmt: skip
        _mnist_setup(tmp_path)


def test_mnist_files_without_images(tmp_path: Path) -> None:
    images, labels = (_mnist_files(tmp_path) / name for name in IDX_FILES["train"])
    write_idx(images, torch.zeros(0, 28, 28, dtype=torch.uint8))
    write_idx(labels, torch.zeros(0, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"idx3-ubyte holds no images \(shape \(0, 28, 28\)\)"):
        _mnist_setup(tmp_path)


def test_mnist_float_labels_are_refused(tmp_path: Path) -> None:
    labels = _mnist_files(tmp_path) / IDX_FILES["train"][1]
    write_idx(labels, torch.full((20,), 2.7))  # .long() would make them all 2
    with pytest.raises(ValueError, match=r"labels are torch.float32, expected integers"):
        _mnist_setup(tmp_path)


# -- COCO -------------------------------------------------------------------------------------


def _coco_json(root: Path, edit: Callable[[dict], object] | None = None) -> Path:
    path = write_coco(root, "train2017", bad=False)
    if edit is not None:
        dataset = json.loads(path.read_text())
        edit(dataset)
        path.write_text(json.dumps(dataset))
    return path


def _coco(root: Path, **kwargs) -> COCO:
    options = dict(val_split=None, val_fraction=0.3, batch_size=4, image_size=32)
    return COCO(str(root), **{**options, **kwargs})


@pytest.mark.parametrize(
    "damage",
    [lambda text: text.replace('"images"', "'images'", 1), lambda text: text[: len(text) // 2]],
    ids=["malformed", "truncated"],
)
def test_coco_json_that_does_not_parse(tmp_path: Path, damage) -> None:
    path = _coco_json(tmp_path)
    path.write_text(damage(path.read_text()))
    with pytest.raises(ValueError, match=re.escape(str(path)) + r" is not valid JSON.*write it"):
        _coco(tmp_path)


def test_coco_images_listed_but_missing_on_disk(tmp_path: Path) -> None:
    _coco_json(tmp_path)
    (tmp_path / "train2017" / "000000000789.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"lists image .*000000000789.jpg, which does not"):
        _coco(tmp_path).setup("fit")


def test_coco_duplicate_image_ids(tmp_path: Path) -> None:
    def duplicate(dataset: dict) -> None:
        dataset["images"][1]["id"] = dataset["images"][0]["id"]

    _coco_json(tmp_path, duplicate)
    with pytest.raises(ValueError, match=r"image ids \[900\] appear more than once in 'images'"):
        _coco(tmp_path)


@pytest.mark.parametrize(
    "bbox", [["2", "3", "10", "8"], [2, 3, 10], None, [2, 3, True, 8]], ids=str
)
def test_coco_bbox_that_is_not_four_numbers_is_dropped_and_counted(tmp_path: Path, bbox) -> None:
    def damage(dataset: dict) -> None:
        dataset["annotations"][0]["bbox"] = bbox

    _coco_json(tmp_path, damage)
    datamodule = _coco(tmp_path, val_fraction=0)
    lines = _report_lines(lambda: _run(datamodule))
    assert any(
        "7 images, 14 boxes; dropped 1 box without 4 numeric coordinates" in line for line in lines
    ), lines


@pytest.mark.parametrize(
    ("segmentation", "message"),
    [
        (5, r"annotation 1 .* has no instance mask"),
        ({"size": [40, 48]}, r"annotation 1 .* has no instance mask"),
        ([["a", "b", "c", "d", "e", "f"]], r"annotation 1 .*is not a list of polygons"),
        ([5, 6, 7], r"annotation 1 .*is not a list of polygons"),
        (
            {"size": [3, 3], "counts": "0"},
            r"RLE segmentation has size \[3, 3\], but its image is 40",
        ),
        ({"size": [40, 48], "counts": "zz"}, r"counts that do not decode to height x width"),
        ({"size": [40, 48], "counts": [5, 7]}, r"run lengths summing to height x width"),
    ],
    ids=["int", "no-counts", "strings", "flat-ints", "rle-size", "rle-string", "rle-counts"],
)
def test_coco_segmentation_of_the_wrong_type_is_refused_in_setup(
    tmp_path: Path, segmentation, message: str
) -> None:
    def damage(dataset: dict) -> None:
        dataset["annotations"][0]["segmentation"] = segmentation

    _coco_json(tmp_path, damage)
    _run(_coco(tmp_path))  # boxes alone do not need it
    with pytest.raises(ValueError, match=message):
        _coco(tmp_path, masks=True).setup("fit")
    with pytest.raises(ValueError, match=message):  # the category of annotation 1 is kept
        COCOSegmentation(str(tmp_path), val_split=None, crop_size=16).setup("fit")


def test_coco_category_ids_not_in_categories_are_dropped_and_counted(tmp_path: Path) -> None:
    def damage(dataset: dict) -> None:
        dataset["annotations"][0]["category_id"] = 55

    _coco_json(tmp_path, damage)
    lines = _report_lines(lambda: _run(_coco(tmp_path)))
    assert any("dropped 1 box with unknown category 55" in line for line in lines), lines


def test_coco_empty_annotation_list_keeps_the_images(tmp_path: Path) -> None:
    _coco_json(tmp_path, lambda dataset: dataset.update(annotations=[]))
    datamodule = _run(_coco(tmp_path, val_fraction=0))
    assert len(datamodule.train_dataset) == 7
    assert all(len(annotation.boxes) == 0 for _, annotation in datamodule.train_dataset.samples)


def test_coco_empty_image_list(tmp_path: Path) -> None:
    _coco_json(tmp_path, lambda dataset: dataset.update(images=[]))
    with pytest.raises(ValueError, match=r"train split has no images; .*instances_train2017.json "
                       "lists no images"):  # fmt: skip
        _coco(tmp_path).setup("fit")


@pytest.mark.parametrize(
    ("field", "value"), [("height", "abc"), ("width", None), ("file_name", None), ("id", 1.5)]
)
def test_coco_image_entry_without_a_usable_field(tmp_path: Path, field: str, value) -> None:
    def damage(dataset: dict) -> None:
        if value is None:
            del dataset["images"][2][field]
        else:
            dataset["images"][2][field] = value

    _coco_json(tmp_path, damage)
    with pytest.raises(ValueError, match=rf"images\[2\] .* lacks a valid {field}; every image"):
        _coco(tmp_path)


def test_coco_category_or_annotation_without_its_fields(tmp_path: Path) -> None:
    path = _coco_json(tmp_path, lambda dataset: dataset["categories"][1].pop("name"))
    with pytest.raises(ValueError, match=r"categories\[1\] \({'id': 1}\) needs an integer 'id' "
                       "and a 'name'"):  # fmt: skip
        _coco(tmp_path)
    _coco_json(tmp_path, lambda dataset: dataset["annotations"][0].pop("category_id"))
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": an entry lacks a field "
                       r"pycocotools needs \(KeyError: 'category_id'\)"):  # fmt: skip
        _coco(tmp_path)


def test_coco_crowd_flag_that_is_not_0_or_1(tmp_path: Path) -> None:
    def damage(dataset: dict) -> None:
        dataset["annotations"][3]["iscrowd"] = "yes"

    _coco_json(tmp_path, damage)
    with pytest.raises(ValueError, match=r"annotation 4 has iscrowd='yes'; it must be 0"):
        _coco(tmp_path)


def test_coco_size_in_the_json_differs_from_the_file_with_masks(tmp_path: Path) -> None:
    def damage(dataset: dict) -> None:
        dataset["images"][0]["height"] = 400  # the file is 40 pixels high

    _coco_json(tmp_path, damage)
    _run(_coco(tmp_path))  # boxes are clamped to the file
    expected = r"image 900 of .* has height 400 and width 48, but the file .* is 40 x 48"
    with pytest.raises(ValueError, match=expected):
        _coco(tmp_path, masks=True).setup("fit")
    with pytest.raises(ValueError, match=expected):
        COCOSegmentation(str(tmp_path), val_split=None, crop_size=16).setup("fit")


def test_coco_annotations_of_unknown_images_are_counted(tmp_path: Path) -> None:
    def damage(dataset: dict) -> None:
        dataset["annotations"][0]["image_id"] = 123456

    _coco_json(tmp_path, damage)
    lines = _report_lines(lambda: _run(_coco(tmp_path)))
    assert any("ignored annotations of image ids not in 'images' (1)" in line for line in lines)


# -- VOC detection ----------------------------------------------------------------------------


def _voc(voc: Path, **kwargs) -> VOCDetection:
    return VOCDetection(str(voc), **{"batch_size": 4, "image_size": 32, **kwargs})


def _xml(voc: Path, position: int) -> Path:
    return voc / "Annotations" / f"2012_train_{position:03d}.xml"


def test_voc_malformed_xml(tmp_path: Path) -> None:
    voc = write_voc(tmp_path)
    _xml(voc, 2).write_bytes(b"<annotation><size><width>4")
    with pytest.raises(ValueError, match=r"2012_train_002.xml is not valid XML .*replace it"):
        _voc(voc).setup("fit")


def test_voc_xml_without_size_takes_the_image_files_size(tmp_path: Path) -> None:
    voc = write_voc(tmp_path)
    _xml(voc, 2).write_text(re.sub(r"<size>.*?</size>", "", _xml(voc, 2).read_text()))
    datamodule = _voc(voc)
    datamodule.setup("fit")
    with Image.open(voc / "JPEGImages" / "2012_train_002.jpg") as image:
        size = (image.height, image.width)
    records = {path.stem: annotation for path, annotation in datamodule.train_dataset.samples}
    assert records["2012_train_002"].orig_size == size == (48, 40)


def test_voc_degenerate_and_outside_boxes_are_dropped_or_clamped_and_counted(
    tmp_path: Path,
) -> None:
    voc = write_voc(tmp_path)  # image 0 has two degenerate boxes and one wholly outside
    lines = _report_lines(lambda: _run(_voc(voc)))
    assert any(
        "dropped 3 degenerate boxes" in line and "clamped 1 box to the image" in line
        for line in lines
    ), lines


def test_voc_object_without_bndbox_is_dropped_and_counted(tmp_path: Path) -> None:
    voc = write_voc(tmp_path)
    text = _xml(voc, 1).read_text()
    _xml(voc, 1).write_text(re.sub(r"<bndbox>.*?</bndbox>", "", text, count=1))
    lines = _report_lines(lambda: _run(_voc(voc)))
    assert any("dropped 1 box without 4 numeric coordinates, 3 degenerate" in x for x in lines)


def test_voc_name_not_in_the_classes_is_dropped_and_counted(tmp_path: Path) -> None:
    voc = write_voc(tmp_path)
    _xml(voc, 1).write_text(_xml(voc, 1).read_text().replace("<name>", "<name>x", 1))
    lines = _report_lines(lambda: _run(_voc(voc)))
    assert any("2 boxes with unknown classes 'unicorn', 'x" in line for line in lines), lines


def test_voc_classes_that_name_none_of_the_objects(tmp_path: Path) -> None:
    voc = write_voc(tmp_path)
    with pytest.raises(ValueError, match=r"no object of the train split belongs to the 2 classes "
                       r"\['Cat', 'Dog'\]; its annotations name 'car', 'cat', 'dog', "
                       "'person', 'unicorn'. Set classes to match"):  # fmt: skip
        _voc(voc, classes=["Cat", "Dog"]).setup("fit")
    _run(_voc(voc, classes=["cat", "dog"]))  # the other objects are dropped and counted


def test_voc_missing_and_empty_split_files(tmp_path: Path) -> None:
    voc = write_voc(tmp_path)
    (voc / "ImageSets" / "Main" / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no ImageSets/Main/val.txt: point data.root"):
        _voc(voc)
    (voc / "ImageSets" / "Main" / "val.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"val split has no images; .*val.txt lists no image ids"):
        _voc(voc).setup("fit")


# -- VOC segmentation -------------------------------------------------------------------------


def _segmentation(voc: Path, **kwargs) -> VOCSegmentation:
    return VOCSegmentation(str(voc), **{"batch_size": 2, "crop_size": 16, **kwargs})


def _mask(voc: Path, position: int, split: str = "train") -> Path:
    return voc / "SegmentationClass" / f"2012_{split}_{position:03d}.png"


def test_voc_mask_values_outside_the_classes_are_refused_in_setup(tmp_path: Path) -> None:
    voc = write_voc_segmentation(tmp_path)
    mask = np.array(Image.open(_mask(voc, 1)))
    mask[3, 3] = 40  # neither a VOC class (0..20) nor 255
    save_palette_png(_mask(voc, 1), mask)
    with pytest.raises(ValueError, match=r"2012_train_001.png holds values \[40\], but there are "
                       r"21 classes \(0..20, and 255 = ignore\); set classes"):  # fmt: skip
        _segmentation(voc).setup("fit")


def test_voc_mask_of_another_size_than_its_image_is_refused_in_setup(tmp_path: Path) -> None:
    voc = write_voc_segmentation(tmp_path)
    save_palette_png(_mask(voc, 2, "val"), np.zeros((10, 12), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"2012_val_002.png is 10 x 12 .* image .*2012_val_002"
                       r".jpg is 48 x 44"):  # fmt: skip
        _segmentation(voc).setup("validate")


def test_voc_classes_fewer_than_the_masks_hold(tmp_path: Path) -> None:
    voc = write_voc_segmentation(tmp_path, num_classes=21)
    with pytest.raises(ValueError, match=r"holds values \[.*\], but there are 3 classes .*and \d+ "
                       "more bad masks"):  # fmt: skip
        _segmentation(voc, classes=["background", "a", "b"]).setup("fit")
    _run(_segmentation(voc))  # the 21 VOC classes fit


def test_voc_segmentation_missing_split_file_and_mask(tmp_path: Path) -> None:
    voc = write_voc_segmentation(tmp_path)
    _mask(voc, 3).unlink()
    with pytest.raises(FileNotFoundError, match=r"lists 2012_train_003, but .*2012_train_003.png"):
        _segmentation(voc).setup("fit")
    (voc / "ImageSets" / "Segmentation" / "train.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"no ImageSets/Segmentation/train.txt: point"):
        _segmentation(voc)


# -- DigitScenes: a tree half written is never read as complete --------------------------------

TINY = {"num_train": 4, "num_val": 2}


@pytest.fixture(scope="module")
def clean_tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = write_digit_scenes(tmp_path_factory.mktemp("clean") / "digits", **TINY)
    return _contents(root)


def _contents(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# The scene writer imported without the package's __init__ (scenes.py and _scene_trees.py
# need neither torch nor Lightning), so the child starts in a second rather than ten.
_KILLED_WRITER = """
import os, signal, sys, types
package = types.ModuleType("datamodules")
package.__path__ = ["datamodules"]
sys.modules["datamodules"] = package
from datamodules import scenes
calls = []
def killed(*args):
    calls.append(args)
    if len(calls) == 3:  # half-way through the training images: SIGKILL, no clean-up runs
        os.kill(os.getpid(), signal.SIGKILL)
scenes._voc_pngs = killed
scenes.write_digit_scenes(sys.argv[1], num_train=4, num_val=2)
"""


def test_digit_scenes_writer_killed_mid_write_is_rewritten(
    tmp_path: Path, clean_tree: dict[str, bytes]
) -> None:
    root = tmp_path / "digits"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(root)], cwd=REPO, capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    left = [path.name for path in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".digits.tmp-"), left  # root never appeared
    DigitScenes(str(root), **TINY).prepare_data()
    assert _contents(root) == clean_tree
    assert [path.name for path in tmp_path.iterdir()] == ["digits"]  # the half tree is gone


def test_digit_scenes_folders_of_dead_writers_are_removed(
    tmp_path: Path, clean_tree: dict[str, bytes]
) -> None:
    """A writer killed while replacing a damaged tree leaves it moved aside (``.damaged-``) and
    its half-written successor (``.tmp-``); the next write removes both, not a live one's."""
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    host = socket.gethostname()
    left = [tmp_path / f".digits.{kind}-{host}-{dead}" for kind in ("tmp", "damaged")]
    alive = tmp_path / f".digits.tmp-{host}-{os.getppid()}"  # a live process (our parent)
    for folder in (*left, alive):
        (folder / "coco").mkdir(parents=True)
    DigitScenes(str(tmp_path / "digits"), **TINY).prepare_data()
    assert _contents(tmp_path / "digits") == clean_tree
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([alive.name, "digits"])


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_digit_scenes_tree_damaged_since_written_is_rewritten(
    tmp_path: Path, clean_tree: dict[str, bytes], damage: str
) -> None:
    root = write_digit_scenes(tmp_path / "digits", **TINY)
    victim = root / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "train_000002.png"
    if damage == "deleted":
        victim.unlink()
    else:
        victim.write_bytes(victim.read_bytes()[:40])
    datamodule = DigitScenesSegmentation(str(root), **TINY, batch_size=2)
    with pytest.warns(UserWarning, match=r"VOC2012/SegmentationClass/ holds \d+ files .*manifest "
                      r"says 6 .*writing it again"):  # fmt: skip
        datamodule.prepare_data()
    assert _contents(root) == clean_tree
    assert [path.name for path in tmp_path.iterdir()] == ["digits"]
    _run(datamodule)


def test_digit_scenes_unreadable_manifest_is_refused_and_kept(tmp_path: Path) -> None:
    # Never half written (the tree appears by one rename), so a broken manifest was damaged
    # later, by something else: the folder may not be ours to delete, and is kept.
    root = write_digit_scenes(tmp_path / "digits", **TINY)
    manifest = root / "scenes.json"
    manifest.write_text(manifest.read_text()[:100])
    with pytest.raises(ValueError, match=r"manifest .*scenes.json is unreadable .*delete .*digits"):
        DigitScenes(str(root), **TINY).prepare_data()
    assert (root / "coco" / "annotations" / "instances_train.json").is_file()


def test_digit_scenes_writer_that_raises_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    calls = []
    write_annotations = scenes_module._coco_annotations

    def fail_on_third(*args):
        calls.append(args)
        if len(calls) == 3:
            raise OSError("disk full")
        return write_annotations(*args)

    monkeypatch.setattr(scenes_module, "_coco_annotations", fail_on_third)
    with pytest.raises(OSError, match="disk full"):
        DigitScenes(str(tmp_path / "digits"), **TINY).prepare_data()
    assert list(tmp_path.iterdir()) == []
