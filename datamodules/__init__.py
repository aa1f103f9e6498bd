"""LightningDataModules: datasets on disk to batches.

Classification batches are ``(images[B, C, H, W] float32, labels[B] int64)``; regression
batches ``(features[B, D] float32, targets[B] float32)``.
"""

from ._base import ClassificationDataModule
from .digits import Digits
from .idx import read_idx, write_idx
from .mnist import MNIST, FashionMNIST
from .synthetic import SyntheticRegression

__all__ = [
    "ClassificationDataModule",
    "Digits",
    "FashionMNIST",
    "MNIST",
    "SyntheticRegression",
    "read_idx",
    "write_idx",
]
