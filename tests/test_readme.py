"""The README's model table is the registry's (STYLE rule 2): regenerate it with
``zoo models --markdown`` when a model is added."""

from __future__ import annotations

from pathlib import Path

from tasks.cli import models_table

README = Path(__file__).parents[1] / "README.md"


def test_readme_model_table_is_the_registry():
    text = README.read_text()
    begin = text.index("<!-- models:begin")
    table = text[text.index("\n", begin) + 1 : text.index("<!-- models:end -->")].strip()
    assert table == models_table(markdown=True), "run `zoo models --markdown` into the README"


def test_readme_starts_with_the_two_commands():
    head = README.read_text().split("##")[0]
    assert "make demo" in head and "make test" in head
