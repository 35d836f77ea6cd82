"""Identity embedders, similarity thresholds, distinct identities per cell, and identity-preserving variations."""

from .base import Embedder
from .embedders import OnnxEmbedder, TorchScriptEmbedder, load_embedder
from .identities import IdentitySet, make_variations, nuisance_basis, select_identities
from .thresholds import audit_threshold, impostor_threshold

__all__ = ["Embedder", "OnnxEmbedder", "TorchScriptEmbedder", "load_embedder", "IdentitySet", "audit_threshold",
           "impostor_threshold", "make_variations", "nuisance_basis", "select_identities"]
