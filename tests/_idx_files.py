"""Tiny MNIST-format datasets written on the fly: the real four IDX files, random pixels."""

from __future__ import annotations

from pathlib import Path

import torch

from datamodules import write_idx

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_mnist_files(
    directory: str | Path,
    num_train: int = 50,
    num_test: int = 20,
    gz: bool = True,
    seed: int = 0,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Write ``train-*``/``t10k-*`` IDX files (gzipped if ``gz``) into ``directory``.

    Labels cycle through 0-9, so every class appears in both splits as evenly as the
    sizes allow. Returns ``{"train": (images, labels), "test": (images, labels)}`` with
    images uint8 ``[N, 28, 28]`` and labels uint8 ``[N]``, as stored.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    written = {}
    for split, count in (("train", num_train), ("test", num_test)):
        images = torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8, generator=generator)
        labels = (torch.arange(count) % 10).to(torch.uint8)
        labels = labels[torch.randperm(count, generator=generator)]
        suffix = ".gz" if gz else ""
        image_file, label_file = IDX_FILES[split]
        write_idx(directory / f"{image_file}{suffix}", images)
        write_idx(directory / f"{label_file}{suffix}", labels)
        written[split] = (images, labels)
    return written
