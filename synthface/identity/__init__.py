"""Identity embedders, distinct identities per cell, and identity-preserving variations."""

from .embedders import OnnxEmbedder, TorchScriptEmbedder, load_embedder
from .identities import IdentitySet, impostor_threshold, make_variations, nuisance_basis, select_identities

__all__ = ["OnnxEmbedder", "TorchScriptEmbedder", "load_embedder", "IdentitySet", "impostor_threshold",
           "make_variations", "nuisance_basis", "select_identities"]
