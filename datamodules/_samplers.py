"""Which samples each process reads, one process or many (d2l Sections 12.5-12.6), chosen by the
datamodules rather than left to Lightning, for two reasons:

- **Evaluation sees every sample exactly once.** Lightning gives evaluation loaders a
  ``DistributedSampler``, which pads the set by repeating samples until every process has as
  many (5 samples on 2 processes: sample 0 is scored twice), so accuracy, mAP and mIoU are off.
  :func:`evaluation_sampler` splits without padding; processes then run different numbers of
  batches, which the tasks allow: their metrics sync once, at the end of the epoch.
- **A training epoch's shuffle depends on the seed and the epoch alone**, in one process as in
  DDP (where it is Lightning's own choice): a run resumed from a checkpoint (``--ckpt_path
  last``) draws the order the uninterrupted run drew, whatever the random generators did before.

Lightning keeps a ``DistributedSampler`` it is given, and sets its epoch.
"""

from __future__ import annotations

import os

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Dataset, DistributedSampler

__all__ = ["sampling"]


def sampling(dataset: Dataset, trainer: L.Trainer | None, train: bool, owner: str) -> dict:
    """The ``shuffle``, ``sampler`` and ``generator`` arguments of a ``DataLoader`` over
    ``dataset``: a training set's or an evaluation set's share (``owner`` names the datamodule
    in errors)."""
    if not train:
        return {"shuffle": False, "sampler": evaluation_sampler(dataset, trainer, owner)}
    sampler = training_sampler(dataset, trainer)
    if sampler is None:
        return {"shuffle": True}
    # The loader's own generator for the workers' base seed, which it would otherwise draw from
    # the global one at every epoch: a resumed run restores the global generator's state just
    # before its first epoch, after the loader has drawn.
    return {"sampler": sampler, "generator": torch.Generator().manual_seed(sampler.seed)}


def _shuffle_seed(world_size: int) -> int:
    """``seed_everything``'s seed, as Lightning's own sampler takes it. Unseeded, a fresh one in
    one process (as a plain shuffle), 0 under DDP (every process must draw the same order)."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    if seed is not None:
        return int(seed)
    return int(torch.randint(2**31, ())) if world_size == 1 else 0


def training_sampler(dataset: Dataset, trainer: L.Trainer | None) -> DistributedSampler | None:
    """This process's shuffled share of a training set, drawn from the seed and the epoch; None
    outside a Trainer (nobody would set the epoch: a plain shuffle then)."""
    if trainer is None:
        return None
    return DistributedSampler(
        dataset,
        num_replicas=trainer.world_size,
        rank=trainer.global_rank,
        shuffle=True,
        seed=_shuffle_seed(trainer.world_size),
    )


def evaluation_sampler(
    dataset: Dataset, trainer: L.Trainer | None, owner: str
) -> DistributedSampler | None:
    """Under DDP, this process's share of an evaluation set: process ``r`` of ``n`` takes samples
    ``r``, ``r + n``, ..., each sample on exactly one process. None in one process or outside a
    Trainer.

    Raises:
        ValueError: for a non-empty set smaller than the number of processes, naming ``owner``.
    """
    if trainer is None or trainer.world_size < 2:
        return None
    if 0 < len(dataset) < trainer.world_size:
        # A process with no batch skips its evaluation loop (Lightning), so it never joins the
        # metrics' end-of-epoch sync that the others wait in; repeating samples instead would
        # count them twice.
        raise ValueError(
            f"{owner}: an evaluation set (validation, test or predict) of {len(dataset)} samples "
            f"cannot be shared by {trainer.world_size} processes, each of which needs one: give "
            f"it at least {trainer.world_size} samples (e.g. a larger val_fraction) or run on at "
            f"most {len(dataset)} devices"
        )
    return UnrepeatedDistributedSampler(
        dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
    )
