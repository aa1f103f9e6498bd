"""The ``zoo`` command: every recipe validates, ``fit`` then ``test`` from the checkpoint on tiny
real-format data, ``zoo models``, ``zoo kfold`` and the quickstart recipe end to end."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

import zoo
from tasks.cli import ZooCLI, main, run_kfold
from tests._detection_files import write_coco, write_voc
from tests._image_files import write_ilsvrc, write_photo_classes
from tests._segmentation_files import write_voc_segmentation

CONFIGS = Path(__file__).parents[1] / "configs"
# zoo fit recipes: not the trainer presets, nor the `zoo style` configs (tests/test_style.py).
RECIPES = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name not in ("trainer", "style"))
PRESETS = sorted((CONFIGS / "trainer").glob("*.yaml"))
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Recipes write under runs/ relative to the working directory: keep that in tmp_path."""
    monkeypatch.chdir(tmp_path)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*log_every_n_steps.*")


def test_recipes_cover_the_course():
    names = {p.stem for p in RECIPES}
    for model in ("softmax_regression", "mlp", "mlp_dropout", "lenet", "lenet_bn", "alexnet",
                  "vgg11", "nin", "googlenet", "resnet18"):  # fmt: skip
        assert f"{model}_fashion_mnist" in names
    assert {"lenet_digits", "linear_regression_synthetic"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_validates(recipe, capsys):
    """``--print_config`` parses and type-checks the whole recipe against the signatures."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(recipe), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: tasks." in printed and "class_path: datamodules." in printed


@pytest.fixture(scope="module")
def finetune_inputs(tmp_path_factory) -> Path:
    """What the fine-tuning recipes read, offline: a folder of real photos (4 classes), a tiny
    ILSVRC tree, and a torchvision-layout ResNet-18 state dict standing in for its weights."""
    root = tmp_path_factory.mktemp("finetune")
    write_photo_classes(root / "images")
    write_ilsvrc(root / "imagenet", "flat")
    for split in ("train2017", "val2017"):
        write_coco(root / "coco", split, bad=False)
    write_voc(root)
    write_voc_segmentation(root / "segmentation")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), root / "resnet18.pth")
    return root


def _offline(recipe: Path, inputs: Path) -> list[str]:
    """Overrides that point a recipe for downloaded data (fine-tuning, COCO, VOC) at the tiny
    trees of ``finetune_inputs`` (none for the others)."""
    if recipe.stem.endswith("_coco"):
        return ["--data.root", str(inputs / "coco")]
    if recipe.stem.endswith("_voc") and recipe.parent.name == "segmentation":
        return ["--data.root", str(inputs / "segmentation" / "VOCdevkit" / "VOC2012")]
    if recipe.stem.endswith("_voc"):
        return ["--data.root", str(inputs / "VOCdevkit" / "VOC2012"), "--data.classes", "found"]
    if recipe.parent.name != "finetune":
        return []
    data = inputs / ("imagenet" if "imagenette" in recipe.stem else "images")
    return ["--data.root", str(data), "--model.weights", str(inputs / "resnet18.pth")]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_instantiates(recipe, finetune_inputs, serve_torchvision):
    """Builds the model, data module and trainer (no data is read), links included; recipes
    that start from torchvision's backbones get random weights of the same architecture."""
    serve_torchvision()
    args = ["--config", str(recipe), "--trainer.logger=false", *_offline(recipe, finetune_inputs)]
    cli = ZooCLI(args=args, run=False)
    if hasattr(cli.datamodule, "num_classes"):
        assert cli.model.hparams.num_classes == cli.datamodule.num_classes
        assert cli.model.hparams.in_channels == cli.datamodule.in_channels
        assert cli.model.hparams.class_names == list(cli.datamodule.classes)
    checkpoint = cli.trainer.checkpoint_callback
    expected = Path(cli.trainer.default_root_dir, "checkpoints").resolve()
    # Detectors have no validation loss (torchvision's convention): their recipes keep the best mAP;
    # segmenters keep the best mIoU.
    monitor = {"detection": ("val/map", "val/map_50"), "segmentation": ("val/miou",)}.get(
        recipe.parent.name, ("val/loss",)
    )
    assert Path(checkpoint.dirpath) == expected and checkpoint.monitor in monitor


def _printed_config(capsys, *configs: Path) -> dict:
    args = ["fit", *(a for c in configs for a in ("--config", str(c))), "--print_config"]
    with pytest.raises(SystemExit):
        main(args)
    return yaml.safe_load(capsys.readouterr().out)


def _entries(tree: dict, prefix: str = "") -> dict[str, object]:
    """Flattened ``a.b.c: value`` entries of a config (lists of loggers as they are)."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and "class_path" not in value:
            flat |= _entries(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_trainer_presets_stack_on_a_recipe(preset, capsys):
    """Every preset parses after a recipe, sets what it says, and leaves the recipe's own
    settings (model, data, epochs) as they were."""
    recipe = CONFIGS / "classification" / "resnet18_fashion_mnist.yaml"
    alone = _printed_config(capsys, recipe)
    stacked = _printed_config(capsys, recipe, preset)
    settings = _entries(yaml.safe_load(preset.read_text()))
    for key, value in settings.items():
        section, name = key.split(".", 1)
        if name.endswith("+"):  # logger+: appended to the default TensorBoard logger
            loggers = stacked[section][name[:-1]]
            assert [c["class_path"] for c in loggers] == [
                "lightning.pytorch.loggers.TensorBoardLogger",
                *(c["class_path"] for c in value),
            ]
        else:
            assert _entries(stacked)[key] == value, key
    for key in ("model", "data", "seed_everything"):
        assert stacked[key] == alone[key]
    assert stacked["trainer"]["max_epochs"] == alone["trainer"]["max_epochs"]


def test_presets_compose_in_order(capsys):
    """Precision from one preset, devices and strategy from the next, switches from a third;
    the logger presets append to each other."""
    trainer = CONFIGS / "trainer"
    recipe = CONFIGS / "segmentation" / "fcn_digitscenes.yaml"
    presets = ("gpu_bf16", "ddp", "channels_last", "compile", "csv", "wandb")
    config = _printed_config(capsys, recipe, *(trainer / f"{p}.yaml" for p in presets))
    assert config["trainer"]["precision"] == "bf16-mixed"
    assert (config["trainer"]["devices"], config["trainer"]["strategy"]) == (-1, "ddp")
    assert config["speedup"]["channels_last"] and config["speedup"]["compile"]
    assert [c["class_path"].rsplit(".", 1)[1] for c in config["trainer"]["logger"]] == [
        "TensorBoardLogger",
        "CSVLogger",
        "WandbLogger",
    ]
    assert config["checkpoint"]["save_last"] and config["guard"]["enabled"]


def test_fit_then_test_from_the_checkpoint(fashion_dir, capsys):
    recipe = str(CONFIGS / "classification" / "lenet_fashion_mnist.yaml")
    data = ["--data.init_args.data_dir", str(fashion_dir), "--data.init_args.batch_size", "16"]
    main(["fit", "--config", recipe, *data, *QUIET, "--trainer.max_epochs=2"])
    checkpoint = Path("runs/lenet_fashion_mnist/checkpoints/best.ckpt")
    assert checkpoint.is_file()
    assert list(Path("runs/lenet_fashion_mnist/lightning_logs").glob("version_0/events.out.*"))
    assert zoo.load(checkpoint).pretrained_cfg.class_names[0] == "T-shirt/top"
    capsys.readouterr()
    main(["test", "--config", recipe, *data, *QUIET, "--ckpt_path", str(checkpoint)])
    assert re.search(r"test/acc\s+\d\.\d+", capsys.readouterr().out)


def test_finetune_recipe_on_a_folder_of_images(finetune_inputs):
    """``zoo fit --config configs/finetune/resnet18_imagefolder.yaml --data.root DIR``, with a
    local weights file for torchvision's (the suite is offline), end to end."""
    recipe = CONFIGS / "finetune" / "resnet18_imagefolder.yaml"
    small = ["--data.image_size=32", "--data.resize_size=36", "--data.batch_size=8"]
    quick = ["--data.num_workers=0", "--data.val_fraction=0.25", "--trainer.max_epochs=1"]
    main(
        ["fit", "--config", str(recipe), *_offline(recipe, finetune_inputs), *QUIET, *small, *quick]
    )
    checkpoint = Path("runs/resnet18_imagefolder/checkpoints/best.ckpt")
    model = zoo.load(checkpoint)
    cfg = model.pretrained_cfg
    assert cfg.class_names == ["astronaut", "chelsea", "coffee", "hopper"]
    assert (cfg.image_size, cfg.resize_size) == (32, 36)
    assert cfg.mean == pytest.approx([0.485, 0.456, 0.406])
    assert torch.load(checkpoint, weights_only=True)["hyper_parameters"]["weights"] is None
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 4)


def test_bad_config_value_names_the_key(capsys):
    recipe = str(CONFIGS / "classification" / "lenet_digits.yaml")
    with pytest.raises(SystemExit):
        main(["fit", "--config", recipe, "--data.init_args.batch_size", "many"])
    assert "batch_size" in capsys.readouterr().err


def test_zoo_models_prints_the_registry(capsys):
    main(["models"])
    out = capsys.readouterr().out
    assert f"{len(zoo.list_models())} models" in out
    assert re.search(r"resnet18\s+classification\s+resnet\s+3x224x224\s+11,689,512\s+3.63 G", out)
    assert re.search(r"tinyssd\s+detection\s+tinyssd\s+3x256x256\s+1,010,376\s+-", out)
    main(["models", "vgg*", "--task", "classification"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 8 + 1 and lines[-1] == "8 models"


def test_kfold_reports_mean_and_std(capsys):
    recipe = str(CONFIGS / "classification" / "lenet_digits.yaml")
    args = [
        "kfold", "--config", recipe, *QUIET, "--data.init_args.num_folds=3",
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.logger=false",
    ]  # fmt: skip
    scores = run_kfold(args[1:])
    assert len(scores) == 3 and all(0 <= s <= 1 for s in scores)
    out = capsys.readouterr().out
    assert "3-fold val/acc" in out and re.search(r"val/acc: mean 0\.\d{4} std 0\.\d{4}", out)
    assert sorted(p.name for p in Path("runs/lenet_digits/checkpoints").iterdir()) == [
        "fold0", "fold1", "fold2"
    ]  # fmt: skip


def test_kfold_needs_folds():
    recipe = str(CONFIGS / "classification" / "lenet_digits.yaml")
    with pytest.raises(SystemExit, match="num_folds >= 2"):
        main(["kfold", "--config", recipe, *QUIET])


def test_quickstart_recipe_learns(capsys):
    """The ``make demo`` recipe, shortened to 5 epochs: already well above chance."""
    recipe = str(CONFIGS / "classification" / "lenet_digits.yaml")
    main(["fit", "--config", recipe, *QUIET, "--trainer.max_epochs=5"])
    capsys.readouterr()
    main(
        [
            "test",
            "--config",
            recipe,
            *QUIET,
            "--ckpt_path",
            "runs/lenet_digits/checkpoints/best.ckpt",
        ]
    )
    accuracy = float(re.search(r"test/acc\s+(\d\.\d+)", capsys.readouterr().out).group(1))
    assert accuracy > 0.9
    checkpoint = torch.load("runs/lenet_digits/checkpoints/best.ckpt", weights_only=True)
    assert checkpoint["zoo"]["model"] == "lenet"


def test_detection_recipe_fit_validate_predict():
    """``zoo fit``, ``zoo validate`` and ``zoo predict`` with the DigitScenes recipe, as the README
    runs them (tiny scenes, one epoch): a checkpoint, mAP and a COCO results file."""
    recipe = str(CONFIGS / "detection" / "tinyssd_digitscenes.yaml")
    data = ["--data.num_train=16", "--data.num_val=8", "--data.batch_size=8", "--data.root=scenes"]
    main(["fit", "--config", recipe, *data, *QUIET, "--trainer.max_epochs=1"])
    checkpoint = Path("runs/tinyssd_digitscenes/checkpoints/best.ckpt")
    assert checkpoint.is_file() and Path("scenes/coco/annotations/instances_val.json").is_file()
    assert zoo.load(checkpoint).pretrained_cfg.class_names == [str(d) for d in range(10)]
    main(["validate", "--config", recipe, *data, *QUIET, "--ckpt_path", str(checkpoint)])
    main(["predict", "--config", recipe, *data, *QUIET, "--ckpt_path", str(checkpoint)])
    results = json.loads(Path("runs/tinyssd_digitscenes/predictions.json").read_text())
    assert {r["image_id"] for r in results} <= set(range(1, 9))


def test_zoo_scenes_writes_both_trees(capsys):
    main(["scenes", "--out", "trees", "--num-train", "4", "--num-val", "2"])
    assert len(list(Path("trees/coco/train").glob("*.jpg"))) == 4
    assert Path("trees/VOCdevkit/VOC2012/ImageSets/Main/val.txt").read_text().split() == [
        "val_000001", "val_000002",
    ]  # fmt: skip
    assert "wrote trees/coco" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="num_train"):  # other arguments: refused, named
        main(["scenes", "--out", "trees", "--num-train", "5", "--num-val", "2"])
