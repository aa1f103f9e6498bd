"""Pictures for the logs: a figure becomes a PNG file next to the run's logs and an image in the
logger (TensorBoard, Weights & Biases), whatever logger the run has. Every task draws through here
(sample predictions, confusion matrices, detections, segmentation masks)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningModule
from matplotlib.figure import Figure
from PIL import Image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from datamodules.scenes import voc_palette

__all__ = [
    "confusion_matrix_figure",
    "detections_figure",
    "log_png",
    "predictions_figure",
    "segmentation_figure",
]


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


def _to_uint8(image: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None):
    """A normalised ``[C, H, W]`` model input back to ``[3, H, W]`` uint8 for drawing."""
    image = image.detach().float().cpu()
    if mean is not None and std is not None:
        image = image * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def predictions_figure(
    images: torch.Tensor | Sequence[torch.Tensor],
    predicted: torch.Tensor | Sequence[int],
    labels: torch.Tensor | Sequence[int],
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Figure:
    """Images in a square-ish grid, each titled "predicted (true)" in green when they agree and
    red when not, as the course shows Fashion-MNIST predictions (Section 4.4.5). Classes are
    named ``class_names[i]`` when known, else by their index; images are de-normalised with
    ``mean`` and ``std`` when given."""

    def name(label: int) -> str:
        return (
            class_names[label]
            if class_names is not None and label < len(class_names)
            else str(label)
        )

    predicted, labels = [int(c) for c in predicted], [int(c) for c in labels]
    pixels = [_to_uint8(image, mean, std).permute(1, 2, 0).numpy() for image in images]
    count = len(pixels)
    columns = max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    # One image of the whole grid in one axes: an axes per image cost ~8 ms each to build
    # (0.13 s for 16 images, paid every validation epoch: a third of a LeNet epoch on digits).
    # Cells in pixels of the largest image: a gap around it and a band above it for the title.
    height = max((p.shape[0] for p in pixels), default=1)
    width = max((p.shape[1] for p in pixels), default=1)
    gap, band = max(1, round(height / 28)), max(1, round(height / 6))
    cell_w, cell_h = width + 2 * gap, height + band + 2 * gap
    grid = np.full((rows * cell_h, columns * cell_w, 3), 255, dtype=np.uint8)
    inches = 1.5 / cell_w  # 1.5 inches a cell across
    figure = Figure(figsize=(columns * cell_w * inches, rows * cell_h * inches), dpi=100)
    ax = figure.add_axes((0, 0, 1, 1))
    for i, image in enumerate(pixels):
        row, column = divmod(i, columns)
        top, left = row * cell_h + band + gap, column * cell_w + gap
        grid[top : top + image.shape[0], left : left + image.shape[1]] = image
        right = predicted[i] == labels[i]
        figure.text(
            (column + 0.5) / columns,
            1 - (row * cell_h + gap) / grid.shape[0],
            f"{name(predicted[i])} ({name(labels[i])})"[:26],
            ha="center",
            va="top",
            fontsize=8,
            color="green" if right else "red",
        )
    # Nearest-neighbour: 28x28 digits stay crisp instead of blurring when enlarged.
    ax.imshow(grid, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    return figure


def detections_figure(
    images: Sequence[torch.Tensor],
    predictions: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[dict[str, torch.Tensor]],
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    min_score: float = 0.5,
    min_side: int = 256,
) -> Figure:
    """Images with their true boxes (green) and predicted boxes of score >= ``min_score`` (red,
    with class and score), side by side; small images are enlarged first so labels stay legible.
    Labels ``i`` are named ``class_names[i - 1]`` (0 is background)."""

    def name(label: int) -> str:
        known = class_names is not None and 0 < label <= len(class_names)
        return class_names[label - 1] if known else str(label)

    count = len(images)
    figure = Figure(figsize=(3.2 * count, 3.4), dpi=100, layout="constrained")
    for i, (image, pred, target) in enumerate(zip(images, predictions, targets, strict=True)):
        pixels = _to_uint8(image, mean, std)
        zoom = max(1, -(-min_side // max(pixels.shape[-2:])))
        pixels = pixels.repeat_interleave(zoom, -2).repeat_interleave(zoom, -1)
        keep = pred["scores"].detach().cpu() >= min_score
        boxes = pred["boxes"].detach().cpu()[keep] * zoom
        labels = [
            f"{name(int(c))} {s:.2f}"
            for c, s in zip(
                pred["labels"][keep].tolist(), pred["scores"][keep].tolist(), strict=True
            )
        ]
        drawn, true_boxes = pixels, target["boxes"].detach().cpu() * zoom
        if len(true_boxes):  # torchvision warns on an empty set
            drawn = draw_bounding_boxes(drawn, true_boxes, colors="lime")
        if len(boxes):
            drawn = draw_bounding_boxes(drawn, boxes, labels, colors="red")
        ax = figure.add_subplot(1, count, i + 1)
        ax.imshow(drawn.permute(1, 2, 0).numpy())
        ax.set_axis_off()
        ax.set_title(f"{int(keep.sum())} found, {len(target['boxes'])} true", fontsize=9)
    return figure


def segmentation_figure(
    images: Sequence[torch.Tensor],
    predictions: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    ignore_index: int = 255,
    min_side: int = 256,
) -> Figure:
    """One row per image: the image, its true mask and the predicted mask drawn over it in VOC's
    colours (``torchvision.utils.draw_segmentation_masks``); ignored pixels stay undrawn. The
    classes present are named in the titles."""
    count = len(images)
    palette = voc_palette()  # the colours VOC's own mask files use
    colours = [tuple(palette[3 * c : 3 * c + 3]) for c in range(256)]
    figure = Figure(figsize=(9.6, 3.3 * count), dpi=100, layout="constrained")
    for row, (image, pred, target) in enumerate(zip(images, predictions, targets, strict=True)):
        pixels = _to_uint8(image, mean, std)
        zoom = max(1, -(-min_side // max(pixels.shape[-2:])))
        pixels = pixels.repeat_interleave(zoom, -2).repeat_interleave(zoom, -1)
        panels = [("image", pixels)]
        for title, mask in (("true", target), ("predicted", pred)):
            mask = mask.detach().cpu().repeat_interleave(zoom, -2).repeat_interleave(zoom, -1)
            present = [c for c in mask.unique().tolist() if c != ignore_index and c > 0]
            drawn = pixels
            if present:
                layers = torch.stack([mask == c for c in present])
                drawn = draw_segmentation_masks(
                    pixels, layers, alpha=0.6, colors=[colours[c % 256] for c in present]
                )
            names = [
                class_names[c] if class_names and c < len(class_names) else str(c) for c in present
            ]
            panels.append((f"{title}: {', '.join(names) or 'background'}", drawn))
        for column, (title, panel) in enumerate(panels):
            ax = figure.add_subplot(count, 3, 3 * row + column + 1)
            ax.imshow(panel.permute(1, 2, 0).numpy())
            ax.set_axis_off()
            ax.set_title(title[:60], fontsize=9)
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
