"""``zoo export``: a checkpoint from a real (short) training run as safetensors, ONNX and
``torch.export`` files that reproduce the PyTorch outputs and carry the class names and
preprocessing; an ImageNet-era model with batch norm through the Python API; the CLI."""

from __future__ import annotations

import json
import sys
import warnings

import lightning as L
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

import zoo
from datamodules import Digits
from tasks import ImageClassifier
from tasks.cli import main
from tests._trainers import cpu_trainer
from zoo.export import FORMATS, checkpoint_record, export_checkpoint, export_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint as ``zoo fit`` writes it: LeNet after a few steps on the embedded digits."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    root = tmp_path_factory.mktemp("export")
    L.seed_everything(0)
    task = ImageClassifier("lenet", model_kwargs={"activation": "relu", "pooling": "max"})
    trainer = cpu_trainer(root, max_steps=5, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(task, datamodule=Digits(batch_size=32))
    path = root / "best.ckpt"
    trainer.save_checkpoint(path)
    return path


def _images(batch: int, shape=(1, 28, 28)) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch))


def _assert_digits_record(record: dict) -> None:
    assert record["model"] == "lenet" and record["task"] == "classification"
    assert record["model_kwargs"]["activation"] == "relu"
    assert record["class_names"] == Digits.classes
    assert record["mean"] == list(Digits.mean) and record["std"] == list(Digits.std)
    assert record["image_size"] == 28 and record["in_channels"] == 1


def _onnx_runtime():
    return pytest.importorskip(
        "onnxruntime", reason="ONNX parity needs onnxruntime: pip install 'lightning-zoo[export]'"
    )


def _onnx_outputs(path, images: torch.Tensor):
    session = _onnx_runtime().InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])


def test_checkpoint_record_is_the_training_record(checkpoint):
    record = checkpoint_record(checkpoint)
    _assert_digits_record(record)
    assert record == json.loads(json.dumps(record))  # plain data, as every format stores it


def test_onnx_matches_pytorch_for_any_batch_size(checkpoint, tmp_path):
    onnx = pytest.importorskip("onnx", reason="pip install 'lightning-zoo[export]'")
    _onnx_runtime()
    path = export_checkpoint(checkpoint, "onnx", tmp_path / "lenet.onnx")
    model = zoo.load(checkpoint)
    for batch in (1, 3):  # traced with 2: both sides of it prove the dynamic batch axis
        images = _images(batch)
        with torch.no_grad():
            torch.testing.assert_close(
                _onnx_outputs(path, images), model(images), atol=1e-4, rtol=0
            )

    proto = onnx.load(str(path))
    assert not list(tmp_path.glob("*.data"))  # one self-contained file
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    _assert_digits_record(props["zoo"])
    assert props["zoo"]["input_size"] == [1, 28, 28]
    assert props["class_names"] == Digits.classes and props["mean"] == list(Digits.mean)
    assert props["std"] == list(Digits.std) and props["image_size"] == 28


def test_onnx_resnet_with_batch_norm_via_the_python_api(tmp_path):
    _onnx_runtime()
    torch.manual_seed(0)
    model = zoo.create_model("resnet18", num_classes=4)
    with torch.no_grad():  # running statistics that differ from the initial 0 / 1
        model(torch.randn(4, 3, 64, 64) * 2 + 0.5)
    assert model.training
    record = {"model": "resnet18", "model_kwargs": {"num_classes": 4}, "class_names": list("abcd")}
    example = _images(2, (3, 64, 64))
    path = export_model(
        model, tmp_path / "r18.onnx", "onnx", example_input=example, metadata=record
    )
    assert model.training  # the caller's mode is restored
    model.eval()
    for batch in (1, 3):
        images = _images(batch, (3, 64, 64))
        with torch.no_grad():
            torch.testing.assert_close(
                _onnx_outputs(path, images), model(images), atol=1e-4, rtol=0
            )
    meta = _onnx_runtime().InferenceSession(str(path)).get_modelmeta().custom_metadata_map
    assert json.loads(meta["zoo"])["class_names"] == list("abcd")


def test_pt2_matches_eager_for_any_batch_size(checkpoint, tmp_path):
    path = export_checkpoint(checkpoint, "pt2", tmp_path / "lenet.pt2")
    extra_files = {"zoo.json": ""}
    program = torch.export.load(path, extra_files=extra_files)
    _assert_digits_record(json.loads(extra_files["zoo.json"]))
    exported, model = program.module(), zoo.load(checkpoint)
    for batch in (1, 3):
        images = _images(batch)
        with torch.no_grad():
            torch.testing.assert_close(exported(images), model(images), atol=1e-5, rtol=0)


def test_an_example_batch_of_one_still_exports_a_dynamic_batch(tmp_path):
    model = zoo.create_model("lenet").eval()
    path = export_model(model, tmp_path / "m.pt2", "pt2", example_input=_images(1), metadata={})
    images = _images(3)
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load(path).module()(images), model(images))


def test_safetensors_loads_strictly_into_a_fresh_model(checkpoint, tmp_path):
    path = export_checkpoint(checkpoint, "safetensors", tmp_path / "lenet.safetensors")
    with safe_open(str(path), "pt") as file:
        metadata = file.metadata()
    assert metadata["format"] == "pt"
    record = json.loads(metadata["zoo"])
    _assert_digits_record(record)
    fresh = zoo.create_model(record["model"], **record["model_kwargs"])
    fresh.load_state_dict(load_file(path), strict=True)
    images = _images(3)
    reloaded = zoo.load(path)  # the zoo's own readers take the file back, record included
    again = zoo.create_model("lenet", weights=str(path)).eval()
    assert (
        reloaded.pretrained_cfg.class_names
        == again.pretrained_cfg.class_names
        == list("0123456789")
    )
    with torch.no_grad():
        expected = zoo.load(checkpoint)(images)
        assert torch.equal(fresh.eval()(images), expected)
        assert torch.equal(reloaded(images), expected) and torch.equal(again(images), expected)


def test_safetensors_keeps_tied_weights(tmp_path):
    """safetensors refuses tensors that share memory; every state_dict key still gets saved."""
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    model[1].weight = model[0].weight
    path = export_model(model, tmp_path / "tied.safetensors", "safetensors", metadata={})
    tied = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    tied.load_state_dict(load_file(path), strict=True)
    torch.testing.assert_close(tied[1].weight, model[0].weight, rtol=0, atol=0)


def test_cli_writes_next_to_the_checkpoint(checkpoint, capsys):
    pytest.importorskip("onnxscript", reason="pip install 'lightning-zoo[export]'")
    expected = checkpoint.with_suffix(".onnx")
    expected.unlink(missing_ok=True)
    main(["export", str(checkpoint), "--format", "onnx"])
    assert expected.is_file()
    out = capsys.readouterr().out
    assert f"wrote {expected}" in out and "onnxruntime.InferenceSession" in out
    main(["export", str(checkpoint), "--format", "pt2", "--image-size", "28"])
    assert checkpoint.with_suffix(".pt2").is_file()
    assert "torch.export.load" in capsys.readouterr().out


def test_cli_explains_bad_input(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit, match="no checkpoint at"):
        main(["export", str(tmp_path / "missing.ckpt"), "--format", "pt2"])
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(SystemExit, match="has no 'zoo' record.*export_model"):
        main(["export", str(tmp_path / "foreign.ckpt"), "--format", "pt2"])
    with pytest.raises(SystemExit, match="opset=17 is older"):
        main(["export", str(checkpoint), "--format", "onnx", "--opset", "17"])
    with pytest.raises(SystemExit, match="applies to ONNX only"):
        main(["export", str(checkpoint), "--format", "pt2", "--opset", "18"])
    with pytest.raises(SystemExit, match="safetensors holds the weights only"):
        main(["export", str(checkpoint), "--format", "safetensors", "--image-size", "28"])
    with pytest.raises(SystemExit, match=r"does not take inputs of size \[1, 32, 32\]"):
        main(["export", str(checkpoint), "--format", "pt2", "--image-size", "32"])  # LeNet: 28
    with pytest.raises(SystemExit, match="is the checkpoint itself"):
        main(["export", str(checkpoint), "--format", "pt2", "--out", str(checkpoint)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(checkpoint), "--format", "tflite"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'tflite'" in err and all(name in err for name in FORMATS)


def test_python_api_errors(tmp_path, monkeypatch):
    model = zoo.create_model("lenet")
    with pytest.raises(ValueError, match=r"unknown export format 'tflite'.*'safetensors', 'onnx'"):
        export_model(model, tmp_path / "m.tflite", "tflite")
    with pytest.raises(ValueError, match="cannot tell the model's input size.*example_input"):
        export_model(model, tmp_path / "m.pt2", "pt2")  # no record: no name, no image size
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'lightning-zoo\[export\]'"):
        export_model(model, tmp_path / "m.onnx", "onnx", metadata={"model": "lenet"})


def test_regressor_checkpoint_exports_rows(tmp_path):
    """A checkpoint in the format every task writes, for a model that takes rows, not images."""
    model = zoo.create_model("linear_regression", in_features=3)
    record = {
        "model": "linear_regression",
        "model_kwargs": {"in_features": 3},
        "task": "regression",
    }
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "zoo": record}, tmp_path / "line.ckpt")
    path = export_checkpoint(tmp_path / "line.ckpt", "pt2")
    assert path == tmp_path / "line.pt2"
    extra_files = {"zoo.json": ""}
    exported = torch.export.load(path, extra_files=extra_files).module()
    assert json.loads(extra_files["zoo.json"])["input_size"] == [3]
    rows = torch.randn(5, 3)
    with torch.no_grad():
        torch.testing.assert_close(exported(rows), model(rows))
