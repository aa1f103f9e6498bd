"""The course as notebooks: each runs here, every cell without error, and draws at least one
figure; the committed files are executed ones, figures kept, and hold no library code."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
# The course, in its order (tests/test_readme.py checks that the README lists them).
COURSE = [
    "quickstart",
    "fundamentals",
    "classic_cnns",
    "finetuning",
    "detection",
    "segmentation_style",
]


def _images(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def test_the_course_is_all_there():
    assert [p.stem for p in NOTEBOOKS] == sorted(COURSE)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_executed_with_its_figures(path):
    """What a reader opens on GitHub: every code cell ran, in order, and the figures are kept;
    models and training loops live in the package, not here (STYLE rule 9)."""
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert _images(notebook) >= 1
    source = "\n".join(cell.source for cell in code)
    assert not re.search(r"^\s*class \w+", source, re.M), "a class belongs in the package"
    assert "training_step" not in source and ".backward(" not in source


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_draws(path, tmp_path, monkeypatch):
    """Each notebook, run in a fresh kernel on ``ZOO_NOTEBOOK_EPOCHS`` (1 under ``make test``)
    from an empty folder: what it writes (runs/, data/) stays in tmp_path."""
    monkeypatch.setenv("ZOO_NOTEBOOK_EPOCHS", os.environ.get("ZOO_NOTEBOOK_EPOCHS", "1"))
    monkeypatch.delenv("ZOO_DATA", raising=False)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel is a process of its own
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError with the cell and its traceback
    assert _images(notebook) >= 1
