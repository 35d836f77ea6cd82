"""Attribute labellers: images in, per-attribute class probabilities out."""

from .base import PRESETS, CombinedLabeller, Labeller, MappedLabeller, load_schema
from .onnx_classifier import OnnxClassifier
from .registry import load_labeller

__all__ = ["OnnxClassifier", "Labeller", "MappedLabeller", "CombinedLabeller", "PRESETS", "load_schema",
           "load_labeller"]
