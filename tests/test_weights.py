"""Pretrained weights, offline: torchvision's state dicts give torchvision's logits for every family
torchvision ships, and files (``.pth``, ``.safetensors``, task checkpoints, ``file://`` URLs) load
exactly, with their class names and preprocessing, or fail with a message that names the fix."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn
from torchvision.models import get_weight
from torchvision.transforms.v2.functional import normalize

import zoo

PRETRAINED = zoo.list_models(pretrained=True, task="classification")
# The ImageNet-era families' models shaped as torchvision's (zoo model, torchvision builder).
TORCHVISION_BUILDER = {name: name.removesuffix("_torchvision") for name in PRETRAINED}


def _torchvision_model(name: str, **kwargs) -> nn.Module:
    """torchvision's model for a zoo name, seeded, with random BN statistics and affine
    parameters (at their initial values a wrong BN mapping or eps would go unnoticed)."""
    torch.manual_seed(0)
    if name.startswith("googlenet"):
        kwargs.setdefault("init_weights", True)  # silences the FutureWarning about its init
    model = torchvision.models.get_model(TORCHVISION_BUILDER[name], weights=None, **kwargs)
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            for tensor, low, high in [
                (module.running_mean, -0.5, 0.5),
                (module.running_var, 0.5, 2.0),
                (module.weight.data, 0.5, 1.5),
                (module.bias.data, -0.5, 0.5),
            ]:
                tensor.copy_(torch.empty_like(tensor).uniform_(low, high, generator=generator))
    return model.eval()


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


# An input size whose maps have odd and even sides, so ceil-mode pooling (GoogLeNet) matters.
X = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(2))


def test_torchvision_families_are_registered():
    assert PRETRAINED == sorted(
        [f"resnet{d}" for d in (18, 34, 50, 101, 152)]
        + [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]
        + ["alexnet_torchvision", "googlenet_torchvision"]
    )
    assert zoo.model_info("resnet18").torchvision_weights == "ResNet18_Weights.IMAGENET1K_V1"
    assert zoo.model_info("lenet").torchvision_weights is None
    assert zoo.list_models("resnet1*", pretrained=True) == ["resnet101", "resnet152", "resnet18"]


@pytest.mark.parametrize(
    "name,kwargs",
    [(name, {}) for name in PRETRAINED]
    # torchvision turns transform_input on for its GoogLeNet weights; off is tested too.
    + [("googlenet_torchvision", {"transform_input": False})],
)
def test_torchvision_weights_give_torchvision_logits(name, kwargs, serve_torchvision):
    info = zoo.model_info(name)
    tv_kwargs = {**info.torchvision_kwargs, **kwargs}
    reference = _torchvision_model(name, **tv_kwargs)
    calls = serve_torchvision(reference.state_dict())

    model = zoo.create_model(name, weights="torchvision", **kwargs)

    weights = get_weight(info.torchvision_weights)
    assert calls == [(weights, {"progress": True, "check_hash": True, "weights_only": True})]
    assert sum(p.numel() for p in model.parameters()) == weights.meta["num_params"]
    torch.testing.assert_close(_logits(model, X), _logits(reference, X), rtol=1e-5, atol=1e-5)
    cfg = model.pretrained_cfg
    preset = weights.transforms()
    assert cfg.class_names == weights.meta["categories"]
    assert (cfg.mean, cfg.std, cfg.in_channels) == (preset.mean, preset.std, 3)
    assert (cfg.image_size, cfg.resize_size) == (preset.crop_size[0], preset.resize_size[0])
    assert cfg.source == f"torchvision:{info.torchvision_weights}"


@pytest.fixture(scope="module")
def resnet18_torchvision():
    return _torchvision_model("resnet18")


def test_pretrained_config_of_torchvision_weights(resnet18_torchvision, serve_torchvision):
    serve_torchvision(resnet18_torchvision.state_dict())
    model = zoo.create_model("resnet18", weights="torchvision")
    cfg = model.pretrained_cfg
    assert len(cfg.class_names) == 1000 and cfg.class_names[:2] == ["tench", "goldfish"]
    assert (cfg.image_size, cfg.resize_size) == (224, 256)
    assert cfg.mean == [0.485, 0.456, 0.406] and cfg.std == [0.229, 0.224, 0.225]
    # The attached preprocessing is torchvision's evaluation preset: resize 256, crop 224.
    image = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)
    ours = cfg.transforms()(image)
    theirs = get_weight("ResNet18_Weights.IMAGENET1K_V1").transforms()(image)
    assert ours.shape == theirs.shape == (3, 224, 224)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0.05)  # a grey level is ~0.017 here
    assert not hasattr(zoo.create_model("resnet18"), "pretrained_cfg")


def test_another_torchvision_entry(serve_torchvision):
    calls = serve_torchvision(zoo.create_model("resnet50").state_dict())
    model = zoo.create_model("resnet50", weights="torchvision:ResNet50_Weights.IMAGENET1K_V1")
    assert calls[0][0] is get_weight("ResNet50_Weights.IMAGENET1K_V1")
    assert model.pretrained_cfg.source == "torchvision:ResNet50_Weights.IMAGENET1K_V1"
    assert model.pretrained_cfg.resize_size == 256  # V2 is evaluated at 232


def test_other_classes_and_channels_adapt_after_loading(resnet18_torchvision, serve_torchvision):
    serve_torchvision(resnet18_torchvision.state_dict())
    model = zoo.create_model("resnet18", weights="torchvision", num_classes=10, in_channels=1)
    assert model.num_classes == 10 and model.fc.out_features == 10 and model.in_channels == 1
    stem = model.features.stem[0][0].weight
    torch.testing.assert_close(stem, resnet18_torchvision.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(
        model.features.layer4[1].conv2.weight, resnet18_torchvision.layer4[1].conv2.weight
    )
    cfg = model.pretrained_cfg
    assert cfg.class_names is None and cfg.in_channels == 1 and len(cfg.mean) == 1


def test_grey_input_through_googlenet_transform_input(serve_torchvision):
    """transform_input after zoo.adapt(in_channels=1): a grey image normalised with the adapted
    mean/std gives the logits torchvision gives its RGB copy."""
    reference = _torchvision_model("googlenet_torchvision", transform_input=True)
    serve_torchvision(reference.state_dict())
    model = zoo.create_model("googlenet_torchvision", weights="torchvision", in_channels=1)
    cfg = model.pretrained_cfg
    raw = torch.rand(2, 1, 112, 112, generator=torch.Generator().manual_seed(3))
    grey = (raw - cfg.mean[0]) / cfg.std[0]
    rgb = normalize(raw.expand(-1, 3, -1, -1), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    torch.testing.assert_close(_logits(model, grey), _logits(reference, rgb), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layout", ["torchvision", "zoo"])
def test_pth_state_dict_in_either_layout(layout, resnet18_torchvision, tmp_path):
    reference = resnet18_torchvision
    if layout == "zoo":
        torch.manual_seed(5)
        reference = zoo.create_model("resnet18").eval()
    torch.save(reference.state_dict(), tmp_path / "weights.pth")
    if layout == "zoo":  # nothing says how it was trained: a warning names the fix
        with pytest.warns(UserWarning, match="bare state dict.*pretrained_cfg_overlay"):
            model = zoo.create_model("resnet18", weights=tmp_path / "weights.pth")
    else:
        model = zoo.create_model("resnet18", weights=tmp_path / "weights.pth")
    torch.testing.assert_close(_logits(model, X), _logits(reference, X), rtol=1e-5, atol=1e-5)
    cfg = model.pretrained_cfg
    assert cfg.source == str(tmp_path / "weights.pth")
    if layout == "zoo":
        assert cfg.class_names is None and cfg.mean is None
    else:  # torchvision's layout: torchvision's preprocessing and ImageNet's names
        assert len(cfg.class_names) == 1000 and cfg.mean == [0.485, 0.456, 0.406]
        assert cfg.extra["preprocessing"] == "torchvision:ResNet18_Weights.IMAGENET1K_V1"


def test_bare_state_dict_of_other_shape_is_loaded_at_its_own(tmp_path):
    torch.manual_seed(0)
    trained = zoo.create_model("lenet", num_classes=4, in_channels=3).eval()
    torch.save(trained.state_dict(), tmp_path / "lenet.pt")
    model = zoo.create_model("lenet", weights=tmp_path / "lenet.pt")  # default: 10 classes, grey
    assert (model.num_classes, model.in_channels) == (4, 3)
    x = torch.randn(2, 3, 28, 28)
    torch.testing.assert_close(_logits(model, x), _logits(trained, x))
    adapted = zoo.create_model("lenet", weights=tmp_path / "lenet.pt", num_classes=2)
    assert adapted.num_classes == 2 and adapted.in_channels == 3


def _lenet_and_record(**record) -> tuple[nn.Module, dict]:
    torch.manual_seed(0)
    kwargs = {"num_classes": 3, "activation": "relu", "pooling": "max"}
    model = zoo.create_model("lenet", **kwargs).eval()
    return model, {
        "model": "lenet",
        "model_kwargs": kwargs,
        "task": "classification",
        "class_names": ["ant", "bee", "cat"],
        "mean": [0.5],
        "std": [0.25],
        "image_size": 28,
        **record,
    }


def test_safetensors_bare_and_with_zoo_metadata(tmp_path):
    trained, record = _lenet_and_record()
    save_file(trained.state_dict(), tmp_path / "bare.safetensors")
    save_file(trained.state_dict(), tmp_path / "exported.safetensors", {"zoo": json.dumps(record)})
    x = torch.randn(2, 1, 28, 28)

    bare = zoo.create_model(
        "lenet", weights=tmp_path / "bare.safetensors", **record["model_kwargs"]
    )
    torch.testing.assert_close(_logits(bare, x), _logits(trained, x))
    assert bare.pretrained_cfg.class_names is None

    exported = zoo.create_model("lenet", weights=str(tmp_path / "exported.safetensors"))
    torch.testing.assert_close(_logits(exported, x), _logits(trained, x))
    cfg = exported.pretrained_cfg
    assert cfg.class_names == ["ant", "bee", "cat"] and (cfg.mean, cfg.std) == ([0.5], [0.25])
    assert cfg.extra == {"task": "classification"} and cfg.in_channels == 1
    loaded = zoo.load(tmp_path / "exported.safetensors")
    assert not loaded.training and loaded.pretrained_cfg.class_names == cfg.class_names


def test_task_checkpoint(tmp_path):
    trained, record = _lenet_and_record(resize_size=32)
    state = {f"model.{k}": v for k, v in trained.state_dict().items()}
    torch.save({"state_dict": state, "zoo": record, "epoch": 3}, tmp_path / "best.ckpt")
    x = torch.randn(2, 1, 28, 28)

    model = zoo.create_model("lenet", weights=tmp_path / "best.ckpt")
    torch.testing.assert_close(_logits(model, x), _logits(trained, x))
    assert model.pretrained_cfg.resize_size == 32 and model.pretrained_cfg.image_size == 28
    assert zoo.load(tmp_path / "best.ckpt").pretrained_cfg.resize_size == 32

    # Fine-tuning it on other classes: the record fixes the shape, zoo.adapt the rest.
    finetuned = zoo.create_model("lenet", weights=tmp_path / "best.ckpt", num_classes=5)
    assert finetuned.num_classes == 5 and finetuned.pretrained_cfg.class_names is None
    with pytest.raises(ValueError, match="holds weights of 'lenet'.*not 'lenet_bn'"):
        zoo.create_model("lenet_bn", weights=tmp_path / "best.ckpt")


def _hashed_copy(tmp_path, state: dict, digest_prefix: str | None = None):
    """``state`` saved under ``lenet-<sha256 prefix>.pth`` (or a given, wrong, prefix)."""
    plain = tmp_path / "plain.pth"
    torch.save(state, plain)
    digest = hashlib.sha256(plain.read_bytes()).hexdigest()
    hashed = tmp_path / "served" / f"lenet-{digest_prefix or digest[:10]}.pth"
    hashed.parent.mkdir(exist_ok=True)
    plain.rename(hashed)
    return hashed


def test_url_with_its_hash_is_cached_then_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    trained, _ = _lenet_and_record()
    served = _hashed_copy(tmp_path, trained.state_dict())
    model = zoo.create_model("lenet", weights=served.as_uri(), activation="relu", pooling="max")
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(_logits(model, x), _logits(trained, x))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / served.name
    assert cached.read_bytes() == served.read_bytes()
    assert model.pretrained_cfg.source == served.as_uri()
    served.unlink()  # the second call reads the cache
    zoo.create_model("lenet", weights=served.as_uri(), activation="relu", pooling="max")


def test_url_with_a_wrong_hash_leaves_nothing_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    served = _hashed_copy(tmp_path, zoo.create_model("lenet").state_dict(), "deadbeef00")
    with pytest.raises(ValueError, match="does not match the SHA-256 prefix 'deadbeef00'"):
        zoo.create_model("lenet", weights=served.as_uri())
    assert list((tmp_path / "torch" / "hub" / "checkpoints").iterdir()) == []


def test_url_without_a_hash_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"no SHA-256 prefix.*name-<first 8\+ hex digits"):
        zoo.create_model("lenet", weights=(tmp_path / "lenet.pth").as_uri())


def test_errors_name_the_weights_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"no weights for 'lenet'.*'resnet18'"):
        zoo.create_model("lenet", weights="torchvision")
    with pytest.raises(
        ValueError, match=r"unknown torchvision weights.*ResNet18_Weights\.IMAGENET1K_V1"
    ):
        zoo.create_model("resnet18", weights="torchvision:ResNet18_Weights.IMAGENET1K_V9")
    with pytest.raises(ValueError, match=r"unknown torchvision weights 'VGG11_Weights"):
        zoo.create_model("resnet18", weights="torchvision:VGG11_Weights.IMAGENET1K_V1")
    with pytest.raises(
        ValueError, match="unknown weights 'imagenet'; weights must be None, 'torchvision'"
    ):
        zoo.create_model("resnet18", weights="imagenet")
    with pytest.raises(FileNotFoundError, match="no weights file at .*missing.pth"):
        zoo.create_model("resnet18", weights=tmp_path / "missing.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth holds a list, not a state dict"):
        zoo.create_model("lenet", weights=tmp_path / "list.pth")


def test_missing_unexpected_and_mis_shaped_keys_are_summarised(tmp_path):
    state = zoo.create_model("mlp").state_dict()
    del state["fc.bias"]
    state["head.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError) as error:
        zoo.create_model("mlp", weights=tmp_path / "broken.pth")
    message = str(error.value)
    assert "broken.pth do not fit MLP" in message
    assert "1 missing keys (fc.bias)" in message and "1 unexpected keys (head.weight)" in message

    torch.save(zoo.create_model("mlp", hidden_sizes=(128,)).state_dict(), tmp_path / "w128.pth")
    with pytest.raises(
        ValueError,
        match=r"shapes differ \(features.hidden1.0.weight: file \[128, 784\], model \[256, 784\]",
    ):
        zoo.create_model("mlp", weights=tmp_path / "w128.pth")
