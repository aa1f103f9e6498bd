"""lightning-zoo's pure-PyTorch room: architectures, the registry and weights (no Lightning)."""

from zoo import classification, detection, segmentation  # noqa: F401  (registers the families)
from zoo._adapt import adapt, adapt_input_weight
from zoo._registry import ModelInfo, create_model, list_models, model_info, register_model
from zoo.classification import Classifier, FeatureInfo
from zoo.detection import Detector
from zoo.export import export_checkpoint, export_model
from zoo.flops import count_flops
from zoo.segmentation import Segmenter
from zoo.weights import PretrainedConfig, load

__all__ = [
    "Classifier",
    "Detector",
    "FeatureInfo",
    "ModelInfo",
    "PretrainedConfig",
    "Segmenter",
    "adapt",
    "adapt_input_weight",
    "count_flops",
    "create_model",
    "export_checkpoint",
    "export_model",
    "list_models",
    "load",
    "model_info",
    "register_model",
]
__version__ = "0.1.0"
