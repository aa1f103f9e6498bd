"""Weights and checkpoints from strangers: nothing pickled runs, an offline download says where the
file goes, a bare state dict keeps torchvision's preprocessing, and every bad file gets a message
that names it, what was expected and the fix. Every entry point that reads a file is tried:
``zoo.load`` (path and URL), ``create_model(weights=)``, ``Task.load_from_checkpoint``,
``zoo fit/validate/test/predict --ckpt_path``, ``zoo export`` and ``StyleTransfer``'s VGG."""

from __future__ import annotations

import os
import pickle
import re
import urllib.error
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torchvision.models import WeightsEnum

import zoo
from datamodules import Digits
from tasks import ImageClassifier, StyleTransfer
from tasks.cli import main
from zoo.weights import WeightsUnavailable

CONFIGS = Path(__file__).parents[1] / "configs"
LENET_DIGITS = str(CONFIGS / "classification" / "lenet_digits.yaml")
NO_NETWORK = urllib.error.URLError("[Errno -2] Name or service not known")


class _Payload:
    """A pickle that, when loaded without ``weights_only``, creates ``marker`` (a shell command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint of ``zoo fit``'s kind: LeNet on Digits after one training step."""
    root = tmp_path_factory.mktemp("ckpt")
    task = ImageClassifier("lenet", num_classes=10, in_channels=1)
    trainer = L.Trainer(
        max_steps=1,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task, datamodule=Digits(batch_size=32))
    trainer.save_checkpoint(root / "lenet.ckpt")
    return root / "lenet.ckpt"


@pytest.fixture
def malicious(checkpoint, tmp_path) -> tuple[Path, Path]:
    """The real checkpoint with a code-running object added, and the marker it would write."""
    marker = tmp_path / "PWNED"
    contents = torch.load(checkpoint, weights_only=True)
    contents["callbacks"] = {"evil": _Payload(marker)}
    torch.save(contents, tmp_path / "malicious.ckpt")
    state = zoo.create_model("lenet").state_dict() | {"evil": _Payload(marker)}
    torch.save(state, tmp_path / "malicious.pth")
    return tmp_path / "malicious.ckpt", marker


REFUSED = r"refused to load .*malicious.* pickled Python objects.*the first is posix\.system"


# --- malicious pickles: refused by every entry point, the marker never appears -------------------


def test_malicious_checkpoint_refused_by_zoo_load_and_create_model(malicious):
    path, marker = malicious
    with pytest.raises(ValueError, match=REFUSED):
        zoo.load(path)
    with pytest.raises(ValueError, match=REFUSED):
        zoo.create_model("lenet", weights=path)
    with pytest.raises(ValueError, match=REFUSED):
        zoo.create_model("lenet", weights=path.with_suffix(".pth"))
    assert not marker.exists()


def test_malicious_checkpoint_refused_from_a_url(malicious, tmp_path, monkeypatch):
    """A URL (hash-checked into the hub cache) is read as safely as a path."""
    path, marker = malicious
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    served = tmp_path / "served" / f"lenet-{digest}.ckpt"
    served.parent.mkdir()
    served.write_bytes(path.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(ValueError, match=r"refused to load .*lenet-.*pickled Python objects"):
        zoo.load(served.as_uri())
    with pytest.raises(ValueError, match=r"refused to load"):
        zoo.create_model("lenet", weights=served.as_uri())
    assert not marker.exists()


def test_malicious_checkpoint_refused_by_load_from_checkpoint(malicious):
    path, marker = malicious
    with pytest.raises(ValueError, match=REFUSED):
        ImageClassifier.load_from_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_malicious_checkpoint_refused_by_the_cli(
    subcommand, malicious, tmp_path, monkeypatch, capsys
):
    """``zoo fit|validate|test|predict --ckpt_path``: refused while the command line is parsed
    (Lightning reads the checkpoint's hyper-parameters then), before any training."""
    path, marker = malicious
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([subcommand, "--config", LENET_DIGITS, "--ckpt_path", str(path)])
    assert exit_info.value.code not in (0, None)
    assert re.search(REFUSED, capsys.readouterr().err)
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_malicious_checkpoint_refused_by_lightnings_reader(malicious, tmp_path):
    """The checkpoint reader the zoo gives every run (``AtomicCheckpointIO``), as a plain
    ``Trainer`` uses it, also from a URL, where Lightning would unpickle anything."""
    from tasks import AtomicCheckpointIO

    path, marker = malicious
    with pytest.raises(ValueError, match=REFUSED):
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_raw_pickle_dump_is_refused_unrun(protocol, tmp_path):
    """A payload written with pickle.dump, not torch.save: at protocol 2 torch's safe reader
    names the object; at 4 and 5 it stops at an opcode ("Unsupported operand 149"), which
    is refused as well, not called a damaged file."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "raw.pth"
    with open(path, "wb") as file:
        pickle.dump({"weight": _Payload(marker)}, file, protocol=protocol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on the protocol
        with pytest.raises(ValueError, match=r"refused to load .*raw\.pth: it .*Nothing in it"):
            zoo.create_model("lenet", weights=path)
    assert not marker.exists()


def test_malicious_checkpoint_refused_by_zoo_export(malicious, capsys):
    path, marker = malicious
    with pytest.raises(SystemExit, match=r"zoo export: refused to load"):
        main(["export", str(path), "--format", "safetensors"])
    assert not marker.exists() and not path.with_suffix(".safetensors").exists()


def test_malicious_vgg_weights_refused_by_style_transfer(tmp_path):
    marker = tmp_path / "PWNED"
    state = zoo.create_model("vgg19").state_dict() | {"evil": _Payload(marker)}
    torch.save(state, tmp_path / "vgg19.pth")
    with pytest.raises(ValueError, match=r"refused to load .*vgg19\.pth"):
        StyleTransfer("skimage:chelsea", "skimage:coffee", weights=str(tmp_path / "vgg19.pth"))
    assert not marker.exists()


# --- damaged and foreign files ---------------------------------------------------------------


def _damaged(checkpoint: Path, tmp_path: Path) -> dict[str, Path]:
    data = checkpoint.read_bytes()
    files = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "text": b"model: lenet\nweights: here\n",
        "jpeg": b"\xff\xd8\xff\xe0" + bytes(60),
    }
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / f"{name}.ckpt"
        paths[name].write_bytes(content)
    return paths


DAMAGED = {
    "empty": r"empty\.ckpt is empty \(0 bytes\).*Fetch or copy it again",
    "truncated": r"cannot read .*truncated\.ckpt \([\d,]+ bytes\).*is a zip archive cut short.*copy",
    "text": r"cannot read .*text\.ckpt.*starts with b'model: l'.*another format",
    "jpeg": r"cannot read .*jpeg\.ckpt.*starts with b'\\xff\\xd8",
}


@pytest.mark.parametrize("kind", list(DAMAGED))
def test_damaged_files_are_named_with_what_is_wrong(kind, checkpoint, tmp_path):
    path = _damaged(checkpoint, tmp_path)[kind]
    for load in (
        lambda: zoo.load(path),
        lambda: zoo.create_model("lenet", weights=path),
        lambda: ImageClassifier.load_from_checkpoint(path),
    ):
        with pytest.raises(ValueError, match=DAMAGED[kind]):
            load()


@pytest.mark.parametrize("kind", ["empty", "truncated"])
def test_damaged_checkpoint_through_the_cli(kind, checkpoint, tmp_path, monkeypatch, capsys):
    path = _damaged(checkpoint, tmp_path)[kind]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["validate", "--config", LENET_DIGITS, "--ckpt_path", str(path)])
    assert re.search(DAMAGED[kind], capsys.readouterr().err)


def test_missing_checkpoint_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["validate", "--config", LENET_DIGITS, "--ckpt_path", str(tmp_path / "nope.ckpt")])
    assert re.search(
        r"--ckpt_path: no checkpoint at .*nope\.ckpt.*--ckpt_path last", capsys.readouterr().err
    )


def test_safetensors_with_a_wrong_header(tmp_path):
    save_file(zoo.create_model("lenet").state_dict(), tmp_path / "lenet.safetensors")
    data = (tmp_path / "lenet.safetensors").read_bytes()
    (tmp_path / "huge.safetensors").write_bytes(b"\xff" * 8 + data[8:])  # header length 2^64-1
    (tmp_path / "cut.safetensors").write_bytes(data[:100])
    for name in ("huge", "cut"):
        with pytest.raises(ValueError, match=rf"{name}\.safetensors is not a readable safetensors"):
            zoo.create_model("lenet", weights=tmp_path / f"{name}.safetensors")
    metadata = {"zoo": "{not json"}
    save_file(zoo.create_model("lenet").state_dict(), tmp_path / "meta.safetensors", metadata)
    with pytest.raises(ValueError, match=r"meta\.safetensors: its 'zoo' metadata is not JSON"):
        zoo.load(tmp_path / "meta.safetensors")


def test_another_architecture(checkpoint, tmp_path):
    """A zoo checkpoint of LeNet asked for as ResNet; a bare LeNet state dict asked for as MLP."""
    with pytest.raises(ValueError, match=r"holds weights of 'lenet'.*not 'resnet18'.*zoo\.load"):
        zoo.create_model("resnet18", weights=checkpoint)
    torch.save(zoo.create_model("lenet").state_dict(), tmp_path / "lenet.pth")
    with pytest.raises(ValueError, match=r"lenet\.pth do not fit MLP.*missing keys.*unexpected"):
        zoo.create_model("mlp", weights=tmp_path / "lenet.pth")


def test_another_number_of_classes_or_channels(checkpoint):
    """``create_model`` adapts; ``load_from_checkpoint`` with other shapes names the fix."""
    adapted = zoo.create_model("lenet", weights=checkpoint, num_classes=3, in_channels=3)
    assert (adapted.num_classes, adapted.in_channels) == (3, 3)
    for kwargs, asked in [({"num_classes": 3}, "num_classes=3"), ({"in_channels": 3}, "in_chan")]:
        with pytest.raises(ValueError) as error:
            ImageClassifier.load_from_checkpoint(checkpoint, **kwargs)
        message = str(error.value)
        assert "lenet.ckpt holds weights for ImageClassifier(model='lenet'" in message
        assert asked in message and "size mismatch" in message
        assert "zoo.adapt(model, num_classes=..." in message and "weights=" in message


# --- offline downloads: what was fetched, where the cache looks, the two fixes ------------------


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """torchvision's and torch.hub's downloads fail as they do without a network."""

    def no_network(*args, **kwargs):
        raise NO_NETWORK

    monkeypatch.setattr(WeightsEnum, "get_state_dict", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


@pytest.mark.parametrize(
    ("name", "kwargs", "entry", "file", "argument"),
    [
        ("resnet18", {"weights": "torchvision"}, "ResNet18_Weights.IMAGENET1K_V1",
         "resnet18-f37072fd.pth", "weights"),
        ("fasterrcnn_resnet50_fpn", {"weights": "torchvision"},
         "FasterRCNN_ResNet50_FPN_Weights.COCO_V1", "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
         "weights"),
        ("fcn_resnet50", {"weights": "torchvision"}, "FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1",
         "fcn_resnet50_coco-1167a1af.pth", "weights"),
        ("fcn_resnet18", {"backbone_weights": "torchvision"}, "ResNet18_Weights.IMAGENET1K_V1",
         "resnet18-f37072fd.pth", "model_kwargs.backbone_weights"),
        ("tinyssd", {"backbone": "resnet18", "backbone_weights": "torchvision"},
         "ResNet18_Weights.IMAGENET1K_V1", "resnet18-f37072fd.pth", "model_kwargs.backbone_weights"),
    ],
)  # fmt: skip
def test_offline_download_names_the_weights_the_cache_and_the_fixes(
    name, kwargs, entry, file, argument, offline
):
    with pytest.raises(WeightsUnavailable) as error:
        zoo.create_model(name, **kwargs)
    message = str(error.value)
    assert f"cannot download torchvision's weights {entry}" in message
    assert f"https://download.pytorch.org/models/{file}" in message
    assert "Name or service not known" in message
    assert f"{offline / file}" in message and f"$TORCH_HOME/hub/checkpoints/{file}" in message
    assert f"copy {file}" in message and f"--model.init_args.{argument} PATH" in message
    assert f"{argument.rpartition('.')[2]}=PATH in Python" in message
    assert isinstance(error.value, OSError)


def test_offline_url_weights(offline):
    url = "https://example.org/models/lenet-0123abcd.pth"
    with pytest.raises(
        WeightsUnavailable, match=r"cannot download the weights lenet-0123abcd\.pth"
    ):
        zoo.create_model("lenet", weights=url)
    with pytest.raises(WeightsUnavailable, match=rf"{offline / 'lenet-0123abcd.pth'}"):
        zoo.load(url)
    assert not list(offline.glob("*")) if offline.exists() else True  # nothing half-written


@pytest.mark.parametrize(
    "error", [PermissionError(13, "Permission denied"), OSError(28, "No space left on device")]
)
def test_a_cache_that_cannot_be_written_is_not_called_offline(error, monkeypatch, tmp_path):
    """Only network errors mean "offline": a cache folder without write permission or a full
    disk reach the user as themselves, not as advice to copy the file by hand."""

    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fails)
    monkeypatch.setattr(torch.hub, "download_url_to_file", fails)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    for weights in ("torchvision", "https://example.org/models/lenet-0123abcd.pth"):
        name = "resnet18" if weights == "torchvision" else "lenet"
        with pytest.raises(type(error)) as caught:
            zoo.create_model(name, weights=weights)
        assert not isinstance(caught.value, WeightsUnavailable)


def test_offline_fine_tuning_recipe_from_the_cli(offline, tmp_path, monkeypatch):
    """The recipe a newcomer runs first, offline: one message, no jsonargparse wrapper."""
    from tests._image_files import write_photo_classes

    write_photo_classes(tmp_path / "images")
    monkeypatch.chdir(tmp_path)
    recipe = str(CONFIGS / "finetune" / "resnet18_imagefolder.yaml")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", recipe, "--data.root", str(tmp_path / "images")])
    message = str(exit_info.value)
    assert "cannot download torchvision's weights ResNet18_Weights.IMAGENET1K_V1" in message
    assert "--model.init_args.weights PATH" in message
    assert "Does not validate against any of the Union subtypes" not in message


# --- a bare state dict keeps its preprocessing ----------------------------------------------------


def _photo() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((160, 120))


def test_torchvision_detection_file_predicts_as_torchvision_weights(serve_torchvision, tmp_path):
    """torchvision's own Faster R-CNN file, the usual offline route, predicts exactly as
    ``weights="torchvision"``: the same normalisation (torchvision's detectors normalise inside,
    zoo's take it from pretrained_cfg) and the same 90 COCO names."""
    from zoo.backbones import freeze_batch_norm

    torch.manual_seed(0)
    detector = torchvision.models.get_model(
        "fasterrcnn_resnet50_fpn", weights=None, weights_backbone=None
    )
    state = freeze_batch_norm(detector.backbone.body) and detector.state_dict()  # COCO's layout
    serve_torchvision(state)
    path = tmp_path / "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
    torch.save(state, path)
    kwargs = {"box_score_thresh": 0.0, "min_size": 160, "max_size": 200}
    from_file = zoo.create_model("fasterrcnn_resnet50_fpn", weights=path, **kwargs)
    served = zoo.create_model("fasterrcnn_resnet50_fpn", weights="torchvision", **kwargs)
    assert from_file.pretrained_cfg.mean == served.pretrained_cfg.mean is not None
    assert from_file.pretrained_cfg.class_names == served.pretrained_cfg.class_names
    assert len(from_file.pretrained_cfg.class_names) == 90
    image = _photo()
    expected, got = served.predict(image)[0], from_file.predict(image)[0]
    assert len(got["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(got[key], expected[key])
    raw = from_file.eval()([torchvision.transforms.functional.pil_to_tensor(image) / 255.0])[0]
    assert not torch.allclose(raw["scores"][:5], got["scores"][:5])  # normalising matters


@pytest.mark.parametrize(
    ("name", "file", "entry"),
    [
        ("resnet50", "resnet50-11ad3fa6.pth", "ResNet50_Weights.IMAGENET1K_V2"),
        ("resnet50", "resnet50-0676ba61.pth", "ResNet50_Weights.IMAGENET1K_V1"),
        ("resnet50", "my_resnet50.pth", "ResNet50_Weights.IMAGENET1K_V2"),  # the registered one
        ("fcn_resnet50", "fcn_resnet50_coco-1167a1af.pth",
         "FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1"),
    ],
)  # fmt: skip
def test_torchvision_layout_files_take_torchvision_preprocessing(name, file, entry, tmp_path):
    """Classifiers and segmenters: the entry is read off the file name where it is torchvision's
    (V2's resize is 232, V1's 256), else it is the family's registered entry."""
    from torchvision.models import get_weight

    torch.manual_seed(0)
    kwargs = {"aux_loss": True} if name.startswith("fcn") else {}
    tv_kwargs = {"weights_backbone": None} if name.startswith("fcn") else {}
    state = torchvision.models.get_model(name, weights=None, **kwargs, **tv_kwargs).state_dict()
    torch.save(state, tmp_path / file)
    cfg = zoo.create_model(name, weights=tmp_path / file, **kwargs).pretrained_cfg
    preset = get_weight(entry).transforms()
    assert cfg.extra["preprocessing"] == f"torchvision:{entry}"
    assert cfg.mean == list(preset.mean) and cfg.std == list(preset.std)
    assert cfg.resize_size == preset.resize_size[0]
    assert cfg.class_names == list(get_weight(entry).meta["categories"])


def test_bare_state_dict_of_unknown_origin_warns_and_takes_an_overlay(tmp_path):
    torch.save(zoo.create_model("lenet").state_dict(), tmp_path / "lenet.pth")
    with pytest.warns(
        UserWarning, match=r"lenet\.pth is a bare state dict.*pretrained_cfg_overlay"
    ):
        model = zoo.create_model("lenet", weights=tmp_path / "lenet.pth")
    assert model.pretrained_cfg.mean is None
    overlay = {"mean": [0.5], "std": [0.25], "class_names": [str(d) for d in range(10)]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # supplied: no warning
        model = zoo.create_model(
            "lenet", weights=tmp_path / "lenet.pth", pretrained_cfg_overlay=overlay
        )
    assert (model.pretrained_cfg.mean, model.pretrained_cfg.class_names[3]) == ([0.5], "3")
    with pytest.raises(ValueError, match=r"unknown fields \['mena'\]"):
        zoo.create_model(
            "lenet", weights=tmp_path / "lenet.pth", pretrained_cfg_overlay={"mena": 1}
        )
    scratch = zoo.create_model("lenet", pretrained_cfg_overlay=overlay)  # as timm, also untrained
    assert scratch.pretrained_cfg.std == [0.25] and scratch.pretrained_cfg.model == "lenet"
    grey = zoo.create_model("lenet", in_channels=1, pretrained_cfg_overlay=overlay)
    assert grey.pretrained_cfg.in_channels == 1  # transforms() turns images grey for it
    photo = _photo().resize((28, 28))
    assert grey(grey.pretrained_cfg.transforms()(photo).unsqueeze(0)).shape == (1, 10)
