"""DigitScenes (datamodules/scenes.py) read back by the real readers: pycocotools for the COCO
tree, torchvision's VOCDetection and VOCSegmentation for the VOCdevkit tree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from scipy import ndimage
from sklearn.datasets import load_digits
from torchvision.datasets import VOCDetection, VOCSegmentation

from datamodules import scenes
from datamodules.scenes import digit_pools, render_scene, voc_palette, write_digit_scenes

# pycocotools 2.0.11's annToMask trips numpy 2's __array__(copy=) deprecation; not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SMALL = {"num_train": 12, "num_val": 6}  # 64 px, the other defaults
VOC = ("VOCdevkit", "VOC2012")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_digit_scenes(tmp_path_factory.mktemp("scenes") / "digits", **SMALL)


def coco(root: Path, split: str) -> COCO:
    return COCO(str(root / "coco" / "annotations" / f"instances_{split}.json"))


def image_annotations(dataset: COCO, image_id: int) -> list[dict]:
    return sorted(dataset.imgToAnns[image_id], key=lambda annotation: annotation["id"])


def voc_png(root: Path, folder: str, voc_id: str) -> np.ndarray:
    return np.asarray(Image.open(root.joinpath(*VOC, folder, f"{voc_id}.png")))


def xyxy(annotation: dict) -> list[int]:
    x, y, w, h = annotation["bbox"]
    assert all(float(v).is_integer() for v in (x, y, w, h))
    return [int(x), int(y), int(x + w), int(y + h)]


def intersection_over_smaller(a: list[int], b: list[int]) -> float:
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return width * height / area


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_tree_reads_with_pycocotools(root, split):
    dataset = coco(root, split)
    assert len(dataset.getImgIds()) == SMALL[f"num_{split}"]
    assert [(c["id"], c["name"], c["supercategory"]) for c in dataset.loadCats(range(1, 11))] == [
        (d + 1, str(d), "digit") for d in range(10)
    ]
    targets = load_digits().target
    for image_id in dataset.getImgIds():
        info = dataset.loadImgs(image_id)[0]
        assert info["file_name"] == f"{image_id:06d}.jpg"
        with Image.open(root / "coco" / split / info["file_name"]) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 64))
        assert (info["height"], info["width"]) == (64, 64)
        annotations = image_annotations(dataset, image_id)
        assert 2 <= len(annotations) <= 6
        instances = voc_png(root, "SegmentationObject", f"{split}_{image_id:06d}")
        boxes = [xyxy(annotation) for annotation in annotations]
        for k, (annotation, box) in enumerate(zip(annotations, boxes, strict=True), 1):
            x1, y1, x2, y2 = box
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
            assert annotation["iscrowd"] == 0
            assert annotation["category_id"] == targets[annotation["digit_index"]] + 1
            mask = dataset.annToMask(annotation)
            assert mask.shape == (64, 64) and annotation["area"] == mask.sum() > 0
            np.testing.assert_array_equal(mask, instances == k)
            rows, columns = np.nonzero(mask)
            assert x1 <= columns.min() and columns.max() < x2  # pixel edges: x2 exclusive
            assert y1 <= rows.min() and rows.max() < y2
            others = [other for j, other in enumerate(boxes, 1) if j != k]
            if all(intersection_over_smaller(box, other) == 0 for other in others):
                # Nothing overlaps it, so its visible mask is its whole mask: box == tight box.
                assert box == [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]


def test_boxes_respect_the_overlap_cap(root):
    pairs = 0
    for split in ("train", "val"):
        dataset = coco(root, split)
        for image_id in dataset.getImgIds():
            boxes = [xyxy(a) for a in image_annotations(dataset, image_id)]
            for i, a in enumerate(boxes):
                for b in boxes[i + 1 :]:
                    assert intersection_over_smaller(a, b) <= 0.2
                    pairs += intersection_over_smaller(a, b) > 0
    assert pairs > 0  # some digits do overlap, so the cap was exercised


@pytest.mark.parametrize("split", ["train", "val"])
def test_voc_detection_matches_coco(root, split):
    voc = VOCDetection(root=root, year="2012", image_set=split, download=False)
    dataset = coco(root, split)
    assert len(voc) == SMALL[f"num_{split}"]
    for index, image_id in enumerate(dataset.getImgIds()):
        image, target = voc[index]
        annotation = target["annotation"]
        voc_id = f"{split}_{image_id:06d}"
        assert annotation["filename"] == f"{voc_id}.jpg" and annotation["segmented"] == "1"
        assert annotation["size"] == {"width": "64", "height": "64", "depth": "3"}
        assert image.size == (64, 64)
        jpeg = root / "coco" / split / f"{image_id:06d}.jpg"
        assert root.joinpath(*VOC, "JPEGImages", f"{voc_id}.jpg").read_bytes() == jpeg.read_bytes()
        expected = []
        for coco_annotation in image_annotations(dataset, image_id):
            x1, y1, x2, y2 = xyxy(coco_annotation)
            name = dataset.cats[coco_annotation["category_id"]]["name"]
            expected.append((name, [x1 + 1, y1 + 1, x2, y2]))
        objects = annotation["object"]
        assert [
            (o["name"], [int(o["bndbox"][k]) for k in ("xmin", "ymin", "xmax", "ymax")])
            for o in objects
        ] == expected
        assert {(o["pose"], o["truncated"], o["difficult"]) for o in objects} == {
            ("Unspecified", "0", "0")
        }


@pytest.mark.parametrize("split", ["train", "val"])
def test_voc_segmentation_matches_coco(root, split):
    voc = VOCSegmentation(root=root, year="2012", image_set=split, download=False)
    dataset = coco(root, split)
    assert len(voc) == SMALL[f"num_{split}"]
    palette = voc_palette()
    for index, image_id in enumerate(dataset.getImgIds()):
        _, target = voc[index]
        assert target.mode == "P" and target.getpalette()[: 3 * 256] == palette
        classes = np.asarray(target)
        objects = voc_png(root, "SegmentationObject", f"{split}_{image_id:06d}")
        assert set(np.unique(classes)) <= {0, *range(1, 11), 255}
        expected = np.zeros((64, 64), dtype=np.uint8)
        for annotation in image_annotations(dataset, image_id):
            expected[dataset.annToMask(annotation) == 1] = annotation["category_id"]
        foreground = expected > 0
        # The void ring: background pixels touching an object (8-neighbourhood), and only those.
        ring = ndimage.binary_dilation(foreground, structure=np.ones((3, 3))) & ~foreground
        assert ring.any()
        np.testing.assert_array_equal(classes, np.where(ring, 255, expected))
        np.testing.assert_array_equal(objects == 255, ring)
        np.testing.assert_array_equal(objects > 0, foreground | ring)


def test_voc_image_sets(root):
    for image_sets in ("Main", "Segmentation"):
        folder = root.joinpath(*VOC, "ImageSets", image_sets)
        train = folder.joinpath("train.txt").read_text().split()
        val = folder.joinpath("val.txt").read_text().split()
        assert train == [f"train_{k:06d}" for k in range(1, 13)]
        assert val == [f"val_{k:06d}" for k in range(1, 7)]
        assert folder.joinpath("trainval.txt").read_text().split() == train + val


def test_voc_palette_is_the_standard_colour_map():
    palette = np.array(voc_palette()).reshape(256, 3)
    known = {  # VOC classes: background, aeroplane, bicycle, bird, cat, person, tvmonitor, void
        0: (0, 0, 0),
        1: (128, 0, 0),
        2: (0, 128, 0),
        3: (128, 128, 0),
        8: (64, 0, 0),
        15: (192, 128, 128),
        20: (0, 64, 128),
        255: (224, 224, 192),
    }
    for index, colour in known.items():
        assert tuple(palette[index]) == colour
    assert len({tuple(colour) for colour in palette}) == 256


def test_digit_pools_are_disjoint_stratified_and_used(root):
    manifest = json.loads((root / "scenes.json").read_text())
    train_pool, val_pool = (np.array(manifest["digit_pools"][s]) for s in ("train", "val"))
    np.testing.assert_array_equal(train_pool, digit_pools(0.25, 0)[0])
    np.testing.assert_array_equal(val_pool, digit_pools(0.25, 0)[1])
    assert not set(train_pool) & set(val_pool)
    np.testing.assert_array_equal(np.sort(np.concatenate([train_pool, val_pool])), np.arange(1797))
    targets = load_digits().target
    for digit in range(10):
        total = (targets == digit).sum()
        assert abs((targets[val_pool] == digit).sum() - 0.25 * total) <= 1
    for split, pool in (("train", train_pool), ("val", val_pool)):
        used = {a["digit_index"] for a in coco(root, split).dataset["annotations"]}
        assert used <= set(pool)
    assert digit_pools(0.25, 1)[1].tolist() != val_pool.tolist()  # the seed moves the split


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_same_files_other_seed_other_files(root, tmp_path):
    again = write_digit_scenes(tmp_path / "again", **SMALL)
    files, files_again = tree_bytes(root), tree_bytes(again)
    assert files == files_again and len(files) == 1 + 2 + 5 * 18 + 6
    other = write_digit_scenes(tmp_path / "other", **SMALL, seed=1)
    json_path = "coco/annotations/instances_train.json"
    assert tree_bytes(other)[json_path] != files[json_path]
    first = "coco/train/000001.jpg"
    assert not np.array_equal(
        np.asarray(Image.open(root / first)), np.asarray(Image.open(other / first))
    )
    # Image k depends only on (seed, split, k): a longer tree starts with the same images.
    longer = write_digit_scenes(tmp_path / "longer", num_train=13, num_val=1)
    assert (longer / first).read_bytes() == files[first]
    assert (longer / "coco/val/000001.jpg").read_bytes() == files["coco/val/000001.jpg"]


def test_a_written_tree_is_reused_not_rewritten(root):
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert write_digit_scenes(str(root), **SMALL) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_other_arguments_on_a_written_tree_raise(root):
    with pytest.raises(ValueError, match="seed: 0 on disk, 1 asked") as error:
        write_digit_scenes(root, **SMALL, seed=1)
    assert str(root) in str(error.value) and "delete" in str(error.value)
    with pytest.raises(ValueError, match=r"digit_scale: \[0.2, 0.5\] on disk, \[0.3, 0.5\]"):
        write_digit_scenes(root, **SMALL, digit_scale=(0.3, 0.5))


def test_a_foreign_folder_is_refused_and_kept(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds other files and no scenes.json") as error:
        write_digit_scenes(tmp_path / "mine", num_train=1, num_val=1)
    assert str(tmp_path / "mine") in str(error.value)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    (tmp_path / "empty").mkdir()  # an empty folder is fine
    assert (
        write_digit_scenes(tmp_path / "empty", num_train=1, num_val=1) / "scenes.json"
    ).is_file()


def test_a_failed_write_leaves_no_tree_and_no_temporary_folder(tmp_path, monkeypatch):
    calls = []

    def fail_on_third(*args):
        calls.append(args)
        if len(calls) == 3:
            raise OSError("disk full")

    monkeypatch.setattr(scenes, "_voc_xml", fail_on_third)
    with pytest.raises(OSError, match="disk full"):
        write_digit_scenes(tmp_path / "digits", num_train=5, num_val=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"num_train": 0}, "num_train=0"),
        ({"num_val": 0}, "num_val=0"),
        ({"image_size": 8}, "image_size=8"),
        ({"digits_per_image": (3, 2)}, r"digits_per_image=\(3, 2\)"),
        ({"digits_per_image": (0, 2)}, r"digits_per_image=\(0, 2\)"),
        ({"digits_per_image": (2,)}, r"digits_per_image=\[2\]"),
        ({"digit_scale": (0.0, 0.5)}, r"digit_scale=\(0.0, 0.5\)"),
        ({"digit_scale": (0.5, 1.5)}, r"digit_scale=\(0.5, 1.5\)"),
        ({"max_overlap": -0.1}, "max_overlap=-0.1"),
        ({"val_digit_fraction": 1.0}, "val_digit_fraction=1.0"),
        ({"val_digit_fraction": 0.001}, "val_digit_fraction=0.001"),
        ({"seed": -1}, "seed=-1"),
        ({"jpeg_quality": 0}, "jpeg_quality=0"),
    ],
)
def test_bad_arguments_are_named_before_writing(tmp_path, arguments, named):
    with pytest.raises(ValueError, match=named):
        write_digit_scenes(tmp_path / "digits", **arguments)
    assert list(tmp_path.iterdir()) == []


def test_a_crowded_scene_takes_fewer_digits_within_the_cap():
    digits = load_digits()
    pool = np.arange(len(digits.target))
    scene = render_scene(
        np.random.default_rng(0),
        digits.images,
        digits.target,
        pool,
        image_size=32,
        digits_per_image=(20, 20),
        digit_scale=(0.5, 0.5),
        max_overlap=0.0,
    )
    assert 1 <= len(scene.boxes) < 20
    boxes = scene.boxes.tolist()
    assert all(intersection_over_smaller(a, b) == 0 for i, a in enumerate(boxes) for b in boxes[:i])
    assert scene.image.shape == (32, 32, 3) and scene.image.dtype == np.uint8
    # The background is textured, not flat: its pixels vary well beyond JPEG-like noise.
    background = scene.image[scene.instances == 0]
    assert background.std(axis=0).min() > 5
