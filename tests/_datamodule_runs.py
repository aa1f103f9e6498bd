"""Reading a datamodule as a Trainer would, for the tests of bad data on disk."""

from __future__ import annotations

import warnings
from collections.abc import Callable


def run_stage(datamodule, stage: str = "fit"):
    """What a Trainer does before and during an epoch: prepare, set up, read every batch."""
    datamodule.prepare_data()
    datamodule.setup(stage)
    loaders = (
        [datamodule.train_dataloader(), datamodule.val_dataloader()]
        if stage == "fit"
        else [getattr(datamodule, f"{stage}_dataloader")()]
    )
    for loader in loaders:
        for _ in loader:
            pass
    return datamodule


def report_lines(function: Callable[[], object]) -> list[str]:
    """The warnings ``function`` gives (where the split reports of the datamodules go)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        function()
    return [str(warning.message) for warning in caught]
