"""Shared test set-up: one thread per pytest-xdist worker, tiny data made on the fly."""

from __future__ import annotations

import os

import pytest
import torch
import torchvision
from torchvision.models import WeightsEnum

# Two xdist workers on two cores: more threads per worker would only fight over them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture
def fashion_dir(tmp_path):
    """A data_dir holding tiny Fashion-MNIST IDX files (random pixels, every class present)."""
    from tests._idx_files import write_mnist_files

    write_mnist_files(tmp_path / "FashionMNIST" / "raw", num_train=60, num_test=20)
    return tmp_path


@pytest.fixture
def serve_torchvision(monkeypatch):
    """torchvision's weights API, returning a given state dict instead of downloading one: the
    ``weights="torchvision"`` branch runs as it would online. Without a state dict it answers
    with random weights of the architecture asked for (``ResNet50_Weights`` -> ``resnet50``).
    Returns the calls it saw."""
    calls: list[tuple[WeightsEnum, dict]] = []

    def serve(state: dict[str, torch.Tensor] | None = None) -> list[tuple[WeightsEnum, dict]]:
        def get_state_dict(self, *args, **kwargs):
            calls.append((self, kwargs))
            if state is not None:
                return state
            architecture = type(self).__name__.removesuffix("_Weights").lower()
            return torchvision.models.get_model(architecture, weights=None).state_dict()

        monkeypatch.setattr(WeightsEnum, "get_state_dict", get_state_dict)
        return calls

    return serve
