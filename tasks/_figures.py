"""Pictures for the logs: a figure becomes a PNG file next to the run's logs and an image in the
logger (TensorBoard, Weights & Biases), whatever logger the run has. Every task draws through here
(confusion matrices today; boxes and masks for detection and segmentation)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningModule
from matplotlib.figure import Figure
from PIL import Image

__all__ = ["confusion_matrix_figure", "log_png"]


def confusion_matrix_figure(matrix: torch.Tensor, class_names: Sequence[str] | None) -> Figure:
    """Rows are true classes, columns predicted ones; each row normalised to sum to 1.

    Counts are written in the cells up to 20 classes, names on the axes up to 60.
    """
    counts = matrix.detach().cpu().double()
    rates = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    k = len(counts)
    side = min(max(4.0, 0.45 * k + 2), 24.0)
    # Figure without pyplot: no global state, no GUI backend, safe in DataLoader-heavy runs.
    figure = Figure(figsize=(side, side), dpi=100, layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if k <= 60:
        ax.set_xticks(range(k), names, rotation=90)
        ax.set_yticks(range(k), names)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                dark = rates[i, j] > 0.5
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix ({int(counts.sum())} images)")
    return figure


def log_png(module: LightningModule, tag: str, figure: Figure) -> Path | None:
    """Save ``figure`` as ``<log_dir>/<tag>.png`` and add it to the logger; rank 0 only.

    Returns the PNG's path, or None when the run has no logger (nothing is written then).
    """
    trainer = module.trainer
    if trainer.logger is None or not trainer.is_global_zero:
        return None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    png = buffer.getvalue()
    log_dir = getattr(trainer.logger, "log_dir", None) or trainer.default_root_dir
    path = Path(log_dir) / f"{tag.replace('/', '_')}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    step = trainer.global_step
    for logger in trainer.loggers:
        experiment = logger.experiment
        if hasattr(experiment, "add_image"):  # TensorBoard
            experiment.add_image(tag, pixels, step, dataformats="HWC")
        elif hasattr(logger, "log_image"):  # Weights & Biases
            logger.log_image(key=tag, images=[pixels], step=step)
    return path
