"""How much of the real faces' variety a synthetic set covers, per cell.

Improved precision and recall (Kynkaanniemi et al. 2019) and density and coverage (Naeem et al.
2020), computed from k-nearest-neighbour balls in a feature space (L2-normalised features,
Euclidean distance, k = 5 by default):

    precision  share of synthetic samples inside some real sample's k-NN ball
    recall     share of real samples inside some synthetic sample's k-NN ball
    density    mean number of real balls a synthetic sample falls in, divided by k (can exceed 1)
    coverage   share of real samples whose ball holds at least one synthetic sample

They are only comparable between sets of equal size, so each cell compares its synthetic images
with as many real ones, and the real data's own figures (a second real set of the same size,
other people: "self") say what a perfect generator would score.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from ..errors import SynthfaceError

DEFAULT_K = 5


def _normalise(X) -> np.ndarray:
    X = np.asarray(X, np.float64)
    if X.ndim != 2 or not np.isfinite(X).all():
        raise SynthfaceError(f"features must be a finite [N, D] array, got shape {X.shape}")
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _sq_dist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return np.maximum((A ** 2).sum(1)[:, None] + (B ** 2).sum(1)[None] - 2 * A @ B.T, 0.0)


def knn_radii(X: np.ndarray, k: int) -> np.ndarray:
    """Squared distance of each row to its k-th nearest other row."""
    D = _sq_dist(X, X)
    np.fill_diagonal(D, np.inf)
    return np.partition(D, k - 1, axis=1)[:, k - 1]


def prdc(real, fake, k: int = DEFAULT_K) -> dict:
    """Precision, recall, density and coverage of `fake` against `real` (feature arrays)."""
    R, F = _normalise(real), _normalise(fake)
    if min(len(R), len(F)) <= k:
        raise SynthfaceError(f"precision/recall need more than k={k} samples on each side, got {len(R)} real and "
                             f"{len(F)} synthetic")
    r_real, r_fake = knn_radii(R, k), knn_radii(F, k)
    D = _sq_dist(R, F)                      # [real, fake]
    inside_real = D <= r_real[:, None]      # fake j inside real i's ball
    return {"precision": float(inside_real.any(0).mean()),
            "recall": float((D <= r_fake[None, :]).any(1).mean()),
            "density": float(inside_real.sum(0).mean() / k),
            "coverage": float(inside_real.any(1).mean()),
            "k": k, "real": int(len(R)), "synthetic": int(len(F))}


@torch.no_grad()
def attribute_features(net, crops112: np.ndarray, batch: int = 256) -> np.ndarray:
    """The audit attribute net's penultimate features (its 128-d trunk) of 112x112 ArcFace crops."""
    meta = getattr(net, "synthface_meta", {}) or {}
    inp = meta.get("input", {})
    mean, std = float(inp.get("mean", 127.5)), float(inp.get("std", 128.0))
    out = []
    for s in range(0, len(crops112), batch):
        x = torch.from_numpy(np.ascontiguousarray(crops112[s:s + batch])).permute(0, 3, 1, 2).float()
        out.append(net.trunk(net.features((x - mean) / std)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


def intra_identity_spread(values: np.ndarray, identity: np.ndarray) -> np.ndarray:
    """Per column: the mean over identities of the within-identity standard deviation."""
    identity = np.asarray(identity)
    groups = [values[identity == i] for i in np.unique(identity)]
    groups = [g for g in groups if len(g) > 1]
    if not groups:
        return np.full(values.shape[1], np.nan)
    return np.mean([g.std(0, ddof=1) for g in groups], 0)


def cell_coverage(spaces: Mapping[str, tuple], k: int = DEFAULT_K) -> dict:
    """spaces: name -> (real [N, D], real_second [N, D], synthetic [N, D]) of one cell. Returns
    per space the synthetic set's figures, the real set's own ("self": the second real set scored
    as if it were synthetic) and their ratio for coverage."""
    out = {}
    for name, (real, real2, syn) in spaces.items():
        s, self_ = prdc(real, syn, k), prdc(real, real2, k)
        out[name] = {"synthetic": s, "self": self_,
                     "coverage_ratio": s["coverage"] / self_["coverage"] if self_["coverage"] > 0 else float("nan")}
    return out


# ------------------------------------------------------------------ a dataset against real faces

def _dataset_crops(out, records: list, cell: str) -> tuple[np.ndarray, np.ndarray]:
    from pathlib import Path

    from ..fileio import read_image_rgb
    rows = [(r["identity"], im["file"]) for r in records if r["cell"] == cell for im in r["images"]]
    crops = np.stack([read_image_rgb(Path(out) / f) for _, f in rows]) if rows else np.zeros((0, 112, 112, 3), np.uint8)
    return crops, np.array([i for i, _ in rows])


def dataset_coverage(out, records: list, real_sets: Mapping[str, dict], features: Mapping[str, object],
                     nuisance=None, k: int = DEFAULT_K) -> dict:
    """Per cell of a written dataset: precision/recall/density/coverage of its images against real
    faces of the cell in every feature space (`features`: name -> callable(crops112) -> [N, D]),
    with the real data's self figures, and the intra-identity spread of each nuisance
    (`nuisance`: a regressor with `names` and `predict_matrix`, reading the 112 crops) for the
    synthetic and the real set. real_sets[cell] = {"real": crops, "real_identity": ids, "real2": crops}."""
    per_cell = {}
    for cell, rs in real_sets.items():
        syn, syn_id = _dataset_crops(out, records, cell)
        if len(syn) <= k:
            continue
        spaces = {name: (f(rs["real"]), f(rs["real2"]), f(syn)) for name, f in features.items()}
        res = cell_coverage(spaces, k)
        if nuisance is not None:
            s_syn = intra_identity_spread(nuisance.predict_matrix(syn, aligned=True), syn_id)
            s_real = intra_identity_spread(nuisance.predict_matrix(rs["real"], aligned=True), np.asarray(rs["real_identity"]))
            res["intra_identity_spread"] = {n: {"synthetic": float(a), "real": float(b),
                                                "ratio": float(a / b) if b > 0 else float("nan")}
                                            for n, a, b in zip(nuisance.names, s_syn, s_real)}
        per_cell[cell] = res
    return {"k": k, "per_cell": per_cell,
            "min_coverage_ratio": {name: float(min(c[name]["coverage_ratio"] for c in per_cell.values()))
                                   for name in features} if per_cell else {}}


def coverage_figure(result: dict, path) -> object:
    """Bars per cell: synthetic coverage and the real data's self-coverage, one panel per space."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import atomic_write
    cells = list(result["per_cell"])
    spaces = list(next(iter(result["per_cell"].values())).keys() - {"intra_identity_spread"}) if cells else []
    spaces = sorted(spaces)
    fig, axes = plt.subplots(1, max(1, len(spaces)), figsize=(5.5 * max(1, len(spaces)), 3.6), squeeze=False)
    x = np.arange(len(cells))
    for ax, sp in zip(axes[0], spaces):
        syn = [result["per_cell"][c][sp]["synthetic"]["coverage"] for c in cells]
        real = [result["per_cell"][c][sp]["self"]["coverage"] for c in cells]
        ax.bar(x - 0.2, real, 0.4, label="real vs real (self)", color="#999999")
        ax.bar(x + 0.2, syn, 0.4, label="synthetic vs real", color="#3b75af")
        ax.plot(x, 0.8 * np.array(real), "k_", markersize=18, label="0.8 x self")
        ax.set_xticks(x, [c.replace("group=", "").replace(",gender=", "\n") for c in cells], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"coverage, {sp} space (k={result['k']})")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))
