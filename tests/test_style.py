"""Neural style transfer (Section 14.12): the course's Gram matrix and total variation by hand,
the optimisation lowering its loss with the VGG frozen, the paper's layer names on torchvision's
VGG-19, ``zoo style`` with flags and configs, and its errors. Random VGG weights throughout:
torchvision's ImageNet weights cannot be downloaded here."""

from __future__ import annotations

import json
import urllib.error
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torchvision.models import WeightsEnum

import zoo
from tasks.cli import main
from tasks.style import IMAGENET_MEAN, StyleTransfer, gram_matrix, total_variation
from tests._image_files import photos, save_image
from tests._trainers import cpu_trainer

CONFIG = Path(__file__).parents[1] / "configs" / "style" / "chelsea_coffee.yaml"
SMALL = {"weights": None, "image_size": (32, 48)}
# zoo style on one CPU, random weights, a few steps at 32x48: what every command test adds.
QUICK = ["--weights", "none", "--accelerator", "cpu", "--steps", "2", "--image-size", "32", "48"]


@pytest.fixture(autouse=True)
def _quiet():
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*log_every_n_steps.*")
    warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")  # the frozen VGG


def test_gram_matrix_is_the_courses():
    """``gram``: X X^T over the flattened positions, divided by channels x positions."""
    features = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]]).reshape(1, 2, 1, 3)
    expected = torch.tensor([[14.0, -1.0], [-1.0, 2.0]]) / (2 * 3)
    torch.testing.assert_close(gram_matrix(features), expected[None])
    pair = torch.cat([features, 2 * features])  # one matrix per image of a batch
    torch.testing.assert_close(gram_matrix(pair), torch.stack([expected, 4 * expected]))


def test_total_variation_is_the_courses():
    """``tv_loss``: half the sum of the mean |vertical| and mean |horizontal| differences."""
    image = torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]).reshape(1, 1, 2, 3)
    vertical = (2 + 1 + 1) / 3
    horizontal = (1 + 2 + 0 + 0) / 4
    torch.testing.assert_close(total_variation(image), torch.tensor(0.5 * (vertical + horizontal)))
    assert total_variation(torch.ones(1, 3, 4, 5)) == 0


@pytest.mark.parametrize(
    "loss_weights",
    [{}, {"content_weight": 0.0, "tv_weight": 0.0}],
    ids=["course_weights", "style_only"],
)
def test_style_transfer_halves_its_loss_and_changes_only_the_image(tmp_path, loss_weights):
    """40 steps at 32x48 halve the total loss, and the style loss alone when it is the only term
    (with random weights the TV term dominates the course's sum: this shows the gradient reaching
    the image through the VGG's Gram matrices). The learning rate decays once per
    ``lr_decay_steps`` optimisation steps."""
    torch.manual_seed(0)
    task = StyleTransfer("skimage:chelsea", "skimage:coffee", steps=40, lr_decay_steps=10,
                         **SMALL, **loss_weights)  # fmt: skip
    assert [name for name, p in task.named_parameters() if p.requires_grad] == ["image"]
    vgg = {k: v.clone() for k, v in task.vgg.state_dict().items()}
    start = task.image.detach().clone()
    with torch.no_grad():
        before = task.losses()

    trainer = cpu_trainer(tmp_path, max_steps=40, enable_checkpointing=False)
    trainer.fit(task)
    with torch.no_grad():
        after = task.losses()

    print(f"total loss after/before 40 steps ({', '.join(loss_weights) or 'course'}): "
          f"{after['loss'] / before['loss']:.3f}")  # fmt: skip
    assert after["loss"] < 0.5 * before["loss"]
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.3 * 0.8**4)
    assert {f"train/{k}" for k in before} <= set(trainer.callback_metrics)
    assert all(torch.equal(v, vgg[k]) for k, v in task.vgg.state_dict().items())
    assert not task.vgg.training
    assert not torch.equal(task.image.detach(), start)
    image = task.synthesised_image()
    assert image.shape == (3, 32, 48) and 0 <= image.min() and image.max() <= 1


def test_layers_are_the_course_indices_of_torchvisions_vgg19(serve_torchvision):
    """With torchvision's weights (random ones, served offline), ``conv{b}_{r}`` is the output of
    torchvision's ``features[:i + 1]`` after its ReLU: style indices 0, 5, 10, 19, 28 and the
    course's content index 25 (conv4_4); the weights' mean and std standardise the images."""
    reference = torchvision.models.vgg19()
    calls = serve_torchvision(reference.state_dict())
    task = StyleTransfer("skimage:astronaut", "skimage:coffee", weights="torchvision",
                         image_size=(32, 48))  # fmt: skip
    assert len(calls) == 1
    torch.testing.assert_close(task.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    x = torch.randn(1, 3, 32, 48)
    indices = {"conv1_1": 0, "conv2_1": 5, "conv3_1": 10, "conv4_1": 19, "conv4_4": 25,
               "conv5_1": 28}  # fmt: skip
    ours = task.vgg(x, set(indices))
    with torch.no_grad():
        for name, index in indices.items():
            expected = torch.relu(reference.features[: index + 1](x))
            torch.testing.assert_close(ours[name], expected, msg=name)
    assert task.content_layers == ["conv4_4"]  # the course's default
    assert list(task.vgg.layers)[-1] is task.vgg.layers.conv5_1  # no deeper layer kept


def test_weights_from_a_zoo_vgg_checkpoint(tmp_path):
    """A ``.safetensors`` file as ``zoo export`` writes it: weights and the record's mean/std."""
    network = zoo.create_model("vgg19", num_classes=10, width_divisor=16)
    record = {"model": "vgg19", "model_kwargs": {"num_classes": 10, "width_divisor": 16},
              "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}  # fmt: skip
    path = tmp_path / "vgg19_small.safetensors"
    save_file(network.state_dict(), str(path), metadata={"zoo": json.dumps(record)})
    task = StyleTransfer("skimage:chelsea", "skimage:rocket", weights=str(path),
                         image_size=(32, 48))  # fmt: skip
    conv = task.vgg.layers.conv3_1[0]
    torch.testing.assert_close(conv.weight, network.features.block3[0][0].weight)
    assert conv.out_channels == 256 // 16
    torch.testing.assert_close(task.mean.flatten(), torch.full((3,), 0.5))
    pixels = torch.from_numpy(photos()[1].copy()).permute(2, 0, 1).float() / 255  # chelsea at 40x48
    standardised = (pixels.mean() - 0.5) / 0.25
    assert abs(float(task.content_image.mean()) - float(standardised)) < 0.05


def test_zoo_style_writes_the_image(tmp_path, capsys):
    """A JPEG file as content, a packaged photo as style: the PNG has the requested size, and the
    optimisation shows Lightning's progress bar."""
    content = save_image(tmp_path / "photos" / "cat.jpg", Image.fromarray(photos()[1]))
    out = tmp_path / "out" / "cat.png"
    main(["style", "--content", str(content), "--style", "matplotlib:grace_hopper",
          "--out", str(out), *QUICK])  # fmt: skip
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (48, 32) and image.mode == "RGB"
    printed = capsys.readouterr()
    assert f"wrote {out} (48x32, 2 steps)" in printed.out
    assert "Epoch 0: 100%" in printed.out and "train/loss=" in printed.out  # the progress bar


def test_zoo_style_config_and_flags_that_override_it(tmp_path, capsys):
    """Options from a YAML, flags after it winning; the shipped config parses and runs."""
    config = tmp_path / "style.yaml"
    config.write_text(
        "content: skimage:astronaut\nstyle: skimage:coffee\n"
        f"out: {tmp_path / 'from_config.png'}\nimage_size: [40, 56]\nsteps: 1\n"
        "weights: null\naccelerator: cpu\nstyle_layers: [conv1_1, conv2_1]\n"
    )
    main(["style", "--config", str(config)])
    with Image.open(tmp_path / "from_config.png") as image:
        assert image.size == (56, 40)
    main(["style", "--config", str(config), "--image-size", "32", "48",
          "--out", str(tmp_path / "flags.png")])  # fmt: skip
    with Image.open(tmp_path / "flags.png") as image:
        assert image.size == (48, 32)

    main(["style", "--config", str(CONFIG), *QUICK, "--out", str(tmp_path / "shipped.png")])
    assert (tmp_path / "shipped.png").is_file()
    with pytest.raises(SystemExit):
        main(["style", "--config", str(CONFIG), "--print_config"])
    printed = capsys.readouterr().out
    assert "content: skimage:chelsea" in printed and "weights: torchvision" in printed


def test_offline_without_torchvision_weights_says_how_to_get_them(monkeypatch, tmp_path):
    def no_network(self, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", no_network)
    with pytest.raises(SystemExit) as exit_info:
        main(["style", "--content", "skimage:chelsea", "--style", "skimage:coffee",
              "--out", str(tmp_path / "x.png"), "--weights", "torchvision"])  # fmt: skip
    message = str(exit_info.value)
    assert "Name or service not known" in message
    assert "zoo.create_model('vgg19', weights='torchvision')" in message
    assert "--weights PATH" in message
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"content": "skimage:nothing"},
            "unknown packaged photo 'skimage:nothing'.*skimage:chelsea",
        ),
        ({"style": "no/such/style.jpg"}, "no style image file at no/such/style.jpg"),
        ({"style_layers": ["conv1_1", "conv9_9"]}, "unknown layer 'conv9_9'.*conv5_4"),
        ({"content_layers": ["pool4"]}, "unknown layer 'pool4'.*conv1_1, conv1_2"),
        ({"backbone": "lenet"}, "'lenet' is not a zoo VGG.*vgg19"),
        ({"backbone": "resnet18"}, "'resnet18' is not a zoo VGG"),
        ({"image_size": (12, 48)}, "too small for conv5_1.*at least 16"),
    ],
    ids=["packaged_photo", "missing_file", "layer", "pool_layer", "lenet", "resnet", "image_size"],
)
def test_bad_arguments_name_the_value_and_the_fix(kwargs, message):
    arguments = {"content": "skimage:chelsea", "style": "skimage:coffee", **SMALL, **kwargs}
    with pytest.raises(ValueError, match=message):
        StyleTransfer(**arguments)


def test_zoo_style_errors_are_messages(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a JPEG")
    run = ["style", "--style", "skimage:coffee", *QUICK]
    with pytest.raises(SystemExit, match=f"cannot decode the content image {broken}"):
        main([*run, "--content", str(broken), "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match="extension '.txt'.*end the name in .png"):
        main([*run, "--content", "skimage:chelsea", "--out", str(tmp_path / "x.txt")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.jpg"]
