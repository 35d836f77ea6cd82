"""A recogniser followed by a fitted embedding method: scored by the existing evaluation code as if it were one
recogniser (`synthface evaluate --method`, `synthface leakage --method`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import SynthfaceError


def load_method(path):
    """A fitted method file: `.sensitivenets` (or any file SensitiveNets.save wrote)."""
    from .sensitivenets import SensitiveNets

    p = Path(path)
    if not p.is_file():
        raise SynthfaceError(f"method file not found: {p}")
    return SensitiveNets.load(p)


class ProjectedEmbedder:
    """embed_aligned(images) = method.transform(recogniser.embed_aligned(images))."""

    def __init__(self, embedder, method, method_path=None):
        self.embedder, self.method = embedder, method
        self.method_path = str(method_path) if method_path else None
        h = hashlib.sha256()
        if method_path:
            h.update(Path(method_path).read_bytes())
        self._method_sha = h.hexdigest()

    def embed_aligned(self, images) -> np.ndarray:
        return self.method.transform(self.embedder.embed_aligned(images))

    def describe(self) -> dict:
        base = dict(self.embedder.describe())
        # A distinct cache key: projected embeddings must never be read back as the recogniser's own.
        base["sha256"] = hashlib.sha256(f"{base.get('sha256', 'model')}+{self._method_sha}".encode()).hexdigest()
        base["method"] = {"kind": type(self.method).__name__, "path": self.method_path,
                          "sha256": self._method_sha}
        return base
