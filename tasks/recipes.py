"""The recipes: the YAML files of ``configs/``, shipped inside the package so that an installed
``zoo`` runs them by name from any folder (``zoo fit --config lenet_digits``).

The repository's ``configs/`` is their one source: ``tasks/configs`` is a link to it, which the
wheel resolves into package data (``pyproject.toml``), so a source checkout and an installed wheel
read the same files from the same place. ``--config`` takes a path, as LightningCLI's does; a
value that is no file is looked up here, as ``detection/tinyssd_digitscenes``,
``tinyssd_digitscenes`` (a name found in one folder only) or ``configs/detection/...yaml`` (the
README's paths, from a folder without ``configs/``). ``zoo recipes`` lists them with the course
section each cites.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["RECIPES", "Recipe", "find_config", "list_recipes", "recipes_table", "resolve_configs"]

RECIPES = Path(__file__).parent / "configs"

# A --config value with one of these is YAML text, not a name (LightningCLI takes both).
_YAML_TEXT = re.compile(r":\s|:$|[{}\[\]\n]")


@dataclass(frozen=True)
class Recipe:
    """One YAML file of ``configs/``.

    Attributes:
        name: its path below ``configs/`` without ``.yaml`` (``classification/lenet_digits``).
        path: the file.
        command: what runs it: ``zoo fit`` (a recipe), ``zoo style``, or ``preset`` (trainer
            settings stacked after a recipe: ``--config RECIPE --config trainer/gpu_bf16``).
        section: the course section its header cites (``§7.6``), or ``""``.
        summary: the header's first sentence.
    """

    name: str
    path: Path
    command: str
    section: str
    summary: str


def _header(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def _summary(header: str) -> str:
    # The title before the first colon, without parentheses (the course column cites the
    # section); a title of a few words keeps what follows it up to the next comma.
    text = header
    while (shorter := re.sub(r"\s*\([^()]*\)", "", text)) != text:
        text = shorter
    title, *rest = re.split(r":\s|\.\s|\.$", text, maxsplit=1)
    if len(title.split()) < 5 and rest and ": " in text:
        title += ": " + re.split(r",\s|\.\s|:\s|\.$", text.split(": ", 1)[1], maxsplit=1)[0]
    return title.strip()


def _read(path: Path) -> Recipe:
    text = path.read_text()
    header = _header(text)
    keys = yaml.safe_load(text) or {}
    command = "zoo fit" if "model" in keys else "zoo style" if "content" in keys else "preset"
    cited = re.search(r"Sections? (\d+(?:\.\d+)*(?:-\d+(?:\.\d+)*)?)", header)
    return Recipe(
        name=path.relative_to(RECIPES).with_suffix("").as_posix(),
        path=path,
        command=command,
        section=f"§{cited.group(1)}" if cited else "",
        summary=_summary(header),
    )


def list_recipes(pattern: str = "*") -> list[Recipe]:
    """The installed recipes whose name (``detection/tinyssd_digitscenes``) or file name
    (``tinyssd_*``) matches the shell-style ``pattern``, by name."""
    paths = sorted(RECIPES.rglob("*.yaml"))
    return [
        _read(path)
        for path in paths
        if fnmatch.fnmatch(path.relative_to(RECIPES).with_suffix("").as_posix(), pattern)
        or fnmatch.fnmatch(path.stem, pattern)
    ]


def find_config(value: str) -> str:
    """The file a ``--config`` value names: the value itself when it is a file or YAML text,
    else the installed recipe of that name.

    Raises:
        ValueError: neither a file nor a recipe; the message lists the near names.
    """
    path = Path(value)
    if path.is_file() or _YAML_TEXT.search(value):
        return value
    name = value.removeprefix("./").removeprefix("configs/")
    name = name.removesuffix(".yaml").removesuffix(".yml")
    recipes = {
        p.relative_to(RECIPES).with_suffix("").as_posix(): p for p in RECIPES.rglob("*.yaml")
    }
    if not path.is_absolute():
        if name in recipes:
            return str(recipes[name])
        same_stem = sorted(n for n in recipes if n.rsplit("/", 1)[-1] == name)
        if len(same_stem) == 1:
            return str(recipes[same_stem[0]])
        if same_stem:
            raise ValueError(
                f"config {value}: {len(same_stem)} recipes have that name: "
                f"{', '.join(same_stem)}; give the folder too"
            )
    raise ValueError(_not_found(value, path, sorted(recipes)))


def _not_found(value: str, path: Path, recipes: list[str]) -> str:
    folder = path.parent
    if path.suffix in (".yaml", ".yml") and folder.is_dir() and str(folder) != ".":
        # A path into a folder that exists: the files it has (a typo in the file name).
        choices = sorted(p.name for p in folder.iterdir() if p.suffix in (".yaml", ".yml"))
        close = difflib.get_close_matches(path.name, choices, n=1)
        guess = f" Did you mean {folder / close[0]}?" if close else ""
        return f"config file {value} does not exist.{guess} {folder} has: " + (
            ", ".join(choices) or "no YAML files"
        )
    stems = {name.rsplit("/", 1)[-1]: name for name in recipes}
    close = difflib.get_close_matches(path.with_suffix("").name, list(stems), n=3)
    guess = f" Did you mean {' or '.join(stems[c] for c in close)}?" if close else ""
    return (
        f"config {value}: no such file, and no recipe of that name.{guess} `zoo recipes` "
        f"lists the {len(recipes)} recipes installed in {RECIPES}"
    )


def resolve_configs(argv: Sequence[str]) -> list[str]:
    """``argv`` with each ``--config`` / ``-c`` value made a path (:func:`find_config`)."""
    resolved = list(argv)
    for i, token in enumerate(resolved):
        if token in ("--config", "-c") and i + 1 < len(resolved):
            resolved[i + 1] = find_config(resolved[i + 1])
        elif token.startswith("--config="):
            resolved[i] = "--config=" + find_config(token.split("=", 1)[1])
    return resolved


def recipes_table(pattern: str = "*", markdown: bool = False) -> str:
    """The recipes as a text table (``zoo recipes``) or a Markdown one (the README's)."""
    recipes = list_recipes(pattern)
    if markdown:
        lines = ["| recipe | course | run with | what |", "| --- | --- | --- | --- |"]
        lines += [f"| `{r.name}` | {r.section} | `{r.command}` | {r.summary} |" for r in recipes]
        return "\n".join(lines)
    rows = [("recipe", "course", "run with", "what")]
    rows += [(r.name, r.section, r.command, r.summary) for r in recipes]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 4)
    lines.append(
        f"{len(recipes)} recipes in {RECIPES}: zoo fit --config NAME [--config trainer/PRESET]; "
        "--print_config shows every setting"
    )
    return "\n".join(lines)


def print_recipes(argv: list[str]) -> None:
    """``zoo recipes [PATTERN] [--markdown]``: the recipes that ``--config NAME`` runs."""
    parser = argparse.ArgumentParser(prog="zoo recipes", description=print_recipes.__doc__)
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style name filter")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    print(recipes_table(args.pattern, args.markdown))
