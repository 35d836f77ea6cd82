"""Attribute leakage of an embedding: how well fresh classifiers recover sensitive attributes from it.

Used to audit privacy methods (SensitiveNets and the like; ../shared/docs/fairness-methods.md §1.5 and §4.6):
for each attribute, each classifier is trained from scratch on identity-disjoint folds (no identity is in a
training and a test fold, otherwise a classifier could recognise the person instead of the attribute) and
scored on its held-out fold. The out-of-fold predictions give accuracy and balanced accuracy, with a
percentile bootstrap CI that resamples identities (images of one person are not independent).
"""

from __future__ import annotations

import warnings
from typing import Mapping, Optional, Sequence, Union

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from ..errors import SynthfaceError

CLASSIFIERS = ("svm", "mlp", "rf", "logreg", "knn")


def make_classifier(name: str, seed: int = 0, n_train: int = 0):
    """A fresh, unfitted probe by name: svm (RBF), mlp (one hidden layer of 64), rf (100 trees), logreg, knn
    (15 nearest neighbours, distance-weighted, on standardised features: a probe with no training at all,
    which no method can have been optimised against).

    The MLP uses L-BFGS up to 5,000 training rows (Adam's full-batch steps on a small set stop far from
    convergence: 82 % where L-BFGS reaches 99-100 % on a perfectly encoded attribute in the tests), Adam
    minibatches above."""
    if name == "svm":
        return make_pipeline(StandardScaler(), SVC(kernel="rbf", C=1.0, gamma="scale"))
    if name == "mlp":
        solver = "lbfgs" if n_train <= 5000 else "adam"
        return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-2, solver=solver,
                                                             max_iter=500 if solver == "lbfgs" else 200,
                                                             random_state=seed))
    if name == "rf":
        return RandomForestClassifier(n_estimators=100, random_state=seed)
    if name == "knn":
        return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=15, weights="distance"))
    if name == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    raise SynthfaceError(f"unknown leakage classifier {name!r}; choose from {', '.join(CLASSIFIERS)} or pass a "
                         f"scikit-learn estimator")


def identity_folds(labels, groups, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold index (0..folds-1) of every sample: identity-disjoint, stratified by `labels` as far as the
    identities allow (StratifiedGroupKFold, shuffled with `seed`)."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    out = np.full(len(labels), -1, dtype=np.int64)
    split = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "the least populated class has fewer members than n_splits"
        warnings.simplefilter("ignore", UserWarning)
        for f, (_, test) in enumerate(split.split(np.zeros(len(labels)), labels, groups)):
            out[test] = f
    return out


def _bootstrap(codes: np.ndarray, correct: np.ndarray, groups: np.ndarray, n_classes: int, n_boot: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and balanced accuracy of n_boot resamples of identities (cluster bootstrap)."""
    _, gid = np.unique(groups, return_inverse=True)
    n_id = gid.max() + 1
    tot = np.zeros((n_id, n_classes))
    hit = np.zeros((n_id, n_classes))
    np.add.at(tot, (gid, codes), 1)
    np.add.at(hit, (gid, codes), correct)
    accs, bals = [], []
    for start in range(0, n_boot, 200):  # chunks keep the (resamples x identities) matrix small
        m = min(200, n_boot - start)
        w = rng.multinomial(n_id, np.full(n_id, 1.0 / n_id), size=m).astype(float)
        t, h = w @ tot, w @ hit
        accs.append(h.sum(1) / t.sum(1))
        with np.errstate(invalid="ignore", divide="ignore"):
            bals.append(np.nanmean(np.where(t > 0, h / t, np.nan), axis=1))
    return np.concatenate(accs), np.concatenate(bals)


def _check(X, sensitive, groups, folds) -> tuple[np.ndarray, np.ndarray]:
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise SynthfaceError("leakage: X must be a numeric (n, d) array of embeddings") from None
    if X.ndim != 2 or len(X) == 0:
        raise SynthfaceError(f"leakage: X must be a non-empty (n, d) array of embeddings, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise SynthfaceError(f"leakage: X has {int((~np.isfinite(X).all(1)).sum())} rows with NaN or infinite "
                             f"values; drop or recompute them")
    if groups is None:
        raise SynthfaceError("leakage needs groups= (the identity of every embedding) so that no identity is in "
                             "both a training and a test fold")
    groups = np.asarray(groups)
    if groups.shape != (len(X),):
        raise SynthfaceError(f"leakage: groups must hold one identity per embedding ({len(X)}), got shape "
                             f"{groups.shape}")
    if not isinstance(folds, (int, np.integer)) or folds < 2:
        raise SynthfaceError(f"leakage: folds must be an integer >= 2, got {folds!r}")
    if len(np.unique(groups)) < folds:
        raise SynthfaceError(f"leakage: {len(np.unique(groups))} identities cannot fill {folds} identity-disjoint "
                             f"folds; use fewer folds or more identities")
    if not isinstance(sensitive, Mapping) or not sensitive:
        raise SynthfaceError('leakage: sensitive must be a non-empty mapping of attribute name to labels, e.g. '
                             '{"gender": [...], "group": [...]}')
    return X, groups


def leakage(X, sensitive: Mapping[str, Sequence], groups, classifiers: Union[Sequence, Mapping] = ("svm", "mlp", "rf"),
            folds: int = 5, seed: int = 0, n_boot: int = 1000, ci: float = 0.95) -> dict:
    """Leakage of each sensitive attribute from embeddings X (n, d).

    sensitive: {attribute: (n,) labels}; groups: (n,) identity of every row (folds never split an identity).
    classifiers: names from CLASSIFIERS, scikit-learn estimators (cloned, never refitted in place), or a
    mapping name -> either. Returns {"n", "identities", "folds", "seed", "split", "attributes": {attribute:
    {"classes", "counts", "chance" (majority share: accuracy of always guessing the commonest class),
    "chance_balanced" (1/#classes), "classifiers": {name: {"accuracy", "accuracy_ci", "balanced_accuracy",
    "balanced_accuracy_ci", "fold_accuracy"}}}}}.
    """
    X, groups = _check(X, sensitive, groups, folds)
    if isinstance(classifiers, Mapping):
        probes = dict(classifiers)
    else:
        if isinstance(classifiers, str):
            classifiers = [classifiers]
        probes = {}
        for c in classifiers:
            name = c if isinstance(c, str) else type(c).__name__
            probes[name] = c
    if not probes:
        raise SynthfaceError("leakage: give at least one classifier")
    if not 0 < ci < 1:
        raise SynthfaceError(f"leakage: ci must be in (0, 1), got {ci}")
    lo_q, hi_q = 50 * (1 - ci), 50 * (1 + ci)

    out = {"n": int(len(X)), "identities": int(len(np.unique(groups))), "folds": int(folds), "seed": int(seed),
           "split": "StratifiedGroupKFold (identity-disjoint)", "ci": ci, "attributes": {}}
    for attr, labels in sensitive.items():
        labels = np.asarray(labels)
        if labels.shape != (len(X),):
            raise SynthfaceError(f"leakage: attribute {attr!r} must hold one label per embedding ({len(X)}), got "
                                 f"shape {labels.shape}")
        classes, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
        if len(classes) < 2:
            raise SynthfaceError(f"leakage: attribute {attr!r} has a single class ({classes.tolist()}); there is "
                                 f"nothing to predict")
        fold = identity_folds(codes, groups, folds, seed)
        res = {"classes": classes.tolist(), "counts": {str(c): int(k) for c, k in zip(classes, counts)},
               "chance": float(counts.max() / counts.sum()), "chance_balanced": 1.0 / len(classes),
               "classifiers": {}}
        for name, spec in probes.items():
            pred = np.empty(len(X), dtype=np.int64)
            fold_acc = []
            for f in range(folds):
                test = fold == f
                if not test.any():
                    continue
                train = ~test
                if len(np.unique(codes[train])) < 2:
                    raise SynthfaceError(f"leakage: a training fold for {attr!r} holds a single class; the "
                                         f"identities are too few or too unbalanced for {folds} folds")
                est = make_classifier(spec, seed, int(train.sum())) if isinstance(spec, str) else clone(spec)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    est.fit(X[train], codes[train])
                pred[test] = est.predict(X[test])
                fold_acc.append(float((pred[test] == codes[test]).mean()))
            correct = (pred == codes).astype(float)
            recalls = [correct[codes == c].mean() for c in range(len(classes))]
            acc_b, bal_b = _bootstrap(codes, correct, groups, len(classes), n_boot, np.random.default_rng(seed))
            res["classifiers"][name] = {
                "accuracy": float(correct.mean()),
                "accuracy_ci": [float(np.percentile(acc_b, lo_q)), float(np.percentile(acc_b, hi_q))],
                "balanced_accuracy": float(np.mean(recalls)),
                "balanced_accuracy_ci": [float(np.nanpercentile(bal_b, lo_q)), float(np.nanpercentile(bal_b, hi_q))],
                "fold_accuracy": fold_acc,
            }
        out["attributes"][str(attr)] = res
    return out


def leakage_markdown(result: dict, title: Optional[str] = None) -> str:
    """A markdown table of a leakage() result (one row per attribute and classifier)."""
    pct = 100 * result["ci"]
    lines = [f"## {title}" if title else "", "",
             f"{result['n']} embeddings of {result['identities']} identities, {result['folds']} identity-disjoint "
             f"folds, {pct:.0f} % bootstrap CI over identities.", "",
             "| attribute | classifier | accuracy | CI | balanced accuracy | CI | chance |",
             "|---|---|---|---|---|---|---|"]
    for attr, r in result["attributes"].items():
        for name, c in r["classifiers"].items():
            lines.append(f"| {attr} | {name} | {100 * c['accuracy']:.1f} % | {100 * c['accuracy_ci'][0]:.1f}-"
                         f"{100 * c['accuracy_ci'][1]:.1f} | {100 * c['balanced_accuracy']:.1f} % | "
                         f"{100 * c['balanced_accuracy_ci'][0]:.1f}-{100 * c['balanced_accuracy_ci'][1]:.1f} | "
                         f"{100 * r['chance_balanced']:.1f} % |")
    return "\n".join(lines).lstrip("\n") + "\n"
