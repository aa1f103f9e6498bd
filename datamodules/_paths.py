"""Where the data modules look for data by default: ``$ZOO_DATA``, else ``data/`` in the working
directory.

A relative default suits a checkout, where ``data/`` sits beside ``configs/``; an installed
package runs from any folder, so ``ZOO_DATA`` names one data folder for every run (each data
module's ``root`` or ``data_dir`` still overrides it).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV", "data_root"]

DATA_ENV = "ZOO_DATA"


def data_root(*parts: str) -> Path:
    """``$ZOO_DATA/<parts>``, or ``data/<parts>`` when ``ZOO_DATA`` is unset or empty: where a
    data module with no ``root`` looks (``data_root("coco")``)."""
    return Path(os.environ.get(DATA_ENV) or "data", *parts)
