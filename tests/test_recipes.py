"""Recipes by name (``zoo fit --config lenet_digits``), ``zoo recipes``, and the default data folder
``$ZOO_DATA``; tests/test_package.py runs the same from an installed wheel."""

from __future__ import annotations

from pathlib import Path

import pytest

import datamodules
import tasks.recipes
from tasks.cli import main
from tasks.recipes import find_config, list_recipes, recipes_table, resolve_configs

CONFIGS = Path(__file__).parents[1] / "configs"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """A folder without configs/, as an installed package's user has."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZOO_DATA", raising=False)


def test_the_recipes_are_the_configs_folder():
    """One copy: the package's recipes are configs/ itself, every file of it."""
    assert tasks.recipes.RECIPES.resolve() == CONFIGS.resolve()
    names = {r.name for r in list_recipes()}
    assert names == {
        p.relative_to(CONFIGS).with_suffix("").as_posix() for p in CONFIGS.rglob("*.yaml")
    }


def test_every_training_recipe_cites_the_course():
    recipes = list_recipes()
    assert {r.command for r in recipes} == {"zoo fit", "zoo style", "preset"}
    for recipe in recipes:
        if recipe.command != "preset":
            assert recipe.section.startswith("§"), recipe.name
        assert recipe.summary and "Section" not in recipe.summary, recipe.name
    lenet = next(r for r in recipes if r.name == "classification/lenet_digits")
    assert (lenet.section, lenet.command) == ("§7.6", "zoo fit")
    assert next(r for r in recipes if r.name == "trainer/ddp").command == "preset"


@pytest.mark.parametrize(
    "value",
    [
        "lenet_digits",
        "classification/lenet_digits",
        "classification/lenet_digits.yaml",
        "configs/classification/lenet_digits.yaml",  # the README's path, from another folder
    ],
)
def test_a_recipe_is_found_by_name(value):
    assert (
        Path(find_config(value)) == tasks.recipes.RECIPES / "classification" / "lenet_digits.yaml"
    )


def test_a_file_or_yaml_text_is_left_alone(tmp_path):
    mine = tmp_path / "lenet_digits.yaml"  # a file of the recipe's name wins over the recipe
    mine.write_text("trainer:\n  max_epochs: 1\n")
    assert find_config("lenet_digits.yaml") == "lenet_digits.yaml"
    assert find_config("trainer: {max_epochs: 1}") == "trainer: {max_epochs: 1}"
    assert resolve_configs(["fit", "--config=cpu", "-c", "smoke", "--trainer.max_epochs", "2"]) == [
        "fit",
        f"--config={tasks.recipes.RECIPES / 'trainer' / 'cpu.yaml'}",
        "-c",
        str(tasks.recipes.RECIPES / "trainer" / "smoke.yaml"),
        "--trainer.max_epochs",
        "2",
    ]


def test_a_name_in_two_folders_asks_for_the_folder(tmp_path, monkeypatch):
    for folder in ("detection", "segmentation"):
        (tmp_path / "recipes" / folder).mkdir(parents=True)
        (tmp_path / "recipes" / folder / "digits.yaml").write_text("model: {}\n")
    monkeypatch.setattr(tasks.recipes, "RECIPES", tmp_path / "recipes")
    with pytest.raises(ValueError, match="2 recipes have that name: detection/digits, "):
        find_config("digits")
    assert find_config("segmentation/digits").endswith("segmentation/digits.yaml")


def test_an_unknown_recipe_names_the_near_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "lenet_digit"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "config lenet_digit: no such file, and no recipe of that name." in error
    assert "Did you mean classification/lenet_digits" in error and "`zoo recipes` lists" in error


def test_zoo_recipes_lists_them_with_the_course(capsys):
    main(["recipes", "*digitscenes"])
    out = capsys.readouterr().out
    assert "detection/tinyssd_digitscenes" in out and "§14.7" in out
    assert "classification/" not in out
    assert recipes_table(markdown=True).startswith("| recipe | course | run with | what |")


def test_fit_and_style_take_recipe_names(tmp_path):
    """``zoo fit --config lenet_digits`` trains from a folder without configs/; ``zoo style``
    reads its config by name too."""
    main(["fit", "--config", "lenet_digits", "--config", "trainer/smoke"])
    out = tmp_path / "style.png"
    style = ["--weights", "none", "--steps", "1", "--image-size", "32", "48", "--out", str(out)]
    main(["style", "--config", "style/chelsea_coffee", *style, "--accelerator", "cpu"])
    assert out.is_file()
    with pytest.raises(SystemExit, match="zoo style: config style/chelsea_cofee: no such file"):
        main(["style", "--config", "style/chelsea_cofee", *style])


def test_zoo_data_is_the_default_data_folder(tmp_path, monkeypatch):
    assert datamodules.data_root("coco") == Path("data/coco")
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "shared"))
    assert datamodules.DigitScenes().scenes_root == tmp_path / "shared" / "digit_scenes"
    assert datamodules.FashionMNIST().data_dir == tmp_path / "shared"
    assert datamodules.DigitScenes(root="here").scenes_root == Path("here")  # root still wins
    with pytest.raises(FileNotFoundError, match=f"COCO root {tmp_path}/shared/coco is not a"):
        datamodules.COCO()
    with pytest.raises(FileNotFoundError, match=f"VOC root {tmp_path}/shared/VOCdevkit/VOC2012"):
        datamodules.VOCDetection()
    with pytest.raises(FileNotFoundError, match=f"root {tmp_path}/shared/images is not a folder"):
        datamodules.ImageFolder()
