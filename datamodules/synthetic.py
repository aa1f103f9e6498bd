"""Synthetic linear-regression data, ``y = Xw + b + noise`` (D2L Section 3.4.1).

Batch format (the regression contract with ``tasks``): ``(features[B, D] float32, targets[B])``.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from ._samplers import sampling

__all__ = ["SyntheticRegression"]


class SyntheticRegression(L.LightningDataModule):
    """Features drawn from a standard normal, targets from a known linear model plus Gaussian
    noise, so a trained model can be checked against the true ``weights`` and ``bias``.

    Args:
        weights: the true ``w``; its length is the number of features.
        bias: the true ``b``.
        noise: standard deviation of the additive Gaussian noise.
        num_train: training examples; ``num_val`` validation and ``num_test`` test examples.
        batch_size: minibatch size (the course uses 32).
        seed: seeds the generator, so the data is identical across runs.
    """

    def __init__(
        self,
        weights: Sequence[float] = (2.0, -3.4),
        bias: float = 4.2,
        noise: float = 0.01,
        num_train: int = 1000,
        num_val: int = 1000,
        num_test: int = 1000,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not weights:
            raise ValueError("SyntheticRegression: weights is empty; give at least one weight")
        if min(num_train, num_val, num_test, batch_size) < 1 or noise < 0:
            raise ValueError(
                "SyntheticRegression: num_train, num_val, num_test and batch_size must be >= 1 "
                f"and noise >= 0 (got {num_train}, {num_val}, {num_test}, {batch_size}, {noise})"
            )
        self.save_hyperparameters()
        self.weights = torch.tensor(list(weights), dtype=torch.float32)
        self.bias = bias
        self.noise = noise
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.batch_size = batch_size
        self.seed = seed
        self.datasets: dict[str, TensorDataset] = {}

    @property
    def in_features(self) -> int:
        return len(self.weights)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        generator = torch.Generator().manual_seed(self.seed)
        for split, size in self.sizes.items():
            features = torch.randn(size, self.in_features, generator=generator)
            noise = torch.randn(size, generator=generator) * self.noise
            self.datasets[split] = TensorDataset(
                features, features @ self.weights + self.bias + noise
            )

    def _dataloader(self, split: str) -> DataLoader:
        dataset = self.datasets[split]
        train = split == "train"
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            **sampling(dataset, self.trainer, train, type(self).__name__),
        )

    def train_dataloader(self) -> DataLoader:
        return self._dataloader("train")

    def val_dataloader(self) -> DataLoader:
        return self._dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self._dataloader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._dataloader("test")
