"""DemographicLatentModel: a supervised linear projection of W with a density per demographic cell.

fit: keep the bank's confidently labelled latents, learn a projection s = w A - b that separates
the joint cells (LDA by default; InterFaceGAN-style linear-SVM normals, or PCA then LDA), and fit
one Gaussian (or a Gaussian mixture) per cell in that low-dimensional subspace.

sample: draw s from the requested cell's density and lift it to W by replacing the projected
component of a prior sample w0 (a fresh z through the mapping network):

    w = w0 + (s - s0) K^T,   s0 = w0 A - b,   K = Sigma A (A^T Sigma A)^-1

with Sigma the covariance of W. Then w A - b = s exactly, and for Gaussian W the part of w0 that
K leaves alone is independent of s0: w is a draw from the prior conditioned on the projection,
so everything the projection does not encode (identity, pose, background...) keeps the prior's
diversity. This holds when the projection captures all of the cell information, which LDA's
discriminant subspace does for Gaussian cells with a shared covariance; InterFaceGAN-style
one-vs-rest SVM normals and LDA after a PCA cut capture part of it, so some of the prior
sample's own cell leaks through (tests/test_latent_model.py measures this). LDA is the default.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from ..errors import SynthfaceError
from .cells import all_cells, cell_name, label_cells, spec_name

MODEL_VERSION = 1
PROJECTIONS = ("lda", "svm", "pca-lda")
DENSITIES = ("gaussian", "gmm")


class DemographicLatentModel:
    """Configuration in the constructor; `fit` learns the attributes ending in `_`."""

    def __init__(self, attributes: Optional[Sequence[str]] = None, confidence: float = 0.9, projection: str = "lda",
                 n_components: Optional[int] = None, density: str = "gaussian", gmm_components: int = 3,
                 shrinkage="auto", min_count: int = 30, holdout: float = 0.2, pca_dims: int = 64,
                 random_state: int = 0):
        self.attributes = list(attributes) if attributes is not None else None
        self.confidence = confidence
        self.projection = projection
        self.n_components = n_components
        self.density = density
        self.gmm_components = gmm_components
        self.shrinkage = shrinkage
        self.min_count = min_count
        self.holdout = holdout
        self.pca_dims = pca_dims
        self.random_state = random_state

    _PARAMS = ("attributes", "confidence", "projection", "n_components", "density", "gmm_components", "shrinkage",
               "min_count", "holdout", "pca_dims", "random_state")

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's configuration (scikit-learn's convention; `deep` is accepted and ignored)."""
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params) -> "DemographicLatentModel":
        """Change configuration; an unknown name is an error. Fitted state is kept until the next fit."""
        unknown = sorted(set(params) - set(self._PARAMS))
        if unknown:
            raise SynthfaceError(f"DemographicLatentModel has no parameter {', '.join(unknown)}; it has "
                                 f"{', '.join(self._PARAMS)}")
        for k, v in params.items():
            setattr(self, k, list(v) if k == "attributes" and v is not None else v)
        return self

    # ------------------------------------------------------------------ fit

    def fit_bank(self, bank) -> "DemographicLatentModel":
        W, _, probs = bank.load(self.attributes)
        return self.fit(W, probs, bank.schema, source=bank.meta)

    def fit(self, W, probs: Mapping[str, np.ndarray], schema: Mapping[str, Sequence[str]],
            source: Optional[dict] = None) -> "DemographicLatentModel":
        self._check_config()
        W = np.asarray(W, np.float64)
        if W.ndim != 2:
            raise SynthfaceError(f"W must be [N, w_dim], got shape {W.shape}")
        attributes = self.attributes or list(schema)
        for a in attributes:
            if a not in schema or a not in probs:
                raise SynthfaceError(f"unknown attribute {a!r}: the labels have {', '.join(schema)}")
            if len(probs[a]) != len(W):
                raise SynthfaceError(f"{a!r} has {len(probs[a])} labels for {len(W)} latents")
        if not np.isfinite(W).all() or not all(np.isfinite(np.asarray(probs[a])).all() for a in attributes):
            raise SynthfaceError("the latents or labels contain NaN or inf; check the generator and labeller output")
        self.attributes_ = list(attributes)
        self.schema_ = {a: list(schema[a]) for a in attributes}
        self.cells_ = all_cells(self.schema_, self.attributes_)
        idx, conf = label_cells(probs, self.attributes_, self.confidence)
        confident = conf.all(1)
        dims = [len(self.schema_[a]) for a in self.attributes_]
        cell_of = np.ravel_multi_index(tuple(idx.T), dims)
        self.counts_ = np.bincount(cell_of[confident], minlength=len(self.cells_))
        self.fitted_ = self.counts_ >= self.min_count
        too_small = [cell_name(self.attributes_, c) for c, ok in zip(self.cells_, self.fitted_) if not ok]
        if self.fitted_.sum() < 2:
            raise SynthfaceError(
                f"only {int(self.fitted_.sum())} cell(s) have at least {self.min_count} confident samples "
                f"(counts: {self._count_text()}); label a larger bank, lower --confidence or --min-count")
        if too_small:
            warnings.warn(f"cells with fewer than {self.min_count} confident samples are not fitted and cannot be "
                          f"sampled: {'; '.join(too_small)}", stacklevel=2)
        rows = np.flatnonzero(confident & self.fitted_[cell_of])
        X, y = W[rows], cell_of[rows]
        # Held-out check: refit on a split and classify the rest by cell likelihood.
        rng = np.random.default_rng(self.random_state)
        perm = rng.permutation(len(rows))
        n_test = int(round(self.holdout * len(rows)))
        holdout = None
        if n_test > 0:
            test, train = perm[:n_test], perm[n_test:]
            A, b, comps = self._fit_core(X[train], y[train])
            pred = self._classify(X[test] @ A - b, comps, np.bincount(y[train], minlength=len(self.cells_)))
            holdout = {"samples": int(n_test), "accuracy": float((pred == y[test]).mean()),
                       "per_cell_recall": {cell_name(self.attributes_, self.cells_[c]):
                                           float((pred[y[test] == c] == c).mean())
                                           for c in np.unique(y[test])}}
        self.A_, self.b_, comps = self._fit_core(X, y)
        self.weights_, self.means_, self.covs_ = comps
        # The prior's covariance over every bank latent (not only the confident ones).
        self.w_mean_ = W.mean(0)
        sigma = np.cov(W, rowvar=False) + 1e-6 * np.eye(W.shape[1])
        SA = sigma @ self.A_
        self.K_ = SA @ np.linalg.inv(self.A_.T @ SA)
        self.w_dim_ = W.shape[1]
        src = source or {}
        self.generator_hash_ = src.get("generator_hash")
        self.truncation_psi_ = float(src.get("truncation_psi", 1.0))
        self.noise_mode_ = src.get("noise_mode", "const")
        self.source_ = {k: src[k] for k in ("generator_hash", "seed", "truncation_psi", "noise_mode", "labeller", "n")
                        if k in src}
        self.report_ = {
            "bank_size": int(len(W)), "confident_samples": int(confident.sum()),
            "confident_fraction": float(confident.mean()), "confidence_threshold": self.confidence,
            "projection": self.projection, "n_components": int(self.A_.shape[1]), "density": self.density,
            "cells": {cell_name(self.attributes_, c): {"confident_count": int(n), "fitted": bool(ok)}
                      for c, n, ok in zip(self.cells_, self.counts_, self.fitted_)},
            "too_small": too_small, "holdout": holdout,
        }
        return self

    def _check_config(self):
        if self.projection not in PROJECTIONS:
            raise SynthfaceError(f"projection must be one of {', '.join(PROJECTIONS)}, got {self.projection!r}")
        if self.density not in DENSITIES:
            raise SynthfaceError(f"density must be one of {', '.join(DENSITIES)}, got {self.density!r}")
        if not 0 < self.confidence <= 1:
            raise SynthfaceError("confidence must be in (0, 1]")
        if not 0 <= self.holdout < 1:
            raise SynthfaceError("holdout must be in [0, 1)")

    def _count_text(self) -> str:
        return "; ".join(f"{cell_name(self.attributes_, c)}: {int(n)}" for c, n in zip(self.cells_, self.counts_))

    def _fit_core(self, X: np.ndarray, y: np.ndarray):
        A = self._fit_projection(X, y)
        b = X.mean(0) @ A
        return A, b, self._fit_densities(X @ A - b, y, len(self.cells_))

    def _fit_projection(self, X, y) -> np.ndarray:
        from sklearn.decomposition import PCA
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        from sklearn.svm import LinearSVC

        n_cells = len(np.unique(y))
        if self.projection in ("lda", "pca-lda"):
            k = min(self.n_components or n_cells - 1, n_cells - 1)
            base = np.eye(X.shape[1])
            if self.projection == "pca-lda":
                pca = PCA(n_components=min(self.pca_dims, X.shape[1], len(X) - 1), random_state=self.random_state)
                pca.fit(X)
                base = pca.components_.T
            # Shrinking the within-class covariance biases the discriminant directions, and then the
            # lift leaves cell information in the complement; only do it when W is too short of samples.
            Xb = X @ base
            shrink = "auto" if len(Xb) < 5 * Xb.shape[1] else None
            lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrink)
            lda.fit(Xb, y)
            return base @ lda.scalings_[:, :k]
        # InterFaceGAN: one linear-SVM normal per attribute class (one per binary attribute), orthonormalised.
        idx = np.stack(np.unravel_index(y, [len(self.schema_[a]) for a in self.attributes_]), 1)
        normals = []
        Xs = (X - X.mean(0)) / X.std(0).clip(1e-8)
        for j, _ in enumerate(self.attributes_):
            labels = idx[:, j]
            if len(np.unique(labels)) < 2:
                continue
            svm = LinearSVC(C=1.0, dual=False, random_state=self.random_state).fit(Xs, labels)
            coef = svm.coef_ / X.std(0).clip(1e-8)  # back to the unstandardised W coordinates
            normals.extend(coef / np.linalg.norm(coef, axis=1, keepdims=True))
        Q, R = np.linalg.qr(np.array(normals).T)
        keep = np.abs(np.diag(R)) > 1e-6
        Q = Q[:, keep]
        return Q[:, :self.n_components] if self.n_components else Q

    def _fit_densities(self, S, y, n_cells):
        from sklearn.covariance import LedoitWolf
        from sklearn.mixture import GaussianMixture

        k = S.shape[1]
        m = self.gmm_components if self.density == "gmm" else 1
        weights = np.zeros((n_cells, m))
        means = np.zeros((n_cells, m, k))
        covs = np.tile(np.eye(k), (n_cells, m, 1, 1))
        for c in np.unique(y):
            Sc = S[y == c]
            if self.density == "gaussian":
                weights[c, 0] = 1.0
                means[c, 0] = Sc.mean(0)
                covs[c, 0] = self._covariance(Sc, LedoitWolf)
            else:
                mc = max(1, min(m, len(Sc) // (4 * (k + 1))))
                gmm = GaussianMixture(mc, covariance_type="full", reg_covar=1e-6, random_state=self.random_state)
                gmm.fit(Sc)
                weights[c, :mc], means[c, :mc], covs[c, :mc] = gmm.weights_, gmm.means_, gmm.covariances_
        return weights, means, covs

    def _covariance(self, Sc, LedoitWolf):
        if len(Sc) < 2:
            return np.eye(Sc.shape[1])
        if self.shrinkage == "auto":
            return LedoitWolf().fit(Sc).covariance_
        emp = np.cov(Sc, rowvar=False).reshape(Sc.shape[1], Sc.shape[1])
        a = float(self.shrinkage or 0.0)
        return (1 - a) * emp + a * np.trace(emp) / len(emp) * np.eye(len(emp))

    @staticmethod
    def _log_density(S, weights, means, covs) -> np.ndarray:
        """log sum_j w_j N(S; mu_j, C_j) for one cell, S [N, k]."""
        k = S.shape[1]
        out = np.full((len(S), len(weights)), -np.inf)
        for j, (w, mu, C) in enumerate(zip(weights, means, covs)):
            if w <= 0:
                continue
            L = np.linalg.cholesky(C)
            z = np.linalg.solve(L, (S - mu).T)
            out[:, j] = np.log(w) - 0.5 * (z ** 2).sum(0) - np.log(np.diag(L)).sum() - 0.5 * k * np.log(2 * np.pi)
        mx = out.max(1, keepdims=True)
        return (mx + np.log(np.exp(out - mx).sum(1, keepdims=True)))[:, 0]

    def _classify(self, S, comps, counts) -> np.ndarray:
        weights, means, covs = comps
        ll = np.full((len(S), len(weights)), -np.inf)
        for c in range(len(weights)):
            if counts[c] > 0 and weights[c].sum() > 0:
                ll[:, c] = self._log_density(S, weights[c], means[c], covs[c]) + np.log(counts[c])
        return ll.argmax(1)

    # ------------------------------------------------------------------ use

    def _fitted(self):
        if not hasattr(self, "A_"):
            raise SynthfaceError("the model is not fitted: call fit() or load() first")

    def project(self, W) -> np.ndarray:
        self._fitted()
        return np.asarray(W, np.float64) @ self.A_ - self.b_

    def lift(self, S, W_prior) -> np.ndarray:
        """Replace the projected component of W_prior with S (see the module docstring)."""
        self._fitted()
        W_prior = np.asarray(W_prior, np.float64)
        return W_prior + (np.asarray(S, np.float64) - self.project(W_prior)) @ self.K_.T

    def predict_cell(self, W) -> np.ndarray:
        """Most likely cell index (into cells_) of each latent, from its projection."""
        self._fitted()
        return self._classify(self.project(W), (self.weights_, self.means_, self.covs_),
                              np.where(self.fitted_, self.counts_, 0))

    def matching_cells(self, spec: Mapping[str, str]) -> list[int]:
        """Indices of the fitted full cells inside the (possibly partial) cell spec."""
        self._fitted()
        for a, c in spec.items():
            if a not in self.schema_:
                raise SynthfaceError(f"unknown attribute {a!r}; the model knows {', '.join(self.attributes_)}")
            if c not in self.schema_[a]:
                raise SynthfaceError(f"unknown class {c!r} for {a!r}; classes: {', '.join(self.schema_[a])}")
        inside = [i for i, cell in enumerate(self.cells_)
                  if all(cell[self.attributes_.index(a)] == c for a, c in spec.items())]
        fitted = [i for i in inside if self.fitted_[i]]
        if not fitted:
            raise SynthfaceError(
                f"cell {spec_name(spec)} cannot be sampled: it had "
                f"{', '.join(str(int(self.counts_[i])) for i in inside)} confident bank samples, fewer than "
                f"min_count={self.min_count}; label a larger bank or refit with a lower --min-count/--confidence")
        missing = [cell_name(self.attributes_, self.cells_[i]) for i in inside if not self.fitted_[i]]
        if missing:
            warnings.warn(f"{spec_name(spec)}: sub-cells {'; '.join(missing)} are too small and are left out",
                          stacklevel=2)
        return fitted

    def sample_projection(self, spec: Mapping[str, str], n: int, rng: np.random.Generator,
                          truncation: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(S [n, k], full-cell index [n]): a partial cell is balanced over its full cells."""
        cells = np.asarray(self.matching_cells(spec))
        which = cells[rng.integers(0, len(cells), n)]
        S = np.zeros((n, self.A_.shape[1]))
        for c in np.unique(which):
            rows = np.flatnonzero(which == c)
            w = self.weights_[c] / self.weights_[c].sum()
            comp = rng.choice(len(w), size=len(rows), p=w)
            eps = rng.standard_normal((len(rows), S.shape[1]))
            L = np.linalg.cholesky(self.covs_[c])  # [m, k, k]
            s = self.means_[c][comp] + np.einsum("nij,nj->ni", L[comp], eps)
            centre = w @ self.means_[c]
            S[rows] = centre + truncation * (s - centre)
        return S, which

    def sample(self, spec: Mapping[str, str], n: int, prior_w, seed: int = 0, truncation: float = 1.0):
        """Latents for a cell: (W [n, w_dim] float32, full-cell index [n]). `prior_w` [n, w_dim]
        are prior samples (see synthface.latent.sampling.prior_latents for drawing them from G)."""
        prior_w = np.asarray(prior_w, np.float64)
        if prior_w.shape != (n, self.w_dim_):
            raise SynthfaceError(f"prior_w must have shape ({n}, {self.w_dim_}), got {prior_w.shape}")
        S, which = self.sample_projection(spec, n, np.random.default_rng(seed), truncation)
        return self.lift(S, prior_w).astype(np.float32), which

    # ------------------------------------------------------------------ save / load

    def save(self, path) -> Path:
        from safetensors.numpy import save as save_bytes

        from ..fileio import atomic_write
        self._fitted()
        tensors = {"A": self.A_, "b": self.b_, "K": self.K_, "w_mean": self.w_mean_, "weights": self.weights_,
                   "means": self.means_, "covs": self.covs_, "counts": self.counts_.astype(np.int64),
                   "fitted": self.fitted_.astype(np.int64)}
        meta = {"format": "synthface-latent-model", "version": MODEL_VERSION, "params": self.get_params(),
                "attributes": self.attributes_, "schema": self.schema_, "cells": [list(c) for c in self.cells_],
                "generator_hash": self.generator_hash_, "truncation_psi": self.truncation_psi_,
                "noise_mode": self.noise_mode_, "source": self.source_, "report": self.report_}
        bad = [k for k, v in tensors.items() if np.asarray(v).dtype.kind == "f" and not np.isfinite(v).all()]
        if bad:  # a fit on degenerate input: refuse before the file exists rather than sample garbage later
            raise SynthfaceError(f"the fitted latent model holds NaN or inf in {', '.join(bad)}; nothing was written "
                                 f"to {path}; check the bank (synthface fit reads it) and the --shrinkage setting")
        data = save_bytes({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                          metadata={"synthface": json.dumps(meta)})
        path = Path(path)
        atomic_write(path, lambda f: f.write(data))
        return path

    @classmethod
    def load(cls, path) -> "DemographicLatentModel":
        from safetensors import SafetensorError, safe_open
        from safetensors.numpy import load_file

        path = Path(path)
        if not path.is_file():
            raise SynthfaceError(f"latent model {path} does not exist; make one with `synthface fit`")
        try:
            with safe_open(str(path), "np") as f:
                meta = json.loads((f.metadata() or {}).get("synthface", "null"))
            t = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise SynthfaceError(f"{path} is not a synthface latent model ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != "synthface-latent-model":
            raise SynthfaceError(f"{path} is not a synthface latent model (made by `synthface fit`)")
        if meta.get("version") != MODEL_VERSION:
            raise SynthfaceError(f"{path}: latent-model version {meta.get('version')} is not supported "
                                 f"(this synthface reads version {MODEL_VERSION}); refit it with `synthface fit`")
        m = cls(**meta["params"])
        m.attributes_, m.schema_ = meta["attributes"], meta["schema"]
        m.cells_ = [tuple(c) for c in meta["cells"]]
        m.A_, m.b_, m.K_, m.w_mean_ = t["A"], t["b"], t["K"], t["w_mean"]
        m.weights_, m.means_, m.covs_ = t["weights"], t["means"], t["covs"]
        m.counts_, m.fitted_ = t["counts"], t["fitted"].astype(bool)
        m.w_dim_ = int(m.A_.shape[0])
        m.generator_hash_, m.truncation_psi_ = meta["generator_hash"], float(meta["truncation_psi"])
        m.noise_mode_, m.source_, m.report_ = meta["noise_mode"], meta["source"], meta["report"]
        return m
