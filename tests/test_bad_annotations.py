"""Every bad annotated dataset on disk speaks (issue 16): COCO JSON, VOC XML and masks, and
DigitScenes trees killed mid-write or damaged since. One readable error naming the file and
the fix, raised by ``prepare_data`` or ``setup`` before training starts, or the documented
handling (a broken annotation dropped and counted in the split's report line); never a raw
library traceback, never a crash in a DataLoader worker mid-epoch.

Each test builds the bad data in its real format in a tmp folder and reads it with the real
loaders, as ``test_bad_data.py`` does for images and labels.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules import (
    COCO,
    COCOSegmentation,
    DigitScenes,
    DigitScenesSegmentation,
    VOCDetection,
    VOCSegmentation,
)
from datamodules import scenes as scenes_module
from datamodules.scenes import write_digit_scenes
from tests._datamodule_runs import report_lines, run_stage
from tests._detection_files import write_coco, write_voc
from tests._segmentation_files import save_palette_png, write_voc_segmentation

REPO = Path(__file__).resolve().parents[1]


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


def test_coco_duplicate_category_ids(tmp_path: Path) -> None:
    """pycocotools keeps the last of two categories with one id: a class would vanish."""

    def duplicate(dataset: dict) -> None:
        dataset["categories"].append({**dataset["categories"][0], "name": "another"})

    _coco_json(tmp_path, duplicate)
    with pytest.raises(ValueError, match=r"category ids \[\d+\] appear more than once in "
                       r"'categories'; give every category its own id"):  # fmt: skip
        _coco(tmp_path)


@pytest.mark.parametrize(
    "bbox", [["2", "3", "10", "8"], [2, 3, 10], None, [2, 3, True, 8]], ids=str
)
def test_coco_bbox_that_is_not_four_numbers_is_dropped_and_counted(tmp_path: Path, bbox) -> None:
    def damage(dataset: dict) -> None:
        dataset["annotations"][0]["bbox"] = bbox

    _coco_json(tmp_path, damage)
    datamodule = _coco(tmp_path, val_fraction=0)
    lines = report_lines(lambda: run_stage(datamodule))
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
    run_stage(_coco(tmp_path))  # boxes alone do not need it
    with pytest.raises(ValueError, match=message):
        _coco(tmp_path, masks=True).setup("fit")
    with pytest.raises(ValueError, match=message):  # the category of annotation 1 is kept
        COCOSegmentation(str(tmp_path), val_split=None, crop_size=16).setup("fit")


def test_coco_category_ids_not_in_categories_are_dropped_and_counted(tmp_path: Path) -> None:
    def damage(dataset: dict) -> None:
        dataset["annotations"][0]["category_id"] = 55

    _coco_json(tmp_path, damage)
    lines = report_lines(lambda: run_stage(_coco(tmp_path)))
    assert any("dropped 1 box with unknown category 55" in line for line in lines), lines


def test_coco_empty_annotation_list_keeps_the_images(tmp_path: Path) -> None:
    _coco_json(tmp_path, lambda dataset: dataset.update(annotations=[]))
    datamodule = run_stage(_coco(tmp_path, val_fraction=0))
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
    run_stage(_coco(tmp_path))  # boxes are clamped to the file
    expected = r"image 900 of .* has height 400 and width 48, but the file .* is 40 x 48"
    with pytest.raises(ValueError, match=expected):
        _coco(tmp_path, masks=True).setup("fit")
    with pytest.raises(ValueError, match=expected):
        COCOSegmentation(str(tmp_path), val_split=None, crop_size=16).setup("fit")


def test_coco_annotations_of_unknown_images_are_counted(tmp_path: Path) -> None:
    def damage(dataset: dict) -> None:
        dataset["annotations"][0]["image_id"] = 123456

    _coco_json(tmp_path, damage)
    lines = report_lines(lambda: run_stage(_coco(tmp_path)))
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
    lines = report_lines(lambda: run_stage(_voc(voc)))
    assert any(
        "dropped 3 degenerate boxes" in line and "clamped 1 box to the image" in line
        for line in lines
    ), lines


def test_voc_object_without_bndbox_is_dropped_and_counted(tmp_path: Path) -> None:
    voc = write_voc(tmp_path)
    text = _xml(voc, 1).read_text()
    _xml(voc, 1).write_text(re.sub(r"<bndbox>.*?</bndbox>", "", text, count=1))
    lines = report_lines(lambda: run_stage(_voc(voc)))
    assert any("dropped 1 box without 4 numeric coordinates, 3 degenerate" in x for x in lines)


def test_voc_name_not_in_the_classes_is_dropped_and_counted(tmp_path: Path) -> None:
    voc = write_voc(tmp_path)
    _xml(voc, 1).write_text(_xml(voc, 1).read_text().replace("<name>", "<name>x", 1))
    lines = report_lines(lambda: run_stage(_voc(voc)))
    assert any("2 boxes with unknown classes 'unicorn', 'x" in line for line in lines), lines


def test_voc_classes_that_name_none_of_the_objects(tmp_path: Path) -> None:
    voc = write_voc(tmp_path)
    with pytest.raises(ValueError, match=r"no object of the train split belongs to the 2 classes "
                       r"\['Cat', 'Dog'\]; its annotations name 'car', 'cat', 'dog', "
                       "'person', 'unicorn'. Set classes to match"):  # fmt: skip
        _voc(voc, classes=["Cat", "Dog"]).setup("fit")
    run_stage(_voc(voc, classes=["cat", "dog"]))  # the other objects are dropped and counted


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
    run_stage(_segmentation(voc))  # the 21 VOC classes fit


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
    run_stage(datamodule)


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
