"""Sample weights for `synthface train attribute` (issue 16): ERM, CID from a recogniser's
embeddings of the training images, or the oracle from their ground-truth identities, applied
in the loss or as a resampling of the training set.

`make_weigher(...)` returns the `weigh(train_view)` hook synthface.train.attribute.train_attribute
calls on its loaded training set (items: image, label, identity; `.base` the FaceDataset).
"""

from __future__ import annotations

import copy
from typing import Callable, Optional

import numpy as np

from ..errors import SynthfaceError
from ..evaluation.attribute import native_side
from .cid import CIDWeights
from .weighting import MODES, SCHEMES, WeightedDataset, resampled_dataset, training_weights


def embed_dataset(dataset, embedder, batch: int = 128) -> np.ndarray:
    """The recogniser's embeddings of every image of a FaceDataset, read at the stored resolution
    and uncropped (the embedder aligns FFHQ-aligned faces itself)."""
    view = copy.copy(dataset)
    view.size, view.crop, view.augment = native_side(dataset), "none", False
    out = []
    for s in range(0, len(view), batch):
        out.append(embedder.embed(np.stack([view.image(i) for i in range(s, min(s + batch, len(view)))])))
    return np.concatenate(out)


def weight_summary(w: np.ndarray, y: np.ndarray) -> dict:
    """Per class: max/min weight ratio and the Kish effective sample size."""
    out = {}
    for c in np.unique(y):
        wc = w[y == c]
        out[str(c.item() if isinstance(c, np.generic) else c)] = {
            "n": int(len(wc)), "max_over_min": float(wc.max() / wc.min()),
            "effective_n": float(wc.sum() ** 2 / (wc ** 2).sum())}
    return out


def make_weigher(scheme: str = "erm", mode: str = "loss", recognizer: str = "world", cid: Optional[CIDWeights] = None,
                 device: str = "cpu", seed: int = 0, log: Callable[[str], None] = lambda s: None) -> Callable:
    """weigh(view) -> (dataset to train on, JSON summary). scheme: erm | cid | oracle; mode: loss
    (items carry their weight) | sampler (the set resampled once with probability ~ weight)."""
    if scheme not in SCHEMES:
        raise SynthfaceError(f"--weights {scheme!r}: choose one of {', '.join(SCHEMES)}")
    if mode not in MODES:
        raise SynthfaceError(f"--weighting {mode!r}: choose loss (weights in the loss) or sampler")

    def weigh(view):
        base = view.base
        y = base.targets_[view.task].numpy()
        emb = None
        info = {"scheme": scheme, "mode": mode}
        if scheme == "cid":
            from ..identity.embedders import load_embedder
            embedder = load_embedder(recognizer, device=device)
            log(f"embedding {len(base)} training images with {recognizer} for CID")
            emb = embed_dataset(base, embedder)
        est = cid if cid is not None else CIDWeights()
        w = training_weights(scheme, y, embeddings=emb, identity=base.targets_["identity"].numpy(), cid=est)
        if scheme == "cid":
            info.update({"recognizer": recognizer, "cid": {k: v for k, v in est.get_params().items()
                                                           if k in ("estimator", "k", "bandwidth", "gamma",
                                                                    "max_ratio", "leave_one_out")},
                         "bandwidth_per_class": [None if np.isnan(b) else float(b) for b in est.bandwidth_]})
        info["per_class"] = weight_summary(w, y)
        if scheme != "erm":
            log(f"{scheme} weights: " + "; ".join(f"class {k}: max/min {v['max_over_min']:.2f}, effective n "
                                                 f"{v['effective_n']:.0f} of {v['n']}"
                                                 for k, v in info["per_class"].items()))
        data = WeightedDataset(view, w) if mode == "loss" else resampled_dataset(view, w, seed=seed)
        return _Epochs(data, view), info

    return weigh


class _Epochs:
    """Forwards the engine's set_epoch to the FaceDataset under the weighting wrapper, so
    augmentation still changes with the epoch."""

    def __init__(self, data, view):
        self.data, self.view = data, view

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i]

    def set_epoch(self, epoch):
        self.view.set_epoch(epoch)
