"""The building blocks of SensitiveNets (synthface.methods.sensitivenets): the residual projection, the
detectors, the semi-hard triplet loss, the state one fit carries, and input checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import SynthfaceError
from ..train.losses import TripletLoss

_MINER = TripletLoss(mining="semihard")  # used for its mine() only; the loss here is on squared distances


class _Projection(nn.Module):
    """z -> normalise(z + MLP(z)); zero-initialised last layer makes it the identity on unit vectors."""

    def __init__(self, dim: int, hidden: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = []
        width = dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        last = nn.Linear(width, dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.mlp = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z + self.mlp(z), dim=1)


class _Standardise(nn.Module):
    """Per-feature standardisation with the statistics of the embeddings it is given (a batch, or the set a
    detector is trained or scored on). Without it the projection fools detectors by shrinking the spread of
    the embeddings instead of removing the attribute: a detector trained at one scale is near-uniform at a
    smaller one, while cosine verification, being scale-free, hardly notices."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if len(z) < 2:
            return z - z
        return (z - z.mean(0)) / z.std(0).clamp_min(1e-6)


def _detector(dim: int, hidden: int, n_classes: int) -> nn.Sequential:
    if hidden == 0:  # a softmax layer on the embedding, as in one re-implementation
        return nn.Sequential(_Standardise(), nn.Linear(dim, n_classes))
    return nn.Sequential(_Standardise(), nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


def _seeded_init(module: nn.Module, gen: torch.Generator) -> None:
    """torch's default uniform(+-1/sqrt(fan_in)) init of every Linear, drawn from `gen`."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                m.weight.copy_((torch.rand(m.weight.shape, generator=gen) * 2 - 1) * bound)
                m.bias.copy_((torch.rand(m.bias.shape, generator=gen) * 2 - 1) * bound)


@dataclass
class _FitData:
    """The tensors one fit works on."""
    Z: torch.Tensor            # the projection's input: normalised (and, with pre_erasure, erased) embeddings
    ids: torch.Tensor          # identity codes
    id_codes: np.ndarray
    ys: dict                   # attribute -> class codes
    n_cls: dict                # attribute -> number of classes
    tr_idx: torch.Tensor       # rows of the 80 % of identities detectors train on
    va_idx: torch.Tensor       # rows of the held-out 20 % (monitoring)
    device: torch.device


@dataclass
class _DetectorState:
    """The detectors the removal term uses: attribute -> list ("pool", "fixed", "diverse"), or the online
    adversary with its optimiser."""
    pool: dict
    online: dict = field(default_factory=dict)


def _epoch_line(rec: dict, epochs: int) -> str:
    accs = " ".join(f"{k} {v:.3f}" for k, v in rec["detector_acc"].items())
    return (f"epoch {rec['epoch']}/{epochs}: loss {rec['loss']:.4f} (triplet {rec['triplet']:.4f}, removal "
            f"{rec['removal']:.4f}, active triplets {rec['active']:.2f}); held-out detector accuracy {accs}; "
            f"{rec['seconds']:.1f} s")


def semi_hard_triplets(emb: torch.Tensor, labels: torch.Tensor, margin: float):
    """Triplet loss of §1.3 (squared L2 distances) on triplets mined semi-hard inside one batch.

    Mining is synthface.train.losses.TripletLoss's (closest negative farther than the positive, else the
    farthest negative); it only compares distances, so mining on squared distances picks the same triplets.
    Returns (mean loss over triplets, anchor, positive, negative indices, fraction of triplets with a positive
    loss); a batch without any usable triplet gives a zero loss and empty indices.
    """
    with torch.no_grad():
        d = torch.cdist(emb, emb).pow(2)
    a, p, n = _MINER.mine(d, labels)
    if len(a) == 0:
        return emb.sum() * 0.0, a, p, n, 0.0
    ap = (emb[a] - emb[p]).pow(2).sum(1)
    an = (emb[a] - emb[n]).pow(2).sum(1)
    per = F.relu(ap - an + margin)
    return per.mean(), a, p, n, float((per > 0).float().mean())


def _as_2d_float(X, what: str) -> np.ndarray:
    try:
        X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError):
        raise SynthfaceError(f"{what} must be a numeric (n, d) array of embeddings") from None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise SynthfaceError(f"{what} must be a non-empty (n, d) array of embeddings, got shape {X.shape}")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise SynthfaceError(f"{what} has {int(bad.sum())} rows with NaN or infinite values (first: row "
                             f"{int(np.argmax(bad))}); drop or recompute them")
    if (np.linalg.norm(X, axis=1) == 0).any():
        raise SynthfaceError(f"{what} has all-zero rows, which have no direction to normalise; drop them")
    return X


def _normalise(X: np.ndarray) -> np.ndarray:
    return X / np.linalg.norm(X, axis=1, keepdims=True)
