"""lightning-zoo's training room: LightningModules for each task, and the ``zoo`` CLI."""

from tasks._base import ZooTask
from tasks._quiet import quiet_lightning
from tasks.callbacks import AtomicCheckpointIO, NonFiniteLoss, NonFiniteLossGuard, SpeedUp
from tasks.classification import ImageClassifier
from tasks.detection import COCOResultsWriter, ObjectDetector
from tasks.regression import Regressor, regression_loss
from tasks.segmentation import SemanticSegmenter, segmentation_loss
from tasks.style import StyleTransfer, gram_matrix, total_variation

__all__ = [
    "AtomicCheckpointIO",
    "COCOResultsWriter",
    "ImageClassifier",
    "NonFiniteLoss",
    "NonFiniteLossGuard",
    "ObjectDetector",
    "Regressor",
    "SemanticSegmenter",
    "SpeedUp",
    "StyleTransfer",
    "ZooTask",
    "gram_matrix",
    "quiet_lightning",
    "regression_loss",
    "segmentation_loss",
    "total_variation",
]
