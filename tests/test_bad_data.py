"""Every bad dataset of images and labels on disk speaks (issue 16): ImageFolder,
ImageNetSubset and MNIST IDX files. One readable error naming the file and the fix, raised by
``prepare_data`` or ``setup`` before training starts, or the documented handling (an
unreadable file skipped and counted in the split's report line); never a raw library
traceback, never a crash in a DataLoader worker mid-epoch. Annotated data (COCO, VOC,
DigitScenes) is in ``test_bad_annotations.py``.

Each test builds the bad data in its real format in a tmp folder, as a stranger's download
would look, and reads it with the real loaders, as a user would: construct the datamodule,
``prepare_data()``, ``setup()``, then index the datasets or iterate a loader.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from datamodules import (
    MNIST,
    FashionMNIST,
    ImageFolder,
    ImageNetSubset,
    write_idx,
)
from tests._datamodule_runs import report_lines, run_stage
from tests._idx_files import IDX_FILES, write_mnist_files
from tests._image_files import photos, save_image, write_digit_classes, write_ilsvrc

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
    datamodule = run_stage(_folder(tmp_path, val_fraction=0.5))
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
    assert any("skipped 1 unreadable" in line for line in report_lines(lambda: run_stage(skipping)))
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
