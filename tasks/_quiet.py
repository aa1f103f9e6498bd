"""Lightning's chatter that a zoo run does not act on, silenced by :func:`quiet_lightning`: ``zoo``
calls it for every command, a notebook once at its top."""

from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_lightning"]

# Lightning's adverts for its cloud logger and checkpoint uploader (litlogger, litmodels; printed
# by every Trainer) and a deprecation inside Lightning that torch 2.10+ reports on every
# validation loop (LeafSpec). Each is matched by its text and where it comes from, so every
# other message and warning stays.
_LIGHTNING_TIPS = "💡 Tip: For seamless cloud"
_RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


def _not_a_lightning_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_LIGHTNING_TIPS)


def quiet_lightning(info: bool = True) -> None:
    """Silence Lightning's adverts and its LeafSpec deprecation warning; with ``info=False`` also
    its INFO lines (devices found, seeds set, checkpoints restored, the model summary), which a
    notebook that prints its own results does not need. Warnings and errors always show."""
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _not_a_lightning_tip not in logger.filters:
            logger.addFilter(_not_a_lightning_tip)
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
    if not info:
        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
