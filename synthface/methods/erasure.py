"""Linear concept erasure baselines for the privacy experiments: LEACE and INLP.

* LEACE (Belrose et al., "LEACE: Perfect linear concept erasure in closed form", NeurIPS 2023): the
  least-squares edit of the embeddings after which no linear classifier predicts the concept better than a
  constant. With Sigma_XX the covariance of X, Sigma_XZ its cross-covariance with the one-hot concept Z,
  W = Sigma_XX^(-1/2) (whitening) and P the orthogonal projection onto the column space of W Sigma_XZ,
  the eraser is  x' = x - W^+ P W (x - mu).  Several attributes are erased at once by stacking their
  one-hot columns into Z.
* INLP (Ravfogel et al., "Null it out", ACL 2020): train a linear classifier per attribute, project the
  embeddings onto the nullspace of its weights, repeat until a classifier trained on one part of the
  training identities is at chance on the other part (or n_iterations is reached). The final map is the
  projection onto the intersection of all the nullspaces.

Both follow SensitiveNets' estimator API: fit(X, identity, sensitive), transform(X), get_params, save/load
(safetensors tensors + JSON metadata, read back through methods/method_io).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from ..errors import SynthfaceError
from ..fileio import atomic_write

LEACE_FORMAT = "synthface.methods.leace"
INLP_FORMAT = "synthface.methods.inlp"
FORMAT_VERSION = 1


def _as_matrix(X, what: str = "X") -> np.ndarray:
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise SynthfaceError(f"{what} must be a numeric (n, d) array of embeddings") from None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise SynthfaceError(f"{what} must be a non-empty (n, d) array of embeddings, got shape {X.shape}")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise SynthfaceError(f"{what} has {int(bad.sum())} rows with NaN or infinite values (first: row "
                             f"{int(np.argmax(bad))}); drop or recompute them")
    return X


def _codes(sensitive, n: int) -> tuple[dict, dict]:
    """{attribute: integer class codes}, {attribute: class labels} of a sensitive mapping, checked."""
    if not isinstance(sensitive, Mapping) or not sensitive:
        raise SynthfaceError('sensitive must be a non-empty mapping of attribute name to labels, '
                             'e.g. {"gender": [...], "group": [...]}')
    codes, classes = {}, {}
    for name, labels in sensitive.items():
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != n:
            raise SynthfaceError(f"sensitive attribute {name!r} must hold one label per embedding: {n} "
                                 f"embeddings, {name} of shape {labels.shape}")
        cls, c = np.unique(labels, return_inverse=True)
        if len(cls) < 2:
            raise SynthfaceError(f"sensitive attribute {name!r} has a single class ({cls.tolist()}); there is "
                                 f"nothing to erase, leave it out")
        codes[str(name)], classes[str(name)] = c.astype(np.int64), cls.tolist()
    return codes, classes


def _one_hot(codes: Mapping[str, np.ndarray], classes: Mapping[str, list]) -> np.ndarray:
    return np.concatenate([np.eye(len(classes[k]))[codes[k]] for k in codes], axis=1)


def _check_transform_input(est, X) -> np.ndarray:
    if not hasattr(est, "n_features_in_"):
        raise SynthfaceError(f"this {type(est).__name__} is not fitted yet: call fit(X, identity, sensitive) or "
                             f"{type(est).__name__}.load(path) first")
    X = _as_matrix(X)
    if X.shape[1] != est.n_features_in_:
        raise SynthfaceError(f"X has {X.shape[1]} features but this {type(est).__name__} was fitted on "
                             f"{est.n_features_in_}-d embeddings; use the same recogniser")
    return X


def _normalise_rows(X: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    if (norm == 0).any():
        raise SynthfaceError("X has all-zero rows, which have no direction to normalise; drop them")
    return X / norm


def _save(est, path, fmt: str, tensors: dict, extra: dict) -> Path:
    import torch
    from safetensors.torch import save as st_save

    meta = {"params": est.get_params(), "n_features_in": int(est.n_features_in_), "classes": est.classes_, **extra}
    blob = st_save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()},
                   metadata={"format": fmt, "version": str(FORMAT_VERSION), "config": json.dumps(meta)})
    return atomic_write(path, lambda f: f.write(blob))


def _load(cls, path, fmt: str, names: tuple) -> tuple:
    from .method_io import read_method_file

    meta, tensors = read_method_file(path, fmt, FORMAT_VERSION, cls.__name__)
    cfg = json.loads(meta["config"])
    missing = [k for k in names if k not in tensors]
    if missing:
        raise SynthfaceError(f"{path}: {cls.__name__} file lacks tensors {', '.join(missing)}")
    est = cls(**cfg["params"])
    est.n_features_in_ = int(cfg["n_features_in"])
    est.classes_ = cfg["classes"]
    return est, cfg, {k: tensors[k].numpy().astype(np.float64) for k in names}


class LEACE(BaseEstimator, TransformerMixin):
    """Closed-form least-squares concept erasure of one or several sensitive attributes.

    Parameters:
      ridge: added to the covariance's eigenvalues as ridge * (mean eigenvalue) before whitening. Embeddings
        of a recogniser often have a rank-deficient covariance (fewer images than dimensions, or a unit-norm
        constraint), where Sigma_XX^(-1/2) does not exist. The ridge keeps the guarantee exact: the erased
        data's cross-covariance with the concept is Sigma_XZ - W^+ P W Sigma_XZ = 0 for any invertible W,
        because P leaves W Sigma_XZ unchanged; it only changes which (oblique) direction is removed, away
        from the least-squares optimum by O(ridge).
      normalize_input: L2-normalise each embedding first (as SensitiveNets and the verification scores do).
      tol: singular values of W Sigma_XZ below tol x the largest are treated as zero (rank of P).
    The output is not re-normalised: the guarantee holds for the erased vectors themselves (cosine scores
    are unaffected by scale).
    """

    def __init__(self, ridge: float = 1e-6, normalize_input: bool = True, tol: float = 1e-8):
        self.ridge = ridge
        self.normalize_input = normalize_input
        self.tol = tol

    def _check_params(self) -> None:
        for name in ("ridge", "tol"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v) or v < 0:
                raise SynthfaceError(f"LEACE {name} must be a finite number >= 0, got {v!r}")

    def fit(self, X, identity=None, sensitive: Optional[Mapping] = None, log=None):
        """X: (n, d); identity: unused (accepted for the common API); sensitive: {name: (n,) labels}."""
        self._check_params()
        X = _as_matrix(X)
        if self.normalize_input:
            X = _normalise_rows(X)
        codes, classes = _codes(sensitive, len(X))
        Z = _one_hot(codes, classes)
        self.mean_ = X.mean(0)
        Xc, Zc = X - self.mean_, Z - Z.mean(0)
        sigma_xx = Xc.T @ Xc / len(X)
        sigma_xz = Xc.T @ Zc / len(X)
        evals, evecs = np.linalg.eigh(sigma_xx)
        evals = np.clip(evals, 0.0, None) + float(self.ridge) * max(float(evals.mean()), 1e-12)
        whiten = (evecs / np.sqrt(evals)) @ evecs.T      # W = Sigma^(-1/2)
        unwhiten = (evecs * np.sqrt(evals)) @ evecs.T    # W^+ = Sigma^(1/2) (W is invertible with the ridge)
        u, s, _ = np.linalg.svd(whiten @ sigma_xz, full_matrices=False)
        rank = int((s > self.tol * max(float(s.max()), 1e-300)).sum())
        basis = u[:, :rank]
        # x' = x - W^+ P W (x - mu); rows: x' = x - (x - mu) @ (W^+ P W)^T
        self.eraser_ = (unwhiten @ basis @ basis.T @ whiten).T
        self.rank_ = rank
        self.n_features_in_ = X.shape[1]
        self.classes_ = classes
        return self

    def transform(self, X) -> np.ndarray:
        X = _check_transform_input(self, X)
        if self.normalize_input:
            X = _normalise_rows(X)
        return (X - (X - self.mean_) @ self.eraser_).astype(np.float32)

    def save(self, path) -> Path:
        return _save(self, path, LEACE_FORMAT, {"mean": self.mean_, "eraser": self.eraser_}, {"rank": self.rank_})

    @classmethod
    def load(cls, path) -> "LEACE":
        est, cfg, t = _load(cls, path, LEACE_FORMAT, ("mean", "eraser"))
        est.mean_, est.eraser_, est.rank_ = t["mean"], t["eraser"], int(cfg["rank"])
        return est


class INLP(BaseEstimator, TransformerMixin):
    """Iterative nullspace projection against linear classifiers of the sensitive attributes.

    Parameters:
      n_iterations: most rounds; each round trains one logistic regression per attribute and removes the
        span of the weights of those above chance; it stops when none is.
      tol: an attribute counts as at chance when its classifier's accuracy on the held-out identities is at
        most (majority-class share of the held-out part) + tol.
      held_out: share of the training identities the stopping rule is scored on (identity-disjoint when
        identities are given to fit, otherwise a random share of rows).
      C: inverse regularisation of the logistic regressions (on embeddings rescaled to unit variance per
        feature on average, an isotropic scale that keeps weight directions).
      normalize_input, seed: as LEACE; seed of the held-out split.
    """

    def __init__(self, n_iterations: int = 10, tol: float = 0.01, held_out: float = 0.2, C: float = 1.0,
                 normalize_input: bool = True, seed: int = 0):
        self.n_iterations = n_iterations
        self.tol = tol
        self.held_out = held_out
        self.C = C
        self.normalize_input = normalize_input
        self.seed = seed

    def _check_params(self) -> None:
        if not isinstance(self.n_iterations, (int, np.integer)) or self.n_iterations < 1:
            raise SynthfaceError(f"INLP n_iterations must be a positive integer, got {self.n_iterations!r}")
        if not 0 < float(self.held_out) < 1:
            raise SynthfaceError(f"INLP held_out must be a share in (0, 1), got {self.held_out!r}")
        if not float(self.C) > 0 or not math.isfinite(float(self.C)):
            raise SynthfaceError(f"INLP C must be a finite number > 0, got {self.C!r}")
        if not float(self.tol) >= 0:
            raise SynthfaceError(f"INLP tol must be >= 0, got {self.tol!r}")

    def _split(self, n: int, identity) -> np.ndarray:
        """Boolean mask of the held-out rows."""
        rng = np.random.default_rng(self.seed)
        if identity is None:
            return rng.permutation(n) < max(1, int(round(self.held_out * n)))
        identity = np.asarray(identity)
        if identity.shape != (n,):
            raise SynthfaceError(f"identity must hold one label per embedding: {n} embeddings, identity of "
                                 f"shape {identity.shape}")
        ids = np.unique(identity)
        if len(ids) < 2:
            raise SynthfaceError("INLP needs at least two identities to hold some out for its stopping rule")
        held = rng.permutation(ids)[: max(1, int(round(self.held_out * len(ids))))]
        return np.isin(identity, held)

    def _round(self, Xp, codes, names, held) -> tuple[list, dict]:
        """One INLP round on projected data Xp: the weight rows of each named attribute's classifier and its
        held-out accuracy minus the held-out majority share."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.exceptions import ConvergenceWarning

        rows, margin = [], {}
        scale = 1.0 / max(float(Xp[~held].std()), 1e-12)
        for name in names:
            y = codes[name]
            clf = LogisticRegression(C=float(self.C), max_iter=2000)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(Xp[~held] * scale, y[~held])
            acc = float((clf.predict(Xp[held] * scale) == y[held]).mean())
            margin[name] = acc - float(np.bincount(y[held]).max() / held.sum())
            rows.append(clf.coef_)
        return rows, margin

    def fit(self, X, identity=None, sensitive: Optional[Mapping] = None, log=None):
        """X: (n, d); identity: (n,) labels for an identity-disjoint held-out split (or None); sensitive:
        {name: (n,) labels}. `log` gets one line per round."""
        self._check_params()
        X = _as_matrix(X)
        if self.normalize_input:
            X = _normalise_rows(X)
        codes, classes = _codes(sensitive, len(X))
        held = self._split(len(X), identity)
        if held.all() or not held.any():
            raise SynthfaceError("INLP's held-out split left no rows on one side; give more identities")
        d = X.shape[1]
        self.mean_ = X.mean(0)
        Xc = X - self.mean_
        basis = np.zeros((d, 0))
        projection = np.eye(d)
        self.history_ = []
        for it in range(int(self.n_iterations)):
            rows, margin = self._round(Xc @ projection, codes, list(codes), held)
            self.history_.append({"iteration": it + 1, "above_chance": margin})
            if log is not None:
                log(f"INLP round {it + 1}: held-out accuracy - majority " +
                    ", ".join(f"{k} {v:+.3f}" for k, v in margin.items()))
            # Every attribute is re-checked each round: one at chance now may show again once another's
            # directions are gone (a small held-out part reads chance by luck).
            rows = [r for r, k in zip(rows, list(margin)) if margin[k] > self.tol]
            if not rows:
                break
            # Each classifier's weights live in the current nullspace, so span(basis, w) grows; the final
            # map projects onto the complement of everything removed (the intersection of the nullspaces).
            W = np.concatenate(rows, axis=0) @ projection
            q, s, _ = np.linalg.svd(np.concatenate([basis, W.T], axis=1), full_matrices=False)
            basis = q[:, s > 1e-10 * s.max()]
            projection = np.eye(d) - basis @ basis.T
        self.projection_ = projection
        self.n_removed_ = int(basis.shape[1])
        self.n_features_in_ = d
        self.classes_ = classes
        return self

    def transform(self, X) -> np.ndarray:
        X = _check_transform_input(self, X)
        if self.normalize_input:
            X = _normalise_rows(X)
        return (self.mean_ + (X - self.mean_) @ self.projection_).astype(np.float32)

    def save(self, path) -> Path:
        return _save(self, path, INLP_FORMAT, {"mean": self.mean_, "projection": self.projection_},
                     {"n_removed": self.n_removed_, "history": getattr(self, "history_", [])})

    @classmethod
    def load(cls, path) -> "INLP":
        est, cfg, t = _load(cls, path, INLP_FORMAT, ("mean", "projection"))
        est.mean_, est.projection_ = t["mean"], t["projection"]
        est.n_removed_, est.history_ = int(cfg["n_removed"]), cfg.get("history", [])
        return est
