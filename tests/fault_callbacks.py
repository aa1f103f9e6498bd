"""Callbacks the fault-tolerance tests give ``zoo fit`` on its command line
(``--trainer.callbacks+=tests.fault_callbacks.SigkillAt``), and a script that is killed while it
writes a checkpoint:

    python -m tests.fault_callbacks CHECKPOINT
"""

from __future__ import annotations

import os
import signal
import sys

import lightning as L
import torch

from tasks.callbacks import AtomicCheckpointIO


class SigkillAt(L.Callback):
    """Kill this process with SIGKILL (nothing can catch it: no clean-up, no last save) at the
    start of batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


def _save_then_die_mid_write(path: str) -> None:
    """Save one checkpoint, then start a second and SIGKILL the process half-way through it."""
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"step": 1, "weights": torch.arange(1000.0)}, path)
    real_save = torch.save

    def dying_save(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)
        file.seek(file.tell() // 2)  # half the bytes are written when the process dies
        file.truncate()
        file.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = dying_save  # this process only: it dies in the next call
    writer.save_checkpoint({"step": 2, "weights": torch.zeros(1000)}, path)


if __name__ == "__main__":
    _save_then_die_mid_write(sys.argv[1])
