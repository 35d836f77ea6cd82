"""Per-sample weights for training an attribute model (ERM, CID, the identity oracle), the two ways
a trainer uses them, and the bias-injected training sets of the CID experiment (issue 16).

A trainer takes weights from `training_weights` and either
  * multiplies each sample's loss by its weight (mode "loss": L = (1/B) sum_i w_i l_i, spec
    fairness-methods.md section 2.3 step 6), or
  * draws batches with probability proportional to the weights and leaves the loss unweighted
    (mode "sampler": a WeightedRandomSampler, with replacement);
`weighted_data` returns the dataset and sampler for either, so the training loop is the same.
Trainers with their own sampler (synthface.train.Trainer shuffles and shards by itself) take
WeightedDataset for the loss mode and `resampled_dataset` for the sampler mode.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, RandomSampler, Sampler, WeightedRandomSampler

from ..errors import SynthfaceError
from .cid import CIDWeights, oracle_identity_weights

SCHEMES = ("erm", "cid", "oracle")
MODES = ("loss", "sampler")


def training_weights(scheme: str, y, embeddings=None, identity=None, cid: Optional[CIDWeights] = None) -> np.ndarray:
    """Weights with mean 1 within each class of y (so every scheme keeps the class priors and the
    loss scale, and runs differ only in how samples are weighted inside a class).

    erm: all 1. cid: CIDWeights fitted on `embeddings` (a recogniser's, the identity proxy; pass a
    configured `cid` to change its settings). oracle: 1 / images of the identity in the class,
    from ground-truth `identity`."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0:
        raise SynthfaceError(f"labels y must be a non-empty 1-D array, got shape {y.shape}")
    if scheme == "erm":
        return np.ones(len(y))
    if scheme == "cid":
        if embeddings is None:
            raise SynthfaceError("weights 'cid' need the training images' recogniser embeddings; pass embeddings=")
        return (cid if cid is not None else CIDWeights()).fit_transform(embeddings, y)
    if scheme == "oracle":
        if identity is None:
            raise SynthfaceError("weights 'oracle' need the ground-truth identity of every image; pass identity=")
        return oracle_identity_weights(identity, y, normalize="per_class")
    raise SynthfaceError(f"weights={scheme!r}; use one of {', '.join(SCHEMES)}")


def weighted_loss(per_sample_loss: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(1/B) sum_i w_i l_i: divided by the batch size, not by the sum of the batch's weights, so a
    batch of heavy samples pulls harder, as the weighted objective over the whole set says."""
    if per_sample_loss.shape != weights.shape:
        raise SynthfaceError(f"per-sample losses {tuple(per_sample_loss.shape)} and weights "
                             f"{tuple(weights.shape)} differ in shape; compute the loss with reduction='none'")
    return (per_sample_loss * weights.to(per_sample_loss.dtype)).mean()


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted classification loss: logits [B, C] with integer targets (softmax cross-entropy), or
    logits [B] / [B, 1] with 0/1 targets (sigmoid, binary cross-entropy)."""
    if logits.ndim == 2 and logits.shape[1] > 1:
        losses = F.cross_entropy(logits, target.long(), reduction="none")
    else:
        losses = F.binary_cross_entropy_with_logits(logits.reshape(-1), target.reshape(-1).to(logits.dtype),
                                                    reduction="none")
    return weighted_loss(losses, weights.reshape(-1))


class WeightedDataset(Dataset):
    """A dataset whose items carry their sample weight last: (*item, w) for tuple items,
    {**item, "weight": w} for dict items, (item, w) otherwise."""

    def __init__(self, base: Dataset, weights):
        self.base = base
        self.weights = torch.as_tensor(np.asarray(weights, np.float32))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        item, w = self.base[i], self.weights[i]
        if isinstance(item, dict):
            return {**item, "weight": w}
        if isinstance(item, tuple):
            return (*item, w)
        return item, w


def weighted_data(dataset: Dataset, weights, mode: str = "loss", seed: int = 0,
                  num_samples: Optional[int] = None) -> tuple[WeightedDataset, Sampler]:
    """(dataset with a weight per item, sampler) for a DataLoader(dataset, sampler=sampler).

    loss: items carry their weights, the sampler is a seeded shuffle (each sample once per epoch).
    sampler: items carry weight 1 and the sampler draws num_samples (default len) items with
    replacement, with probability proportional to the weights."""
    w = np.asarray(weights, np.float64)
    if w.ndim != 1 or len(w) != len(dataset):
        raise SynthfaceError(f"{w.size} weights for a dataset of {len(dataset)} items; give one weight per item")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise SynthfaceError("sample weights must be finite, non-negative and not all 0")
    if mode not in MODES:
        raise SynthfaceError(f"weighting mode {mode!r}; use 'loss' (weights in the loss) or 'sampler'")
    gen = torch.Generator().manual_seed(int(seed))
    if mode == "loss":
        return WeightedDataset(dataset, w), RandomSampler(dataset, generator=gen)
    n = len(dataset) if num_samples is None else int(num_samples)
    sampler = WeightedRandomSampler(torch.as_tensor(w), n, replacement=True, generator=gen)
    return WeightedDataset(dataset, np.ones(len(w))), sampler


def resampled_dataset(dataset: Dataset, weights, num_samples: Optional[int] = None, seed: int = 0) -> WeightedDataset:
    """The sampler mode for trainers that bring their own (shuffling, distributed) sampler, such as
    synthface.train.Trainer: num_samples (default len) items drawn once, with replacement and
    probability proportional to the weights, as a dataset whose items carry weight 1."""
    w = np.asarray(weights, np.float64)
    if w.ndim != 1 or len(w) != len(dataset):
        raise SynthfaceError(f"{w.size} weights for a dataset of {len(dataset)} items; give one weight per item")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise SynthfaceError("sample weights must be finite, non-negative and not all 0")
    n = len(dataset) if num_samples is None else int(num_samples)
    rows = np.random.default_rng(seed).choice(len(w), size=n, replace=True, p=w / w.sum())
    return WeightedDataset(torch.utils.data.Subset(dataset, rows.tolist()), np.ones(n))


# ---------------------------------------------------------------------- bias injection


class BiasedSplit(NamedTuple):
    indices: np.ndarray   # rows of the pool in the training set, sorted
    dominant: np.ndarray  # the over-represented identities


def bias_injected_indices(identity, y, rho: float, n_train: int, positive=1, n_dominant: int = 5,
                          dominant: Optional[Sequence] = None, positive_fraction: float = 0.5,
                          dominant_negatives: bool = False, seed: int = 0) -> BiasedSplit:
    """A training set of n_train images drawn from a pool in which a fraction rho of the
    `positive` class's images come from a few over-represented identities (spec section 2.4).

    The set always holds round(n_train * positive_fraction) positives, whatever rho, so runs at
    different rho differ only in who the positives are. The rho share is split evenly over the
    dominant identities (by default the n_dominant with the most positive images in the pool, the
    same for every rho); every other image is spread as evenly as the pool allows over the other
    identities (one image per identity first, then a second, ...). Dominant identities give no
    negatives unless dominant_negatives, so for them identity predicts the label."""
    identity, y = np.asarray(identity), np.asarray(y)
    if identity.ndim != 1 or y.shape != identity.shape:
        raise SynthfaceError(f"identity and y must be 1-D of the same length, got {identity.shape} and {y.shape}")
    if not 0.0 <= rho <= 1.0:
        raise SynthfaceError(f"rho={rho}; give the dominant identities' share of the positives, in [0, 1]")
    if not 0.0 < positive_fraction < 1.0:
        raise SynthfaceError(f"positive_fraction={positive_fraction}; give a share strictly between 0 and 1")
    rng = np.random.default_rng(seed)
    pos = y == positive
    if not pos.any():
        raise SynthfaceError(f"no image in the pool has label {positive!r}; check `positive`")
    n_pos = int(round(n_train * positive_fraction))
    n_neg = n_train - n_pos
    if dominant is None:
        ids, counts = np.unique(identity[pos], return_counts=True)
        if len(ids) < n_dominant:
            raise SynthfaceError(f"only {len(ids)} identities have positive images; n_dominant={n_dominant} is too many")
        order = np.lexsort((rng.permutation(len(ids)), -counts))  # most positives first, ties at random
        dominant = ids[order[:n_dominant]]
    dominant = np.asarray(dominant)
    is_dom = np.isin(identity, dominant)
    quota = int(round(rho * n_pos))
    chosen = []
    per = np.full(len(dominant), quota // len(dominant))
    per[: quota % len(dominant)] += 1
    for ident, q in zip(dominant, per):
        rows = np.flatnonzero(pos & (identity == ident))
        if len(rows) < q:
            raise SynthfaceError(f"dominant identity {ident} has {len(rows)} positive images but rho={rho} needs "
                                 f"{q}; render more images of it or lower rho / n_train")
        chosen.append(rng.choice(rows, q, replace=False))
    chosen.append(_spread(np.flatnonzero(pos & ~is_dom), identity, n_pos - quota, rng, "positive"))
    neg_pool = ~pos if dominant_negatives else ~pos & ~is_dom
    chosen.append(_spread(np.flatnonzero(neg_pool), identity, n_neg, rng, "negative"))
    return BiasedSplit(np.sort(np.concatenate(chosen)).astype(np.int64), dominant)


def _spread(rows: np.ndarray, identity: np.ndarray, n: int, rng, what: str) -> np.ndarray:
    """n of `rows`, as evenly spread over identities as possible (random within ties)."""
    if n > len(rows):
        raise SynthfaceError(f"the pool has {len(rows)} usable {what} images but the training set needs {n}; "
                             f"give a larger pool or a smaller n_train")
    if n == 0:
        return np.empty(0, np.int64)
    rows = rng.permutation(rows)
    _, ident = np.unique(identity[rows], return_inverse=True)
    ident = ident.reshape(-1)
    # rank of each image within its identity (0 for the first drawn, 1 for the second...)
    order = np.argsort(ident, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(ident[order])) + 1]
    rank = np.empty(len(rows), np.int64)
    rank[order] = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    tiebreak = rng.permutation(ident.max() + 1)[ident]
    take = np.lexsort((tiebreak, rank))[:n]
    return rows[take]
