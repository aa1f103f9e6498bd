"""scikit-learn's bundled handwritten digits: the datamodule that works offline.

1,797 grey-scale 8 x 8 images of the digits 0-9 (the UCI "Optical Recognition of
Handwritten Digits" test set) ship inside scikit-learn, so recipes, tests and notebooks
can train a real classifier with no download. The course's LeNet (d2l section 7.6)
expects 28 x 28 inputs, hence the default ``image_size=28``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor

from ._memory import ClassificationDataModule

__all__ = ["Digits"]

# The test split never depends on the user's seed, fold or val_fraction: every run and
# every fold of a cross-validation is scored on the same images.
_TEST_SPLIT_SEED = 0


class Digits(ClassificationDataModule):
    """The 8 x 8 handwritten digits bundled with scikit-learn, upsampled for LeNet.

    The data has no official test split, so one is made here: a stratified
    ``test_fraction`` of the 1,797 images drawn with a fixed seed (0), independent of
    ``seed``, ``fold`` and ``val_fraction``. The remaining images are the training split
    that the base class divides into train and validation sets (or K folds). With the
    defaults that is 360 test, 144 validation and 1,293 training images.

    Pixel values 0-16 are scaled to [0, 1] and standardised with the mean and standard
    deviation of the whole scaled 8 x 8 set. Bilinear upsampling smooths the images, so
    at 28 x 28 the standardised pixels have a standard deviation of about 0.86, not 1.

    Args:
        test_fraction: share of the 1,797 images in the fixed test split, in (0, 1).
        image_size: side of the square images the models see (bilinear resize from 8);
            None keeps 8 x 8.
        **kwargs: batch size, splits and preprocessing; see
            :class:`~datamodules.ClassificationDataModule`.
    """

    classes: ClassVar[list[str]] = [str(digit) for digit in range(10)]
    in_channels: ClassVar[int] = 1
    # load_digits().images / 16 over all 1,797 images (numpy, float64), rounded.
    mean: ClassVar[tuple[float, ...]] = (0.3053,)
    std: ClassVar[tuple[float, ...]] = (0.3760,)

    def __init__(
        self, test_fraction: float = 0.2, image_size: int | None = 28, **kwargs: Any
    ) -> None:
        if not 0 < test_fraction < 1:
            raise ValueError(
                f"Digits: test_fraction={test_fraction} must be in (0, 1), e.g. 0.2 for a "
                "test split of 360 of the 1,797 images"
            )
        super().__init__(image_size=image_size, **kwargs)
        self.test_fraction = test_fraction

    def _load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        digits = load_digits()
        images = torch.from_numpy(digits.images.astype(np.float32) / 16)
        labels = torch.from_numpy(digits.target).long()
        train_positions, test_positions = train_test_split(
            np.arange(len(labels)),
            test_size=self.test_fraction,
            random_state=_TEST_SPLIT_SEED,
            stratify=digits.target,
        )
        positions = torch.from_numpy(np.sort(train_positions if train else test_positions))
        return images[positions], labels[positions]
