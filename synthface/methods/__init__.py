"""Fairness and privacy methods that work on face embeddings (fit on a frozen recogniser's output)."""

from .cid import CIDWeights, oracle_identity_weights
