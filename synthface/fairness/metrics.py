"""Verification and demographic-fairness metrics (definitions: shared/docs/fairness-methods.md, section 4).

Conventions: a comparison score is a similarity; a pair is declared a match when score >= threshold.
FMR_g(t) = share of group g's impostor scores >= t; FNMR_g(t) = share of its genuine scores < t.
Group-level functions take sequences ordered by group; all work on numpy arrays, vectorised.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def _scores(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError("empty score set: a group needs at least one genuine and one impostor pair")
    if not np.all(np.isfinite(a)):
        raise ValueError("scores contain NaN or infinite values (check the embeddings)")
    return a


def fmr(impostor, threshold: float) -> float:
    """False match rate: fraction of impostor scores >= threshold."""
    return float(np.mean(_scores(impostor) >= threshold))


def fnmr(genuine, threshold: float) -> float:
    """False non-match rate: fraction of genuine scores < threshold."""
    return float(np.mean(_scores(genuine) < threshold))


def threshold_at_fmr(impostor, target: float) -> float:
    """The lowest threshold whose FMR does not exceed `target` (ties can make it lower)."""
    if not 0 <= target <= 1:
        raise ValueError(f"target FMR must be in [0, 1], got {target}")
    s = np.sort(_scores(impostor))[::-1]
    k = int(np.floor(target * s.size + 1e-9))  # false matches allowed
    if k >= s.size:
        return float(s[-1])
    return float(np.nextafter(s[k], np.inf))


def roc(genuine, impostor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FMR, TAR, thresholds) at every distinct score, thresholds descending."""
    g, i = _scores(genuine), _scores(impostor)
    thr = np.unique(np.concatenate([g, i]))[::-1]
    g_sorted, i_sorted = np.sort(g), np.sort(i)
    tar = (g.size - np.searchsorted(g_sorted, thr, side="left")) / g.size
    far = (i.size - np.searchsorted(i_sorted, thr, side="left")) / i.size
    return far, tar, thr


def tar_at_fmr(genuine, impostor, target: float) -> float:
    """True accept rate at the threshold set on these impostors for `target` FMR."""
    return 1.0 - fnmr(genuine, threshold_at_fmr(impostor, target))


def eer(genuine, impostor) -> float:
    """Equal error rate: where FMR and FNMR cross (mean of the two at the closest threshold)."""
    far, tar, _ = roc(genuine, impostor)
    frr = 1 - tar
    far = np.concatenate([[0.0], far])  # threshold above every score
    frr = np.concatenate([[1.0], frr])
    k = int(np.argmin(np.abs(far - frr)))
    return float((far[k] + frr[k]) / 2)


def kfold_accuracy(scores, is_genuine, folds) -> tuple[float, np.ndarray]:
    """Verification accuracy by cross-validation (LFW/RFW protocol): for each fold, the
    threshold that maximises accuracy on the other folds is applied to it.
    Returns (mean accuracy over folds, per-fold accuracies)."""
    s = _scores(scores)
    y = np.asarray(is_genuine, dtype=bool).ravel()
    f = np.asarray(folds).ravel()
    if not (s.size == y.size == f.size):
        raise ValueError("scores, labels and folds must have the same length")
    accs = []
    for fold in np.unique(f):
        train, test = f != fold, f == fold
        t = best_threshold(s[train], y[train])
        accs.append(np.mean((s[test] >= t) == y[test]))
    accs = np.asarray(accs)
    return float(accs.mean()), accs


def best_threshold(scores, is_genuine) -> float:
    """Threshold maximising accuracy, at a midpoint between consecutive distinct scores."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_genuine, dtype=bool)
    u = np.unique(s)
    cand = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
    gs, im = np.sort(s[y]), np.sort(s[~y])
    correct = (gs.size - np.searchsorted(gs, cand, side="left")) + np.searchsorted(im, cand, side="left")
    return float(cand[int(np.argmax(correct))])


# ----------------------------------------------------------------------------- group fairness


def std_accuracy(accuracies: Sequence[float], ddof: int = 1) -> float:
    """Standard deviation of per-group accuracies (sample form by default, as in the RFW papers)."""
    a = np.asarray(accuracies, dtype=np.float64)
    return float(np.std(a, ddof=ddof))


def ser(accuracies: Sequence[float], scale: float = 100.0) -> float:
    """Skewed error ratio: max group error / min group error (accuracies in percent by default)."""
    err = scale - np.asarray(accuracies, dtype=np.float64)
    if err.min() <= 0:
        return float("nan") if err.max() > 0 else 1.0
    return float(err.max() / err.min())


def fdr(fmrs: Sequence[float], fnmrs: Sequence[float], alpha: float = 0.5) -> float:
    """Fairness discrepancy rate: 1 - (alpha max|FMR_g - FMR_h| + (1-alpha) max|FNMR_g - FNMR_h|)."""
    a, b = np.asarray(fmrs, dtype=np.float64), np.asarray(fnmrs, dtype=np.float64)
    return float(1 - (alpha * (a.max() - a.min()) + (1 - alpha) * (b.max() - b.min())))


def inequity_rate(fmrs: Sequence[float], fnmrs: Sequence[float], alpha: float = 0.5, beta: Optional[float] = None,
                  floor: Optional[float] = None) -> float:
    """(max FMR / min FMR)^alpha * (max FNMR / min FNMR)^beta, beta = 1 - alpha by default.
    NaN when a minimum rate is 0, unless `floor` (e.g. 1 / number of pairs) replaces zeros."""
    beta = 1 - alpha if beta is None else beta
    a, b = np.asarray(fmrs, dtype=np.float64), np.asarray(fnmrs, dtype=np.float64)
    if floor is not None:
        a, b = np.maximum(a, floor), np.maximum(b, floor)
    if a.min() <= 0 or b.min() <= 0:
        return float("nan")
    return float((a.max() / a.min()) ** alpha * (b.max() / b.min()) ** beta)


def gini(x: Sequence[float]) -> float:
    """Gini coefficient with the n/(n-1) correction used by GARBE."""
    v = np.asarray(x, dtype=np.float64)
    n = v.size
    if n < 2:
        raise ValueError("the Gini coefficient needs at least two groups")
    if v.mean() == 0:
        return 0.0
    return float(n / (n - 1) * np.abs(v[:, None] - v[None, :]).sum() / (2 * n * n * v.mean()))


def garbe(fmrs: Sequence[float], fnmrs: Sequence[float], alpha: float = 0.5) -> float:
    """Gini aggregation rate for biometric equitability: alpha G(FMR) + (1 - alpha) G(FNMR)."""
    return float(alpha * gini(fmrs) + (1 - alpha) * gini(fnmrs))


def bootstrap_ci(statistic, samples: Sequence[np.ndarray], n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile confidence interval of statistic(*samples), resampling each sample with replacement."""
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(s) for s in samples]
    values = np.empty(n_boot)
    for b in range(n_boot):
        values[b] = statistic(*[a[rng.integers(0, a.shape[0], a.shape[0])] for a in arrays])
    lo, hi = np.nanpercentile(values, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)
