"""Datamodules against real file formats and the torchvision reader; all offline."""

from __future__ import annotations

import gzip
from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision
from jsonargparse import ArgumentParser
from torch import nn

import datamodules
from datamodules import MNIST, ClassificationDataModule, Digits, FashionMNIST, read_idx, write_idx
from tests._idx_files import IDX_FILES, write_mnist_files

NUM_DIGITS = 1797  # sklearn.datasets.load_digits


def _all_batches(loader) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(labels)


# -- IDX reading and writing ----------------------------------------------------------


@pytest.mark.parametrize(
    "dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.float32, torch.float64]
)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, dtype: torch.dtype, suffix: str) -> None:
    generator = torch.Generator().manual_seed(0)
    if dtype.is_floating_point:
        tensor = torch.randn(3, 4, 5, generator=generator).to(dtype)
    else:
        info = torch.iinfo(dtype)
        tensor = torch.randint(info.min, info.max, (3, 4, 5), generator=generator, dtype=dtype)
    path = tmp_path / f"tensor-idx3{suffix}"
    write_idx(path, tensor)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    loaded = read_idx(path)
    assert loaded.dtype == dtype and loaded.shape == tensor.shape
    assert torch.equal(loaded, tensor)


@pytest.mark.parametrize("shape", [(7,), (2, 3), (1, 2, 3, 4), (0, 28, 28)])
def test_idx_round_trip_shapes(tmp_path: Path, shape: tuple[int, ...]) -> None:
    tensor = torch.arange(int(torch.tensor(shape).prod()), dtype=torch.int32).reshape(shape)
    write_idx(tmp_path / "t.idx", tensor)
    assert torch.equal(read_idx(tmp_path / "t.idx"), tensor)


def test_idx_header_bytes_follow_the_spec(tmp_path: Path) -> None:
    write_idx(tmp_path / "labels", torch.tensor([1, 2, 3], dtype=torch.int16))
    data = (tmp_path / "labels").read_bytes()
    # 00 00, type 0x0B (int16), 1 dimension, size 3 as big-endian int32, big-endian data.
    assert data == bytes.fromhex("00000b01 00000003 0001 0002 0003")


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
    tensor = torch.arange(10, dtype=torch.uint8)
    write_idx(tmp_path / "a.gz", tensor)
    (tmp_path / "a.gz").rename(tmp_path / "gzipped-without-suffix")
    write_idx(tmp_path / "b", tensor)
    (tmp_path / "b").rename(tmp_path / "raw-with-suffix.gz")
    assert torch.equal(read_idx(tmp_path / "gzipped-without-suffix"), tensor)
    assert torch.equal(read_idx(tmp_path / "raw-with-suffix.gz"), tensor)


def test_corrupt_idx_files_raise_value_error_naming_the_file(tmp_path: Path) -> None:
    write_idx(tmp_path / "good", torch.zeros(4, 28, 28, dtype=torch.uint8))
    good = (tmp_path / "good").read_bytes()
    cases = {
        "bad-magic": b"\x08\x03" + good[2:],
        "bad-type": good[:2] + b"\x07" + good[3:],
        "truncated-data": good[:-5],
        "truncated-header": good[:9],
        "trailing-bytes": good + b"\0",
        "empty": b"",
        "broken-gzip.gz": gzip.compress(good)[:-20],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=name):
            read_idx(tmp_path / name)


def test_write_idx_rejects_dtypes_idx_cannot_store(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "x", torch.zeros(3, dtype=torch.int64))


def test_read_idx_matches_torchvision_reader(tmp_path: Path) -> None:
    write_mnist_files(tmp_path, gz=False)
    for name in (name for pair in IDX_FILES.values() for name in pair):
        ours = read_idx(tmp_path / name)
        theirs = torchvision.datasets.mnist.read_sn3_pascalvincent_tensor(str(tmp_path / name))
        assert torch.equal(ours, theirs)


# -- MNIST and Fashion-MNIST ------------------------------------------------------------


@pytest.mark.parametrize("datamodule_class", [MNIST, FashionMNIST])
def test_same_samples_as_torchvision(tmp_path: Path, datamodule_class: type) -> None:
    # torchvision reads raw (not gzipped) files from root/<Dataset>/raw.
    raw = tmp_path / datamodule_class.__name__ / "raw"
    write_mnist_files(raw, gz=False)
    datamodule = datamodule_class(
        data_dir=str(tmp_path), normalize=False, batch_size=8, val_fraction=0.2
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")

    tv_train = getattr(torchvision.datasets, datamodule_class.__name__)(tmp_path, train=True)
    tv_test = getattr(torchvision.datasets, datamodule_class.__name__)(tmp_path, train=False)
    assert torch.equal(read_idx(raw / "train-images-idx3-ubyte"), tv_train.data)
    assert torch.equal(read_idx(raw / "train-labels-idx1-ubyte").long(), tv_train.targets)
    assert torch.equal(read_idx(raw / "t10k-images-idx3-ubyte"), tv_test.data)

    images, labels = next(iter(datamodule.test_dataloader()))
    assert images.shape == (8, 1, 28, 28) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert torch.equal(images[:, 0], tv_test.data[:8].float() / 255)
    assert torch.equal(labels, tv_test.targets[:8])

    # Train and validation sets are the torchvision training samples at the split positions.
    for indices, dataset in (
        (datamodule.train_indices, datamodule.train_dataset),
        (datamodule.val_indices, datamodule.val_dataset),
    ):
        assert torch.equal(dataset.images[:, 0], tv_train.data[indices].float() / 255)
        assert torch.equal(dataset.labels, tv_train.targets[indices])


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_mnist_reads_both_layouts_and_compressions(tmp_path: Path, gz: bool, layout: str) -> None:
    directory = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    written = write_mnist_files(directory, gz=gz, seed=1)
    datamodule = MNIST(data_dir=str(tmp_path), normalize=False, batch_size=7)
    datamodule.prepare_data()
    datamodule.setup("test")
    images, labels = _all_batches(datamodule.test_dataloader())
    expected_images, expected_labels = written["test"]
    assert images.shape == (20, 1, 28, 28)
    assert torch.equal(images[:, 0], expected_images.float() / 255)
    assert torch.equal(labels, expected_labels.long())


def test_normalisation_uses_the_dataset_constants(tmp_path: Path) -> None:
    written = write_mnist_files(tmp_path)
    datamodule = FashionMNIST(data_dir=str(tmp_path))
    datamodule.setup("test")
    images, _ = _all_batches(datamodule.test_dataloader())
    expected = (written["test"][0].float() / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(images[:, 0], expected)
    torch.testing.assert_close(datamodule.preprocess(written["test"][0]), images)


def test_missing_files_error_names_files_directories_and_fix(tmp_path: Path) -> None:
    write_mnist_files(tmp_path)
    for name in IDX_FILES["test"]:
        (tmp_path / f"{name}.gz").unlink()
    datamodule = MNIST(data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError) as raised:
        datamodule.prepare_data()
    message = str(raised.value)
    assert "t10k-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "train-images-idx3-ubyte" not in message  # present, so not reported
    assert str(tmp_path) in message and str(tmp_path / "MNIST" / "raw") in message
    assert "--data.download true" in message and "yann.lecun.com" in message
    # setup (which may run without prepare_data) reports the same instead of a KeyError.
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        datamodule.setup("test")


def test_failed_download_is_reported_as_missing_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class OfflineFashionMNIST:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(FashionMNIST, "_torchvision_dataset", OfflineFashionMNIST)
    datamodule = FashionMNIST(data_dir=str(tmp_path), download=True)
    with pytest.raises(FileNotFoundError, match="no network") as raised:
        datamodule.prepare_data()
    assert "train-images-idx3-ubyte" in str(raised.value)
    assert "fashion-mnist" in str(raised.value)


def test_download_goes_through_torchvision_into_its_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    class FakeMNIST:  # stands in for torchvision.datasets.MNIST(root, download=True)
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            write_mnist_files(Path(root) / "MNIST" / "raw")

    monkeypatch.setattr(MNIST, "_torchvision_dataset", FakeMNIST)
    datamodule = MNIST(data_dir=str(tmp_path), download=True, val_fraction=0.2)
    datamodule.prepare_data()
    assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    datamodule.prepare_data()  # files present now: no second download
    assert len(calls) == 2
    datamodule.setup("fit")
    assert len(datamodule.train_dataset) + len(datamodule.val_dataset) == 50


def test_tiny_data_falls_back_to_an_unstratified_split(tmp_path: Path) -> None:
    write_mnist_files(tmp_path)  # 50 training images: 10% is 5, fewer than 10 classes
    datamodule = MNIST(data_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="stratify"):
        datamodule.setup("fit")
    assert (len(datamodule.train_indices), len(datamodule.val_indices)) == (45, 5)


def test_dataset_metadata_is_available_before_setup() -> None:
    mnist, fashion, digits = MNIST(), FashionMNIST(), Digits()
    for datamodule in (mnist, fashion, digits):
        assert datamodule.num_classes == 10 and datamodule.in_channels == 1
        assert len(datamodule.classes) == 10
        assert len(datamodule.mean) == len(datamodule.std) == 1
    assert mnist.classes == [str(digit) for digit in range(10)] == digits.classes
    assert fashion.classes[0] == "T-shirt/top" and fashion.classes[9] == "Ankle boot"
    assert (mnist.mean, mnist.std) == ((0.1307,), (0.3081,))
    assert (fashion.mean, fashion.std) == ((0.2860,), (0.3530,))


def test_dataloaders_before_setup_say_what_to_do() -> None:
    with pytest.raises(RuntimeError, match="setup"):
        Digits().train_dataloader()


# -- Digits, splits and preprocessing -----------------------------------------------------


def test_digits_batches() -> None:
    datamodule = Digits(batch_size=32)
    datamodule.setup("fit")
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (32, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (32,) and labels.dtype == torch.int64
    assert 0 <= labels.min() and labels.max() <= 9
    train_images, _ = _all_batches(datamodule.train_dataloader())
    assert len(train_images) == len(datamodule.train_dataset)  # drop_last=False
    # Standardised with the 8 x 8 statistics; upsampling smooths, so std is below 1.
    assert abs(train_images.mean()) < 0.1
    assert 0.75 < train_images.std() < 1.05


def test_digits_native_size_is_standardised() -> None:
    datamodule = Digits(image_size=None)
    datamodule.setup("fit")
    images, _ = _all_batches(datamodule.train_dataloader())
    assert images.shape[1:] == (1, 8, 8)
    assert abs(images.mean()) < 0.05 and abs(images.std() - 1) < 0.05


def test_digits_split_sizes() -> None:
    datamodule = Digits()
    datamodule.setup()
    sizes = [len(datamodule.train_dataset), len(datamodule.val_dataset)]
    assert sizes == [1293, 144] and len(datamodule.test_dataset) == 360
    assert sum(sizes) + len(datamodule.test_dataset) == NUM_DIGITS
    assert len(list(datamodule.predict_dataloader())) == len(datamodule.test_dataloader())


def test_digits_test_split_is_the_same_for_every_fold_and_holdout() -> None:
    test_sets = []
    for kwargs in ({}, {"num_folds": 5, "fold": 3}, {"val_fraction": 0.3, "seed": 7}):
        datamodule = Digits(**kwargs)
        datamodule.setup("test")
        test_sets.append((datamodule.test_dataset.images, datamodule.test_dataset.labels))
    for images, labels in test_sets[1:]:
        assert torch.equal(images, test_sets[0][0]) and torch.equal(labels, test_sets[0][1])
    assert torch.bincount(test_sets[0][1]).min() >= 35  # stratified: ~36 per class


def test_k_fold_validates_every_sample_exactly_once() -> None:
    num_folds, val_sets = 5, []
    train_split_size = NUM_DIGITS - 360
    for fold in range(num_folds):
        datamodule = Digits(num_folds=num_folds, fold=fold)
        datamodule.setup("fit")
        train, val = set(datamodule.train_indices.tolist()), set(datamodule.val_indices.tolist())
        assert not train & val and train | val == set(range(train_split_size))
        assert len(val) in (train_split_size // num_folds, train_split_size // num_folds + 1)
        assert set(datamodule.val_dataset.labels.tolist()) == set(range(10))  # stratified
        val_sets.append(val)
    assert sum(len(val) for val in val_sets) == train_split_size
    assert set().union(*val_sets) == set(range(train_split_size))


def test_splits_are_seeded() -> None:
    first, second, other = Digits(seed=1), Digits(seed=1), Digits(seed=2)
    for datamodule in (first, second, other):
        datamodule.setup("fit")
    assert torch.equal(first.val_indices, second.val_indices)
    assert not torch.equal(first.val_indices, other.val_indices)


def test_no_validation_set_when_val_fraction_is_zero() -> None:
    datamodule = Digits(val_fraction=0)
    datamodule.setup("fit")
    assert datamodule.val_dataloader() == []
    assert len(datamodule.train_dataset) == NUM_DIGITS - 360


def test_resize_to_image_size() -> None:
    datamodule = Digits(image_size=32, batch_size=16)
    datamodule.setup("test")
    images, _ = next(iter(datamodule.test_dataloader()))
    assert images.shape == (16, 1, 32, 32)


def test_per_batch_preprocessing_matches_precomputed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Data too big to preprocess up front (e.g. Fashion-MNIST at 224) goes batch by batch.
    write_mnist_files(tmp_path)
    precomputed = FashionMNIST(data_dir=str(tmp_path), image_size=64, batch_size=8)
    precomputed.setup("test")
    monkeypatch.setattr(ClassificationDataModule, "_PRECOMPUTE_MAX_BYTES", 0)
    per_batch = FashionMNIST(data_dir=str(tmp_path), image_size=64, batch_size=8)
    per_batch.setup("test")
    assert per_batch.test_dataset.images.dtype == torch.uint8  # kept raw
    assert precomputed.test_dataset.images.dtype == torch.float32
    expected, expected_labels = _all_batches(precomputed.test_dataloader())
    images, labels = _all_batches(per_batch.test_dataloader())
    assert images.shape == (20, 1, 64, 64)
    torch.testing.assert_close(images, expected)
    assert torch.equal(labels, expected_labels)
    image, label = per_batch.test_dataset[3]  # single-sample access works too
    torch.testing.assert_close(image, expected[3])
    assert label == expected_labels[3]


def test_worker_processes_give_the_same_batches() -> None:
    datamodule = Digits(num_workers=2, batch_size=100)
    datamodule.setup("test")
    loader = datamodule.test_dataloader()
    assert loader.persistent_workers
    try:
        images, labels = _all_batches(loader)
    finally:
        # Stop the persistent workers now, as Trainer does at the end of a stage. Left to
        # the garbage collector, their queues may be finalised first and each worker then
        # idles until its 5 s status-check timeout.
        loader._iterator._shutdown_workers()
    assert torch.equal(images, datamodule.test_dataset.images)
    assert torch.equal(labels, datamodule.test_dataset.labels)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"num_folds": 5, "fold": 5}, "fold=5"),
        ({"num_folds": 5, "fold": -1}, "fold=-1"),
        ({"fold": 2}, "fold=2"),
        ({"val_fraction": 1.5}, "val_fraction=1.5"),
        ({"val_fraction": -0.1}, "val_fraction=-0.1"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"test_fraction": 0.0}, "test_fraction=0.0"),
        ({"image_size": 0}, "image_size=0"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        Digits(**kwargs)


# -- Lightning and LightningCLI integration ---------------------------------------------


def test_jsonargparse_sees_base_arguments_through_kwargs() -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(Digits, "data")
    config = parser.parse_args(
        ["--data.batch_size", "8", "--data.num_folds", "5", "--data.fold", "2",
         "--data.test_fraction", "0.25"]
    )  # fmt: skip
    assert config.data.batch_size == 8 and config.data.image_size == 28  # Digits' default
    datamodule = parser.instantiate(config).data
    assert isinstance(datamodule, Digits)
    assert (datamodule.batch_size, datamodule.num_folds, datamodule.fold) == (8, 5, 2)
    assert datamodule.test_fraction == 0.25

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(MNIST, "data")
    defaults = parser.get_defaults().data
    assert defaults.data_dir is None and defaults.download is False  # None: $ZOO_DATA or data/
    assert defaults.batch_size == 64 and defaults.image_size is None
    assert parser.parse_args(["--data.image_size", "224"]).data.image_size == 224


def test_hyperparameters_are_recorded_for_checkpoints(tmp_path: Path) -> None:
    hparams = MNIST(data_dir=str(tmp_path), batch_size=16).hparams
    assert hparams["data_dir"] == str(tmp_path) and hparams["batch_size"] == 16
    # A Path from Python is recorded as text: checkpoints load with weights_only=True.
    assert MNIST(data_dir=tmp_path).hparams["data_dir"] == str(tmp_path)
    assert Digits(num_folds=3, fold=1).hparams["fold"] == 1


class _LinearClassifier(L.LightningModule):
    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        images, labels = batch
        return nn.functional.cross_entropy(self.net(images), labels)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        images, labels = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(images), labels))

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        self.validation_step(batch, batch_idx)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


# With no validation set val_dataloader returns [], which Lightning accepts with a warning.
@pytest.mark.filterwarnings("ignore:Total length of `list` across ranks is zero")
@pytest.mark.parametrize("val_fraction", [0.1, 0.0])
def test_trainer_runs_on_the_datamodule(tmp_path: Path, val_fraction: float) -> None:
    datamodule = Digits(image_size=8, batch_size=64, val_fraction=val_fraction)
    model = _LinearClassifier(datamodule.num_classes, datamodule.in_channels, 8)
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=3, limit_val_batches=2, limit_test_batches=2,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    assert sum(trainer.num_val_batches) == (2 if val_fraction else 0)
    trainer.test(model, datamodule=datamodule, verbose=False)


def test_public_api() -> None:
    assert set(datamodules.__all__) == {
        "ClassificationDataModule", "Digits", "MNIST", "FashionMNIST", "read_idx", "write_idx",
        "SyntheticRegression", "SplitDataModule", "FileDataModule", "FileClassificationDataModule",
        "ImageFolder", "ImageNetSubset", "load_image", "COCO", "VOCDetection", "DATA_ENV", "data_root",
        "DetectionDataModule", "DigitScenes", "SegmentationDataModule", "VOCSegmentation",
        "COCOSegmentation", "DigitScenesSegmentation", "collate_segmentation",
    }  # fmt: skip


def test_synthetic_regression_is_the_linear_model() -> None:
    """Section 3.4.1: y = Xw + b + noise, seeded, with the batch format (features, targets)."""
    data = datamodules.SyntheticRegression(weights=[1.5, -2.0, 0.5], bias=-1.0, noise=0.0)
    data.setup("fit")
    features, targets = data.datasets["train"].tensors
    assert features.shape == (1000, 3) and data.in_features == 3
    torch.testing.assert_close(targets, features @ torch.tensor([1.5, -2.0, 0.5]) - 1.0)
    again = datamodules.SyntheticRegression(weights=[1.5, -2.0, 0.5], bias=-1.0, noise=0.0)
    again.setup("fit")
    torch.testing.assert_close(again.datasets["val"].tensors[0], data.datasets["val"].tensors[0])
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (32, 3) and y.shape == (32,) and x.dtype == y.dtype == torch.float32
    with pytest.raises(ValueError, match="weights is empty"):
        datamodules.SyntheticRegression(weights=[])
