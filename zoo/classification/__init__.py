"""Classification families; importing this package registers every builder."""

from zoo.classification import alexnet, googlenet, lenet, linear, nin, resnet, vgg  # noqa: F401
from zoo.classification._base import Classifier, FeatureInfo

__all__ = ["Classifier", "FeatureInfo"]
