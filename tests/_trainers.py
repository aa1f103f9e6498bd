"""The Trainer the tests use: one CPU device, no progress bar, summary or logger unless asked."""

from __future__ import annotations

import lightning as L


def cpu_trainer(root, **overrides) -> L.Trainer:
    """A quiet single-process CPU ``Trainer`` writing under ``root``; ``overrides`` win."""
    defaults = dict(
        accelerator="cpu",
        devices=1,
        default_root_dir=root,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
    )
    return L.Trainer(**(defaults | overrides))
