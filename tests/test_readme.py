"""The README is what the package does: its tables are the registry's and the recipes' (STYLE
rule 2: regenerate them with ``zoo models --markdown`` and ``zoo recipes --markdown``), its
blocks tagged ``test`` run, and each message of its troubleshooting section is the one the
command shown prints."""

from __future__ import annotations

import collections
import re
import shlex
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from tasks.cli import main, models_table
from tasks.recipes import recipes_table
from tests._image_files import write_photo_classes

README = Path(__file__).parents[1] / "README.md"
NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
# ```lang tag``` blocks: GitHub highlights by the first word and ignores the rest.
BLOCK = re.compile(r"^```(\w+)(?: (\w+))?\n(.*?)^```\n", re.M | re.S)


def _generated(tag: str) -> str:
    text = README.read_text()
    begin = text.index(f"<!-- {tag}:begin")
    return text[text.index("\n", begin) + 1 : text.index(f"<!-- {tag}:end -->")].strip()


def _blocks(tag: str) -> list[tuple[str, str, str | None]]:
    """``(language, code, the text block right after it)`` of the blocks tagged ``tag``."""
    found = list(BLOCK.finditer(README.read_text()))
    return [
        (block[1], block[3], after[3] if after and after[1] == "text" else None)
        for block, after in zip(found, [*found[1:], None], strict=True)
        if block[2] == tag
    ]


def test_readme_model_table_is_the_registry():
    assert _generated("models") == models_table(markdown=True), "zoo models --markdown"


def test_readme_recipe_table_is_the_recipes():
    assert _generated("recipes") == recipes_table(markdown=True), "zoo recipes --markdown"


def test_readme_starts_with_the_two_commands():
    head = README.read_text().split("##")[0]
    assert "make demo" in head and "make test" in head


def test_readme_lists_every_notebook():
    text = README.read_text()
    for notebook in NOTEBOOKS.glob("*.ipynb"):
        assert f"`{notebook.name}`" in text


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """An empty working folder, as after ``pip install``; no ``$ZOO_DATA``; the files the
    README's blocks open: a digit photo, a folder of photos with a broken one, and a
    checkpoint holding pickled code."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZOO_DATA", raising=False)
    digit = load_digits().images[0] / 16 * 255
    Image.fromarray(digit.astype(np.uint8)).resize((28, 28)).save("digit.png")
    write_photo_classes(tmp_path / "photos")
    (tmp_path / "photos" / "cat").mkdir()
    (tmp_path / "photos" / "cat" / "broken.jpg").write_bytes(b"not a JPEG")
    torch.save({"a": collections.OrderedDict(x=1), "f": print}, "downloaded.ckpt")
    return tmp_path


def _zoo(line: str, quick: bool) -> None:
    """One ``zoo ...`` line of a block; with ``quick`` a fit trains one epoch."""
    args = shlex.split(line, comments=True)[1:]
    if quick and args[0] == "fit" and "--print_config" not in args:
        args += ["--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"]
    try:
        main(args)
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise


@pytest.mark.slow
def test_readme_blocks_tagged_test_run(in_tmp):
    """The short blocks a reader copies first, in the README's order (the shell blocks train
    LeNet, the Python ones load it); each ``zoo fit`` trains one epoch here."""
    blocks = _blocks("test")
    assert {language for language, _, _ in blocks} == {"bash", "python"}
    for language, code, _ in blocks:
        if language == "python":
            exec(compile(code, "README.md", "exec"), {})
            continue
        for line in code.splitlines():
            if line.startswith("zoo "):
                _zoo(line, quick=True)
    assert (in_tmp / "runs" / "lenet_digits" / "checkpoints" / "best.ckpt").is_file()


def _pattern(message: str) -> re.Pattern:
    """The README's message as a pattern: ``...`` stands for anything, spacing is free."""
    pieces = [re.escape(" ".join(piece.split())) for piece in message.strip().split("...")]
    return re.compile(".*?".join(pieces), re.S)


ERRORS = _blocks("error")


@pytest.mark.parametrize(
    "language, code, message",
    ERRORS,
    ids=[code.strip().splitlines()[-1][:48] for _, code, _ in ERRORS],
)
def test_troubleshooting_messages_are_the_real_ones(
    in_tmp, monkeypatch, capsys, language, code, message
):
    """Each troubleshooting command, run offline in an empty folder, prints the message below it."""
    assert message, "a troubleshooting block is followed by the ```text it prints"
    monkeypatch.setenv("TORCH_HOME", str(in_tmp / "torch"))  # an empty cache, and no network:

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    if language == "python":
        with pytest.raises(Exception) as raised:
            exec(compile(code, "README.md", "exec"), {})
        printed = f"{raised.type.__name__}: {raised.value}"
    else:
        (line,) = [line for line in code.splitlines() if line.startswith("zoo ")]
        with pytest.raises(SystemExit) as stop:
            _zoo(line, quick=False)
        printed = f"{stop.value.code}\n{capsys.readouterr().err}"
    assert _pattern(message).search(" ".join(printed.split())), printed
