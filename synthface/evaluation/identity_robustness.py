"""Identity-robustness of a face-attribute model (issue 16; fairness-methods.md sections 2.4 and 4.7):
how uniformly it performs across the people of an identity-labelled test set, not only on average."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ..errors import SynthfaceError


def identity_robustness(y_true, y_pred, identity, groups=None, min_images: int = 2,
                        worst: Sequence[float] = (0.05, 0.10), positive=1, ddof: int = 1) -> dict:
    """Accuracy overall and across identities (and demographic groups when `groups` is given).

    per identity (identities with at least min_images images): mean and std of the accuracies, and
    "worst q" = the mean accuracy of the lowest ceil(q * n_identities) of them, for each q in `worst`.
    with groups (one demographic label per image): accuracy of every (true class, group) cell and
    the worst of them; the true-positive rate of class `positive` per group and the equal-
    opportunity gap max - min of those rates (groups without a positive image are left out).
    Accuracies are fractions in [0, 1]."""
    y_true, y_pred, identity = np.asarray(y_true), np.asarray(y_pred), np.asarray(identity)
    n = len(y_true)
    for name, a in (("y_pred", y_pred), ("identity", identity)) + ((("groups", np.asarray(groups)),)
                                                                   if groups is not None else ()):
        if a.ndim != 1 or len(a) != n:
            raise SynthfaceError(f"{name} has shape {a.shape} but y_true has {n} entries; give one per image")
    if y_true.ndim != 1 or n == 0:
        raise SynthfaceError(f"y_true must be a non-empty 1-D array, got shape {y_true.shape}")
    if min_images < 1:
        raise SynthfaceError(f"min_images={min_images}; give a positive number of images per identity")
    correct = (y_true == y_pred).astype(np.float64)
    ids, inv, counts = np.unique(identity, return_inverse=True, return_counts=True)
    acc = np.bincount(inv.reshape(-1), weights=correct, minlength=len(ids)) / counts
    keep = counts >= min_images
    if not keep.any():
        raise SynthfaceError(f"no identity has {min_images} or more images (most: {counts.max()}); "
                             f"lower min_images or evaluate on a dataset with several images per person")
    acc_k = np.sort(acc[keep])
    out = {"accuracy": float(correct.mean()), "n_images": n, "n_identities": int(keep.sum()),
           "min_images": min_images, "identity_accuracy_mean": float(acc_k.mean()),
           "identity_accuracy_std": float(acc_k.std(ddof=ddof)) if len(acc_k) > ddof else float("nan")}
    for q in worst:
        if not 0 < q <= 1:
            raise SynthfaceError(f"worst={q}; give fractions of identities in (0, 1], such as 0.05 and 0.1")
        out[f"worst_{_pct(q)}pct_identity_accuracy"] = float(acc_k[:max(1, math.ceil(q * len(acc_k)))].mean())
    out["per_identity"] = {str(_plain(i)): float(a) for i, a, k in zip(ids, acc, keep) if k}
    if groups is not None:
        out.update(_group_metrics(y_true, y_pred, correct, np.asarray(groups), positive))
    return out


def _group_metrics(y_true, y_pred, correct, groups, positive) -> dict:
    cells = {}
    for c in np.unique(y_true):
        for g in np.unique(groups):
            m = (y_true == c) & (groups == g)
            if m.any():
                cells[f"{_plain(c)}/{_plain(g)}"] = float(correct[m].mean())
    tpr = {}
    for g in np.unique(groups):
        m = (y_true == positive) & (groups == g)
        if m.any():
            tpr[str(_plain(g))] = float((y_pred[m] == positive).mean())
    gap = max(tpr.values()) - min(tpr.values()) if tpr else float("nan")
    return {"cell_accuracy": cells, "worst_group_accuracy": min(cells.values()), "tpr_by_group": tpr,
            "equal_opportunity_gap": float(gap)}


def _pct(q: float) -> str:
    v = 100 * q
    return str(int(round(v))) if abs(v - round(v)) < 1e-9 else f"{v:g}"


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v
