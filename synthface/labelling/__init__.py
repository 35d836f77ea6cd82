"""Attribute labellers: images in, per-attribute class probabilities out."""

from .onnx_classifier import OnnxClassifier

__all__ = ["OnnxClassifier"]
