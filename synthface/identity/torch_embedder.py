"""A face recogniser held as a torch module, so methods can backpropagate through it.

    arcface:PATH        an arcface_torch `model.pt` / `.pth` state dict (architecture inferred)
    torch:PATH          synthface's `backbone.safetensors` (+ JSON sidecar), e.g. from `synthface train recognition`
    torch:world-recognizer, torch:world-audit-recognizer   the demo world's recognisers as torch modules

Loading never executes code from the file (safetensors, or torch.load with weights_only).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ..align import arcface_crop, arcface_matrix, to_float, warp_affine
from ..errors import SynthfaceError
from ..nets import WORLD_MODELS, load_backbone, load_world_model


class TorchBackboneEmbedder:
    """`module` is the nn.Module (eval mode) mapping a normalised crop batch to embeddings;
    `embed_tensor` is the differentiable path from FFHQ-aligned float images to embeddings;
    `embed` / `embed_aligned` are the numpy API every embedder offers."""

    def __init__(self, path, arch: str | None = None, device: str = "cpu", batch_size: int = 128,
                 kind: str = "torch"):
        self.path, self.kind = str(path), kind
        if self.path in WORLD_MODELS:
            self.module = load_world_model(self.path)
        else:
            self.module = load_backbone(Path(path), arch)
        meta = self.module.synthface_meta
        if meta.get("output", "embedding") != "embedding":
            raise SynthfaceError(f"{path} is an attribute classifier ({meta['output']} output), not a recogniser")
        inp = meta["input"]
        self.size, self.mean, self.std = int(inp["size"]), float(inp["mean"]), float(inp["std"])
        self.device, self.batch_size = torch.device(device), batch_size
        self.module.to(self.device)

    def embed_tensor(self, images: torch.Tensor, normalise: bool = True) -> torch.Tensor:
        """FFHQ-aligned float images [N, 3, H, W] in 0..255 (e.g. generator output rescaled) ->
        embeddings [N, D], L2-normalised unless told otherwise; gradients flow to `images`."""
        crops = warp_affine(images, arcface_matrix(images.shape[-1], self.size), self.size)
        e = self.module((crops - self.mean) / self.std)
        return torch.nn.functional.normalize(e, dim=1) if normalise else e

    def _run(self, x: torch.Tensor) -> np.ndarray:
        e = self.module(((x - self.mean) / self.std).to(self.device)).float().cpu().numpy()
        if not np.isfinite(e).all():
            raise SynthfaceError(f"{self.path} produced NaN or inf embeddings")
        n = np.linalg.norm(e, axis=1, keepdims=True)
        if (n == 0).any():
            raise SynthfaceError(f"{self.path} produced all-zero embeddings")
        return (e / n).astype(np.float32)

    @torch.no_grad()
    def embed(self, images) -> np.ndarray:
        """uint8 RGB FFHQ-aligned images [N, H, W, 3] -> L2-normalised embeddings [N, D]."""
        outs = [self._run(arcface_crop(images[s:s + self.batch_size], self.size))
                for s in range(0, len(images), self.batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, self.module.synthface_meta["embedding_dim"]), np.float32)

    @torch.no_grad()
    def embed_aligned(self, crops) -> np.ndarray:
        """uint8 RGB ArcFace crops [N, S, S, 3] -> L2-normalised embeddings [N, D]."""
        x = to_float(crops)
        if x.shape[-1] != self.size:
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                                                align_corners=False)
        return np.concatenate([self._run(x[s:s + self.batch_size]) for s in range(0, len(x), self.batch_size)])

    def describe(self) -> dict:
        meta = self.module.synthface_meta
        file = Path(meta["path"])
        return {"kind": self.kind, "path": str(file), "sha256": _sha256(file), "arch": meta["arch"],
                "embedding_dim": meta["embedding_dim"], "align": "fixed"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
