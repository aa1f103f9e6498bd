"""The package as a user installs it: a wheel built from this checkout, installed into a fresh
virtual environment (``--no-deps``; torch and the rest come from the suite's site-packages, put
on its path without their ``.pth`` files, so the suite's editable install stays out), then
``zoo`` run from an empty folder: recipes by name, data under ``$ZOO_DATA``."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
# What the wheel is built from: everything pyproject.toml reads (tasks/configs links to configs/).
SOURCES = ("pyproject.toml", "README.md", "zoo", "datamodules", "tasks", "configs")


def _run(*command: str | Path, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{' '.join(map(str, command))}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """(the fresh environment's bin folder, the wheel, the environment variables)."""
    work = tmp_path_factory.mktemp("package")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ZOO_DATA")}
    if os.environ.get("PYTEST_XDIST_WORKER"):
        env["OMP_NUM_THREADS"] = "1"  # (the other worker has the other core)
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    python = sys.executable
    # No build isolation: setuptools is in the suite's environment, and nothing is downloaded.
    _run(python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", work / "dist",
         source, cwd=work, env=env)  # fmt: skip
    (wheel,) = (work / "dist").glob("lightning_zoo-*.whl")
    _run(python, "-m", "venv", "--without-pip", work / "venv", cwd=work, env=env)
    fresh = work / "venv" / "bin" / "python"
    purelib = _run(fresh, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                   cwd=work, env=env).strip()  # fmt: skip
    Path(purelib, "suite.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run(python, "-m", "pip", "--python", fresh, "install", "--no-deps", "-q", wheel,
         cwd=work, env=env)  # fmt: skip
    return fresh.parent, wheel, env


def test_the_wheel_holds_every_recipe(installed):
    _, wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = {f"tasks/configs/{p.relative_to(ROOT / 'configs').as_posix()}"
               for p in (ROOT / "configs").rglob("*.yaml")}  # fmt: skip
    assert recipes and recipes <= names
    assert not any(name.startswith(("configs/", "tests/", "notebooks/")) for name in names)


@pytest.mark.slow
def test_an_installed_zoo_runs_recipes_by_name_from_an_empty_folder(installed, tmp_path):
    bin_dir, _, env = installed
    empty = tmp_path / "empty"
    empty.mkdir()
    listing = _run(bin_dir / "zoo", "recipes", cwd=empty, env=env)
    count = len(list((ROOT / "configs").rglob("*.yaml")))
    assert f"{count} recipes in {bin_dir.parent}/lib/" in listing  # the wheel's, not this tree's
    assert "classification/lenet_digits" in listing and "§7.6" in listing

    # The README's quickstart by name (one epoch): its best checkpoint lands in the folder.
    quick = ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    _run(bin_dir / "zoo", "fit", "--config", "lenet_digits", *quick, cwd=empty, env=env)
    assert (empty / "runs" / "lenet_digits" / "checkpoints" / "best.ckpt").is_file()

    # A recipe with its folder and a preset by name; DigitScenes written under $ZOO_DATA.
    shared = tmp_path / "shared-data"
    scenes = ["--data.init_args.num_train", "16", "--data.init_args.num_val", "8"]
    _run(bin_dir / "zoo", "fit", "--config", "detection/tinyssd_digitscenes", "--config", "smoke",
         *scenes, cwd=empty, env=env | {"ZOO_DATA": str(shared)})  # fmt: skip
    assert (shared / "digit_scenes" / "coco" / "annotations" / "instances_val.json").is_file()
    assert not (empty / "data").exists()
