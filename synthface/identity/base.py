"""What every identity embedder (face recogniser) offers, as a Protocol beside labelling's
`Labeller`: a new recogniser only needs these three methods to work in selection, merge,
evaluation and the methods."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    def embed(self, images) -> np.ndarray:
        """uint8 RGB FFHQ-aligned images [N, H, W, 3] -> L2-normalised embeddings [N, D]."""

    def embed_aligned(self, crops) -> np.ndarray:
        """uint8 RGB 112x112 ArcFace crops [N, 112, 112, 3] -> L2-normalised embeddings [N, D]."""

    def describe(self) -> dict:
        """What the recogniser is (kind, path, digest): recorded with every result it makes."""
