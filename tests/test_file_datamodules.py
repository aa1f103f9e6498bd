"""File-backed datamodules (ImageFolder, ImageNetSubset) and the augmentation presets.

Real JPEG and PNG files written on the fly from photos that ship inside scikit-image and
matplotlib and from scikit-learn's digits; torchvision's ImageFolder reads the same files
as the reference. Images are tiny (8-48 px) so the whole file runs in seconds.
"""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torchvision
from jsonargparse import ArgumentParser
from PIL import Image
from torch import nn

from datamodules import FileDataModule, ImageFolder, ImageNetSubset, load_image, transforms
from datamodules.imagenet import SUBSET_PRESETS
from tests._image_files import (
    ALL_WNIDS,
    HEIGHT,
    WIDTH,
    palette_with_transparency,
    photos,
    save_image,
    write_digit_classes,
    write_ilsvrc,
    write_photo_classes,
)

IMAGENET_MEAN, IMAGENET_STD = transforms.IMAGENET_MEAN, transforms.IMAGENET_STD


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_photo_classes(root)
    return root


@pytest.fixture(scope="module")
def digit_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    write_digit_classes(root)
    return root


def _digit_folder(root: Path, **kwargs) -> ImageFolder:
    options = {"image_size": 8, "resize_size": 8, "in_channels": 1, "batch_size": 16}
    return ImageFolder(str(root), **options | kwargs)


def _all_batches(loader) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(labels)


# -- agreement with torchvision's ImageFolder -----------------------------------------


def test_same_samples_labels_and_pixels_as_torchvision(photo_root: Path) -> None:
    # No resize (resize_size = image_size = the photos' height): both pipelines are an
    # exact PIL decode, the same centre crop and a standardisation, so they differ only
    # in float32 rounding: (x - 255 m) / (255 s) against (x / 255 - m) / s, a few ulps of
    # values below 2.7, far below 1e-5.
    datamodule = ImageFolder(
        str(photo_root), image_size=HEIGHT, resize_size=HEIGHT, train_transforms="none",
        val_fraction=0, batch_size=64,
    )  # fmt: skip
    datamodule.setup("fit")
    with warnings.catch_warnings():  # PIL: palette images with transparency -> RGBA
        warnings.simplefilter("ignore", UserWarning)
        reference = torchvision.datasets.ImageFolder(
            str(photo_root),
            transform=torchvision.transforms.Compose([
                torchvision.transforms.Resize(HEIGHT),
                torchvision.transforms.CenterCrop(HEIGHT),
                torchvision.transforms.ToTensor(),
                torchvision.transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]),
        )  # fmt: skip
        expected = torch.stack([image for image, _ in reference])
    assert datamodule.class_to_idx == reference.class_to_idx
    assert datamodule.classes == reference.classes
    assert [(str(path), label) for path, label in datamodule.train_dataset.samples] == (
        reference.samples
    )
    assert len(reference.samples) == 24  # 6 per class; notes.txt is not an image
    ordered = datamodule._dataloader(datamodule.train_dataset, shuffle=False)
    images, labels = _all_batches(ordered)
    assert torch.equal(labels, torch.tensor(reference.targets))
    assert images.dtype == torch.float32 and images.shape == (24, 3, HEIGHT, HEIGHT)
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)


def test_eval_resize_and_crop_agree_with_torchvision_within_resampling(photo_root: Path) -> None:
    # With a real resize the two differ by their resampling kernels: OpenCV's area
    # average against PIL's antialiased bilinear (about one grey level on average). In
    # standardised units one grey level is about 0.017; the mean difference must stay
    # within three. 40 x 48 -> 30 x 36 -> centre 24 is exact in both: torchvision
    # truncates the long side and rounds the crop offset, albumentations rounds the side
    # and floors the offset, which can shift the crop by a pixel on other sizes.
    datamodule = ImageFolder(str(photo_root), image_size=24, resize_size=30, val_fraction=0)
    datamodule.setup("fit")
    reference = torchvision.transforms.Compose([
        torchvision.transforms.Resize(30),
        torchvision.transforms.CenterCrop(24),
        torchvision.transforms.ToTensor(),
        torchvision.transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])  # fmt: skip
    for path, _ in datamodule.train_dataset.samples[:6]:
        ours = datamodule.eval_transform()(image=load_image(path))["image"]
        expected = reference(Image.open(path).convert("RGB"))
        assert ours.shape == expected.shape == (3, 24, 24)
        assert (ours - expected).abs().mean() < 0.05, path.name


# -- decoding: modes and bad files ----------------------------------------------------


@pytest.mark.parametrize("in_channels", [3, 1])
def test_every_mode_is_converted_to_the_models_channels(tmp_path: Path, in_channels: int) -> None:
    photo = photos()[1]
    image = Image.fromarray(photo)
    expected = np.asarray(image if in_channels == 3 else image.convert("L"))
    wide = (np.asarray(image.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    files = {
        "rgb.png": image,
        "grey.png": image.convert("L"),
        "palette.png": palette_with_transparency(photo),
        "rgba.png": image.convert("RGBA"),
        "cmyk.jpg": image.convert("CMYK"),
        "grey16.png": Image.fromarray(wide),
    }
    for name, source in files.items():
        array = load_image(save_image(tmp_path / name, source), in_channels)
        assert array.shape == (HEIGHT, WIDTH, in_channels) and array.dtype == np.uint8, name
        if name in ("rgb.png", "rgba.png"):
            assert np.array_equal(array, expected.reshape(array.shape)), name
    grey = load_image(tmp_path / "grey.png", in_channels)
    assert (grey == grey[..., :1]).all()  # grey is replicated into R, G and B
    # 16 bits are scaled to 8 (v * 257 -> v), where PIL's own convert clips at 255.
    assert np.array_equal(load_image(tmp_path / "grey16.png", in_channels), grey)
    assert np.asarray(Image.open(tmp_path / "grey16.png").convert("L")).min() == 255


def _bad_files() -> dict[str, bytes]:
    buffer = io.BytesIO()
    Image.fromarray(photos()[0]).save(buffer, "JPEG")
    return {
        "empty.jpg": b"",
        "text.jpg": b"this is a text file, not a JPEG\n",
        "truncated.jpg": buffer.getvalue()[: len(buffer.getvalue()) // 2],
    }


@pytest.mark.parametrize("bad_name", list(_bad_files()))
def test_a_bad_file_is_an_error_naming_it_and_the_fix(tmp_path: Path, bad_name: str) -> None:
    write_digit_classes(tmp_path, per_class=2)
    (tmp_path / "3" / bad_name).write_bytes(_bad_files()[bad_name])
    datamodule = _digit_folder(tmp_path)
    with pytest.raises(ValueError, match=bad_name) as raised:
        datamodule.setup("fit")
    assert str(tmp_path / "3" / bad_name) in str(raised.value)
    assert "skip_bad_files: true" in str(raised.value)


def test_skip_bad_files_skips_them_with_one_warning(tmp_path: Path) -> None:
    write_digit_classes(tmp_path, per_class=2)
    for k, (name, data) in enumerate(_bad_files().items()):
        (tmp_path / str(k) / name).write_bytes(data)
    datamodule = _digit_folder(tmp_path, skip_bad_files=True, val_fraction=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        datamodule.setup("fit")
    messages = [str(w.message) for w in caught if "unreadable" in str(w.message)]
    assert len(messages) == 1
    assert "skipped 3 unreadable" in messages[0]
    assert all(name in messages[0] for name in _bad_files())
    assert len(datamodule.train_dataset) == 20
    images, labels = _all_batches(datamodule.train_dataloader())
    assert images.shape == (20, 1, 8, 8) and torch.equal(labels.bincount(), torch.full((10,), 2))


def test_damage_only_decoding_finds_is_reported_by_the_loader(tmp_path: Path) -> None:
    # A PNG with garbage inside its image data but an intact header and IEND chunk passes
    # the cheap check in setup; decoding it fails, naming the file.
    write_digit_classes(tmp_path, per_class=2)
    buffer = io.BytesIO()
    Image.fromarray(photos()[2]).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.find(b"IDAT") + 40
    data[start : start + 20] = bytes(20)
    (tmp_path / "0" / "corrupt.png").write_bytes(bytes(data))
    datamodule = _digit_folder(tmp_path, val_fraction=0, train_transforms="none")
    datamodule.setup("fit")
    position = [p.name for p, _ in datamodule.train_dataset.samples].index("corrupt.png")
    with pytest.raises(ValueError, match="corrupt.png.*skip_bad_files"):
        datamodule.train_dataset[position]
    skipping = _digit_folder(tmp_path, val_fraction=0, train_transforms="none", skip_bad_files=True)
    skipping.setup("fit")
    with pytest.warns(UserWarning, match="corrupt.png"):
        image, label = skipping.train_dataset[position]
    assert image.shape == (1, 8, 8)  # the next sample took its place


def test_missing_root_and_empty_folders_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a folder.*data.root"):
        ImageFolder(str(tmp_path / "nowhere"))
    (tmp_path / "loose.jpg").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="has no class folders"):
        ImageFolder(str(tmp_path))
    write_digit_classes(tmp_path, per_class=1)
    (tmp_path / "empty_class").mkdir()
    datamodule = _digit_folder(tmp_path)  # listing folder names is all __init__ does
    assert datamodule.num_classes == 11
    with pytest.raises(FileNotFoundError, match="empty_class has no images"):
        datamodule.setup("fit")


# -- layouts, splits and batches ------------------------------------------------------


def test_explicit_train_val_test_folders(tmp_path: Path) -> None:
    write_digit_classes(tmp_path / "train", per_class=4)
    write_digit_classes(tmp_path / "val", per_class=2)
    write_digit_classes(tmp_path / "test", per_class=1)
    (tmp_path / "test" / "9" / "0.jpg").unlink()  # a class may be missing from test
    (tmp_path / "test" / "9").rmdir()
    datamodule = _digit_folder(tmp_path)
    assert datamodule.classes == [str(digit) for digit in range(10)]
    assert datamodule.split_dirs == {s: tmp_path / s for s in ("train", "val", "test")}
    datamodule.setup()
    assert len(datamodule.train_dataset) == 40 and len(datamodule.val_dataset) == 20
    assert len(datamodule.test_dataset) == 9 and datamodule.val_indices is None
    assert all(path.parent.parent == tmp_path / "val" for path, _ in datamodule.val_dataset.samples)
    assert datamodule.test_dataset.targets == list(range(9))
    with pytest.raises(ValueError, match="num_folds=2.*validation split of its own"):
        _digit_folder(tmp_path, num_folds=2).setup("fit")
    (tmp_path / "val" / "extra").mkdir()
    with pytest.raises(FileNotFoundError, match=r"classes \['extra'\]"):
        _digit_folder(tmp_path).setup("fit")


def test_train_folder_alone_holds_out_validation_and_has_no_test_set(tmp_path: Path) -> None:
    write_digit_classes(tmp_path / "train", per_class=5)
    datamodule = _digit_folder(tmp_path, val_fraction=0.2)
    datamodule.setup()  # no test split: nothing to build, no error
    assert (len(datamodule.train_dataset), len(datamodule.val_dataset)) == (40, 10)
    with pytest.raises(RuntimeError, match="no test/ folder"):
        datamodule.test_dataloader()
    with pytest.raises(RuntimeError, match="no test/ folder"):
        _digit_folder(tmp_path).setup("test")


def test_stratified_split_is_seeded_and_reproducible(digit_root: Path) -> None:
    first, second, other = (_digit_folder(digit_root, val_fraction=0.2, seed=s) for s in (1, 1, 2))
    for datamodule in (first, second, other):
        datamodule.setup("fit")
    assert torch.equal(first.val_indices, second.val_indices)
    assert first.val_dataset.samples == second.val_dataset.samples
    assert not torch.equal(first.val_indices, other.val_indices)
    assert len(first.val_dataset) == 12  # 20% of 60
    assert set(first.val_dataset.targets) == set(range(10))  # stratified: every class


def test_k_fold_partitions_the_training_split(digit_root: Path) -> None:
    val_sets = []
    for fold in range(3):
        datamodule = _digit_folder(digit_root, num_folds=3, fold=fold)
        datamodule.setup("fit")
        train = {path for path, _ in datamodule.train_dataset.samples}
        val = {path for path, _ in datamodule.val_dataset.samples}
        assert not train & val and len(train | val) == 60
        assert sorted(datamodule.val_dataset.targets) == sorted(list(range(10)) * 2)
        val_sets.append(val)
    assert len(set().union(*val_sets)) == 60 == sum(len(val) for val in val_sets)


@pytest.mark.parametrize("preset", list(transforms.TRAIN_PRESETS))
def test_batches_follow_the_classification_contract(photo_root: Path, preset: str) -> None:
    datamodule = ImageFolder(
        str(photo_root), image_size=32, resize_size=36, train_transforms=preset, batch_size=8,
        val_fraction=0.5,
    )  # fmt: skip
    datamodule.setup("fit")
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader()):
        images, labels = next(iter(loader))
        assert images.shape[1:] == (3, 32, 32) and images.dtype == torch.float32
        assert labels.dtype == torch.int64 and labels.shape == (len(images),)
        assert 0 <= labels.min() and labels.max() < 4


def test_worker_processes_decode_the_same_and_augment_differently(photo_root: Path) -> None:
    options = {"image_size": 16, "resize_size": 16, "val_fraction": 0.5, "batch_size": 1}
    in_process = ImageFolder(str(photo_root), **options)
    workers = ImageFolder(str(photo_root), num_workers=2, train_transforms="course", **options)
    in_process.setup("fit")
    workers.setup("fit")
    loader = workers.val_dataloader()
    train_loader = workers._dataloader(
        torch.utils.data.Subset(workers.train_dataset, [0] * 8), shuffle=False
    )
    try:
        images, labels = _all_batches(loader)
        augmented, _ = _all_batches(train_loader)  # one image, 8 times, workers alternate
    finally:  # stop the persistent workers now, as Trainer does at the end of a stage
        loader._iterator._shutdown_workers()
        train_loader._iterator._shutdown_workers()
    expected, expected_labels = _all_batches(in_process.val_dataloader())
    assert torch.equal(images, expected) and torch.equal(labels, expected_labels)
    # Batches 2k and 2k + 1 come from the two workers: the same draw would mean the
    # workers share one augmentation seed.
    assert not any(torch.equal(augmented[k], augmented[k + 1]) for k in range(0, 8, 2))


# The parent's OpenCV thread pool runs (a large resize is parallelised), then workers fork.
_FORK_AFTER_OPENCV = """
import sys, cv2, numpy as np
from datamodules import ImageFolder
for _ in range(5):
    cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (1500, 1500))
for _ in range(5):
    data = ImageFolder(sys.argv[1], image_size=32, batch_size=4, num_workers=2, val_fraction=0)
    data.setup("fit")
    list(data.train_dataloader())
"""


def test_workers_fork_safely_after_opencv_ran_in_this_process(photo_root: Path) -> None:
    """Workers forked after the parent's OpenCV pool ran used to hang, 2 runs in 3, in
    pthread_cond_destroy (their cv2.setNumThreads); the loader now sets the parent's first."""
    command = [sys.executable, "-c", _FORK_AFTER_OPENCV, str(photo_root)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_metadata_is_available_before_setup(photo_root: Path) -> None:
    rgb = ImageFolder(str(photo_root), image_size=32)
    grey = ImageFolder(str(photo_root), in_channels=1)
    assert rgb.classes == ["astronaut", "chelsea", "coffee", "hopper"] and rgb.num_classes == 4
    assert (rgb.in_channels, rgb.image_size, rgb.resize_size) == (3, 32, 256)
    assert (rgb.mean, rgb.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert grey.in_channels == 1 and grey.mean == pytest.approx((0.449,))
    assert grey.std == pytest.approx((0.226,))
    assert rgb.hparams["image_size"] == 32 and rgb.hparams["root"] == str(photo_root)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_transforms": "fancy"}, "'fancy'.*'none', 'flip', 'crop_flip', 'course'"),
        ({"image_size": 0}, "image_size=0"),
        ({"image_size": 224, "resize_size": 200}, "resize_size=200"),
        ({"mean": (0.5,)}, r"mean=\[0.5\] has 1 values for in_channels=3"),
        ({"in_channels": 1, "std": (0.2, 0.2, 0.2)}, "std=.*in_channels=1"),
        ({"std": (0.2, 0.0, 0.2)}, "must be positive"),
        ({"in_channels": 4}, "in_channels=4"),
        ({"val_fraction": 1.0}, "val_fraction=1.0"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(
    photo_root: Path, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ImageFolder(str(photo_root), **kwargs)


# -- Lightning and LightningCLI integration ---------------------------------------------


def test_jsonargparse_sees_every_argument(photo_root: Path) -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ImageNetSubset, "data")
    defaults = parser.get_defaults().data
    assert defaults.subset == "imagenette" and defaults.train_transforms == "crop_flip"
    assert (defaults.image_size, defaults.resize_size, defaults.batch_size) == (224, 256, 64)
    for value, parsed in (("5", 5), ("imagewoof", "imagewoof"), ("[n01, n02]", ["n01", "n02"])):
        assert parser.parse_args(["--data.root=x", f"--data.subset={value}"]).data.subset == parsed
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ImageFolder, "data")
    config = parser.parse_args(
        [f"--data.root={photo_root}", "--data.mean=[0.5, 0.5, 0.5]", "--data.num_folds=2"]
    )
    datamodule = parser.instantiate(config).data
    assert datamodule.mean == (0.5, 0.5, 0.5) and datamodule.num_folds == 2


def test_cli_links_classes_and_channels_into_the_model_before_setup(photo_root: Path) -> None:
    from tasks.cli import ZooCLI

    cli = ZooCLI(
        args=[
            "--model=tasks.ImageClassifier", "--model.model=lenet",
            "--data=datamodules.ImageFolder", f"--data.root={photo_root}",
            "--data.in_channels=1", "--data.image_size=28", "--data.resize_size=32",
        ],
        run=False,
    )  # fmt: skip
    assert cli.datamodule.train_dataset is None  # nothing read yet
    hparams = cli.model.hparams
    assert (hparams.num_classes, hparams.in_channels) == (4, 1)
    assert hparams.class_names == ["astronaut", "chelsea", "coffee", "hopper"]


class _LinearClassifier(L.LightningModule):
    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))

    def training_step(self, batch, batch_idx: int):
        images, labels = batch
        return nn.functional.cross_entropy(self.net(images), labels)

    def validation_step(self, batch, batch_idx: int):
        self.log("val_loss", self.training_step(batch, batch_idx))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_fits_on_an_image_folder(tmp_path: Path, digit_root: Path) -> None:
    datamodule = _digit_folder(digit_root, train_transforms="flip", val_fraction=0.2)
    model = _LinearClassifier(datamodule.num_classes, datamodule.in_channels, 8)
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 2 and isinstance(datamodule, FileDataModule)


# -- augmentation presets ---------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("preset", list(transforms.TRAIN_PRESETS))
def test_each_preset_gives_a_standardised_chw_float_tensor(preset: str, channels: int) -> None:
    photo = photos()[0] if channels == 3 else np.asarray(Image.fromarray(photos()[0]).convert("L"))
    image = photo.reshape(HEIGHT, WIDTH, channels)
    mean, std = (0.5,) * channels, (0.25,) * channels
    pipeline = transforms.train_transform(preset, 24, 32, mean, std, seed=0)
    output = pipeline(image=image)["image"]
    assert isinstance(output, torch.Tensor) and output.dtype == torch.float32
    assert output.shape == (channels, 24, 24)
    assert output.min() >= -2 and output.max() <= 2  # (x / 255 - 0.5) / 0.25
    # Picklable, for DataLoader workers started with spawn; a copy draws the same.
    again = pickle.loads(
        pickle.dumps(transforms.train_transform(preset, 24, 32, mean, std, seed=0))
    )
    assert torch.equal(again(image=image)["image"], output)


def test_flip_really_flips_and_is_seeded() -> None:
    image = photos()[3]
    plain = transforms.eval_transform(32, 40)(image=image)["image"]
    assert not torch.equal(plain, plain.flip(-1))
    draws = [transforms.train_transform("flip", 32, 40, seed=7) for _ in range(2)]
    outputs = [[pipeline(image=image)["image"] for _ in range(20)] for pipeline in draws]
    flipped = [torch.equal(out, plain.flip(-1)) for out in outputs[0]]
    assert all(flipped[k] or torch.equal(out, plain) for k, out in enumerate(outputs[0]))
    assert 3 <= sum(flipped) <= 17  # p = 1/2
    assert all(torch.equal(a, b) for a, b in zip(*outputs, strict=True))  # same seed


def test_random_resized_crop_and_colour_jitter_vary_the_image() -> None:
    image = photos()[1]
    crop = transforms.train_transform("crop_flip", 24, seed=0)
    course = transforms.train_transform("course", 24, seed=0)
    crops = [crop(image=image)["image"] for _ in range(4)]
    jittered = [course(image=image)["image"] for _ in range(4)]
    assert len({tuple(c.flatten()[:50].tolist()) for c in crops}) == 4
    # Colour jitter moves the channel means, which a crop of the same photo barely does.
    spread = torch.stack([j.mean((1, 2)) for j in jittered]).std(0).mean()
    assert spread > torch.stack([c.mean((1, 2)) for c in crops]).std(0).mean()


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(ValueError, match="'none', 'flip', 'crop_flip', 'course'"):
        transforms.train_transform("random", 32)


# -- ImageNetSubset ---------------------------------------------------------------------


def _imagenet(root: Path, **kwargs) -> ImageNetSubset:
    return ImageNetSubset(str(root), image_size=8, resize_size=8, batch_size=64, **kwargs)


@pytest.mark.parametrize("val_layout", ["folders", "flat"])
def test_imagenette_from_the_kaggle_layout(tmp_path: Path, val_layout: str) -> None:
    write_ilsvrc(tmp_path, val_layout)
    datamodule = _imagenet(tmp_path, val_fraction=0)
    assert datamodule.wnids == list(SUBSET_PRESETS["imagenette"])
    assert datamodule.classes == list(SUBSET_PRESETS["imagenette"].values())
    assert datamodule.classes[0] == "tench" and datamodule.num_classes == 10
    datamodule.setup()
    assert len(datamodule.train_dataset) == 30 and len(datamodule.test_dataset) == 20
    for path, label in datamodule.train_dataset.samples:  # every image under its own class
        assert datamodule.wnids[label] == path.parent.name
    for path, label in datamodule.test_dataset.samples:
        wnid = path.parent.name if val_layout == "folders" else _val_wnid(tmp_path, path)
        assert datamodule.wnids[label] == wnid
    images, labels = _all_batches(datamodule.test_dataloader())
    assert images.shape == (20, 3, 8, 8) and labels.tolist() == sorted(list(range(10)) * 2)


def _val_wnid(root: Path, path: Path) -> str:
    solution = (root / "LOC_val_solution.csv").read_text().splitlines()
    return dict(line.split(",")[0:2] for line in solution[1:])[path.stem].split()[0]


def test_subset_by_wnids_by_count_and_max_images(tmp_path: Path) -> None:
    data = write_ilsvrc(tmp_path, "flat")
    chosen = ["n03126707", "n01484850", "n02012849"]
    by_list = _imagenet(tmp_path, subset=chosen, val_fraction=0)
    assert by_list.wnids == chosen  # the given order is the label order
    assert by_list.classes == ["crane (n03126707)", "great white shark", "crane (n02012849)"]
    by_list.setup()
    assert by_list.test_dataset.targets == [0, 0, 1, 1, 2, 2]
    assert [path.parent.name for path, _ in by_list.train_dataset.samples][::3] == chosen

    by_count = _imagenet(data, subset=3, max_images_per_class=1, val_fraction=0)  # CLS-LOC root
    assert by_count.wnids == ALL_WNIDS[:3]
    assert by_count.classes == ["tench", "goldfish", "great white shark"]
    by_count.setup()
    assert [p.name for p, _ in by_count.train_dataset.samples] == [
        f"{w}_0.JPEG" for w in ALL_WNIDS[:3]
    ]
    assert by_count.test_dataset.targets == [0, 1, 2]


def test_plain_train_val_tree_without_mapping_file_uses_preset_names(tmp_path: Path) -> None:
    write_ilsvrc(tmp_path, "folders", kaggle=False)
    (tmp_path / "LOC_synset_mapping.txt").unlink()  # as in fastai's Imagenette download
    datamodule = _imagenet(tmp_path, subset="imagenette", val_fraction=1 / 3)
    assert datamodule.classes[:2] == ["tench", "English springer"]
    assert _imagenet(tmp_path, subset=["n01443537"]).classes == ["n01443537"]
    datamodule.setup()
    assert (len(datamodule.train_dataset), len(datamodule.val_dataset)) == (20, 10)
    assert set(datamodule.val_dataset.targets) == set(range(10))  # stratified holdout
    assert len(datamodule.test_dataset) == 20


def test_imagewoof_preset_needs_its_class_folders(tmp_path: Path) -> None:
    write_ilsvrc(tmp_path, "folders", train=1, val=1)
    with pytest.raises(FileNotFoundError, match="no class folder for n02086240.*imagewoof"):
        _imagenet(tmp_path, subset="imagewoof")
    for wnid in SUBSET_PRESETS["imagewoof"]:
        save_image(
            tmp_path / "ILSVRC/Data/CLS-LOC/train" / wnid / "a.JPEG", Image.new("RGB", (8, 8))
        )
    woof = _imagenet(tmp_path, subset="imagewoof")
    assert woof.wnids == list(SUBSET_PRESETS["imagewoof"])
    assert woof.classes[4:6] == ["Border terrier", "Australian terrier"]  # no mapping lines
    with pytest.raises(FileNotFoundError, match="val/n02086240 does not exist"):
        woof.setup("test")


@pytest.mark.parametrize(
    ("subset", "error", "message"),
    [
        ("imagenet", ValueError, "not a preset \\(imagenette, imagewoof\\)"),
        (0, ValueError, "subset=0 classes.*choose 1 to 14"),
        (["n01440764", "n01440764"], ValueError, "distinct.*n01440764"),
        (["n09999999"], FileNotFoundError, "no class folder for n09999999"),
    ],
)
def test_bad_subsets_say_what_to_give(tmp_path: Path, subset, error, message: str) -> None:
    write_ilsvrc(tmp_path, "folders", train=1, val=1)
    with pytest.raises(error, match=message):
        _imagenet(tmp_path, subset=subset)


def test_imagenet_layout_errors_name_the_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ILSVRC/Data/CLS-LOC/train.*data.root"):
        _imagenet(tmp_path)
    write_ilsvrc(tmp_path, "flat", train=1, val=1)
    (tmp_path / "LOC_val_solution.csv").rename(tmp_path / "solution.bak")
    with pytest.raises(FileNotFoundError, match="LOC_val_solution.csv"):
        _imagenet(tmp_path).setup("test")
    (tmp_path / "LOC_val_solution.csv").write_text("ImageId,PredictionString\nILSVRC2012_val_1,\n")
    with pytest.raises(ValueError, match="LOC_val_solution.csv, line 2"):
        _imagenet(tmp_path).setup("test")
    (tmp_path / "LOC_val_solution.csv").write_text("ImageId,PredictionString\nmissing,n01440764\n")
    with pytest.raises(FileNotFoundError, match="labels missing as n01440764"):
        _imagenet(tmp_path).setup("test")
    (tmp_path / "LOC_synset_mapping.txt").write_text("n01440764\n")
    with pytest.raises(ValueError, match="LOC_synset_mapping.txt, line 1"):
        _imagenet(tmp_path)
