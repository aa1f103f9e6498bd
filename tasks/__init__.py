"""lightning-zoo's training room: LightningModules for each task, and the ``zoo`` CLI."""

from tasks._base import ZooTask
from tasks.classification import ImageClassifier
from tasks.detection import COCOResultsWriter, ObjectDetector
from tasks.regression import Regressor, regression_loss

__all__ = [
    "COCOResultsWriter",
    "ImageClassifier",
    "ObjectDetector",
    "Regressor",
    "ZooTask",
    "regression_loss",
]
