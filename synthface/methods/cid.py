"""CID: conditional inverse density sample weights (Qi & Ardeshir, "Improving Identity-Robustness
for Face Models", 2023); specification in shared/docs/fairness-methods.md section 2.

Within each task class c, the density of sample i in a face-recognition embedding space (a proxy
for identity) is estimated with a Gaussian kernel

    p_i = (1/|S_c|) * sum_{j in S_c} exp(-||x_i - x_j||^2 / (2 h_c^2))

including the sample's own term, so that with a small bandwidth a person with m near-duplicate
images has density ~ m/|S_c| and each of those images gets 1/m of a singleton's weight: CID then
reduces to inverse identity frequency without identity labels. The weight is p_i^-gamma, clipped
to `max_ratio` times the class's smallest weight and renormalised to mean 1 within the class.

The computation is exact (no neighbour truncation, no approximate search): in 512-d, kernels at
the median k-th-neighbour bandwidth are far from negligible for most pairs, so pruning (trees,
radius search) buys nothing and the cost is one dense pass over the pairs. It runs as blocked
matrix products over the symmetric half of the distance matrix, in float64 by default.
"""

from __future__ import annotations

import json
import math
from numbers import Real
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import torch

from ..errors import SynthfaceError

FORMAT = "synthface-cid-weights"
FORMAT_VERSION = 1
ESTIMATORS = ("kde", "knn")
NORMALIZE = ("per_class", "global")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
# elements of one block of the distance matrix (64 MiB in float64): bounds memory whatever n is
_BLOCK_ELEMENTS = 8 * 1024 * 1024
# in leave-one-out mode, a row whose kernel sum falls below this is recomputed in the log domain
_TINY = 1e-250


class CIDWeights:
    """Per-sample conditional inverse density weights; scikit-learn style.

    Parameters (configuration only; `fit` sets the attributes ending in `_`):
      estimator: "kde" (Gaussian kernel density, default) or "knn" (p ~ 1 / distance to the k-th
        same-class neighbour, so the weight is r_k^gamma).
      k: the neighbour rank of the default bandwidth and of the knn estimator.
      bandwidth: None (per class: median distance to the k-th same-class neighbour), a positive
        float for every class, or a mapping {class label: float}.
      gamma: temperature; weight = density^-gamma (0 gives uniform weights).
      max_ratio: clip each weight to max_ratio times its class's smallest weight (None: no clip).
      normalize: "per_class" (mean weight 1 in each class: class priors unchanged) or "global"
        (one scale for all, mean 1 overall; class totals then follow the raw densities, which are
        comparable across classes only when they share a bandwidth).
      leave_one_out: drop the sample's own kernel term (divide by |S_c| - 1); an isolated sample's
        density then tends to 0 and the clip alone bounds its weight.
      bandwidth_queries: the median k-th-neighbour distance is taken over at most this many
        samples of a class (a seeded random subset; None: all). Weights are exact given the
        bandwidth, which `bandwidth_` records.
      block_size: rows per block of the distance matrix (None: sized to ~64 MiB per block).
      dtype: "float64" (default; weights exact to ~1e-12) or "float32" (faster matrix products).
      device: torch device for the blocked products ("cpu", "cuda").
      random_state: seed of the bandwidth subset.
    """

    def __init__(self, estimator: str = "kde", k: int = 10, bandwidth=None, gamma: float = 1.0,
                 max_ratio: Optional[float] = 10.0, normalize: str = "per_class", leave_one_out: bool = False,
                 bandwidth_queries: Optional[int] = 5000, block_size: Optional[int] = None, dtype: str = "float64",
                 device: str = "cpu", random_state: int = 0):
        self.estimator = estimator
        self.k = k
        self.bandwidth = bandwidth
        self.gamma = gamma
        self.max_ratio = max_ratio
        self.normalize = normalize
        self.leave_one_out = leave_one_out
        self.bandwidth_queries = bandwidth_queries
        self.block_size = block_size
        self.dtype = dtype
        self.device = device
        self.random_state = random_state

    _PARAMS = ("estimator", "k", "bandwidth", "gamma", "max_ratio", "normalize", "leave_one_out",
               "bandwidth_queries", "block_size", "dtype", "device", "random_state")

    def get_params(self, deep: bool = True) -> dict:
        return {name: getattr(self, name) for name in self._PARAMS}

    def set_params(self, **params) -> "CIDWeights":
        for name, value in params.items():
            if name not in self._PARAMS:
                raise SynthfaceError(f"CIDWeights has no parameter {name!r}; valid ones: {', '.join(self._PARAMS)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = CIDWeights()
        changed = [f"{n}={getattr(self, n)!r}" for n in self._PARAMS if getattr(self, n) != getattr(defaults, n)]
        return f"CIDWeights({', '.join(changed)})"

    # ------------------------------------------------------------------ fit

    def fit(self, X, y) -> "CIDWeights":
        """X: [n, d] embeddings (L2-normalised recogniser outputs, as given); y: [n] task labels."""
        self._check_params()
        X, y = _check_inputs(X, y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        codes = codes.reshape(-1)
        n = len(y)
        log_w = np.empty(n)
        self.log_density_ = np.empty(n)
        self.bandwidth_ = np.full(len(self.classes_), np.nan)
        self.clipped_ = np.zeros(n, bool)
        self.class_counts_ = np.bincount(codes, minlength=len(self.classes_))
        dtype, device = DTYPES[self.dtype], torch.device(self.device)
        rng = np.random.default_rng(self.random_state)
        for c, label in enumerate(self.classes_):
            rows = np.flatnonzero(codes == c)
            # centring leaves distances unchanged and shrinks |x|^2, so that |a|^2 + |b|^2 - 2ab cancels less
            Xc = X[rows] - X[rows].mean(axis=0)
            Xc = torch.from_numpy(Xc).to(device=device, dtype=dtype)
            log_p = self._class_log_density(Xc, label, c, rng)
            self.log_density_[rows] = log_p
            lw = -float(self.gamma) * log_p if self.gamma else np.zeros(len(rows))
            if self.max_ratio is not None:
                cap = lw.min() + math.log(self.max_ratio)
                self.clipped_[rows] = lw > cap
                lw = np.minimum(lw, cap)
            log_w[rows] = lw
        self.weights_ = _normalise(log_w, codes, len(self.classes_), self.normalize)
        self.codes_ = codes
        self.n_features_in_ = X.shape[1]
        return self

    def fit_transform(self, X, y) -> np.ndarray:
        return self.fit(X, y).weights_

    def _class_log_density(self, Xc: torch.Tensor, label, c: int, rng) -> np.ndarray:
        n = Xc.shape[0]
        needs_k = self.estimator == "knn" or self._class_bandwidth(label) is None
        if needs_k and n < self.k + 1:
            raise SynthfaceError(
                f"class {_plain(label)!r} has {n} sample(s); CID needs at least k + 1 = {self.k + 1} per class to find the "
                f"k-th neighbour: lower k, give a bandwidth, or drop or merge that class")
        if self.leave_one_out and n < 2:
            raise SynthfaceError(f"class {_plain(label)!r} has a single sample; leave_one_out needs at least 2 per class")
        if self.estimator == "knn":
            r = _kth_distances(Xc, self.k, np.arange(n), self.block_size)
            if (r <= 0).any():
                raise SynthfaceError(
                    f"class {_plain(label)!r}: {int((r <= 0).sum())} sample(s) have at least k = {self.k} exact duplicates "
                    f"(k-th neighbour distance 0), so the knn density is infinite; remove duplicate embeddings, "
                    f"raise k, or use estimator='kde'")
            return -np.log(r)
        h = self._class_bandwidth(label)
        if h is None:
            queries = np.arange(n)
            if self.bandwidth_queries is not None and n > self.bandwidth_queries:
                queries = np.sort(rng.choice(n, int(self.bandwidth_queries), replace=False))
            h = float(np.median(_kth_distances(Xc, self.k, queries, self.block_size)))
            if not h > 0:
                raise SynthfaceError(
                    f"class {_plain(label)!r}: the median distance to the {self.k}-th neighbour is 0 (most embeddings of the "
                    f"class are identical), so the default bandwidth is 0; check the embeddings or pass bandwidth=")
        self.bandwidth_[c] = h
        return _kde_log_density(Xc, h, self.leave_one_out, self.block_size)

    def _class_bandwidth(self, label) -> Optional[float]:
        if isinstance(self.bandwidth, Mapping):
            h = self.bandwidth.get(_plain(label), self.bandwidth.get(label))
            if h is None:
                raise SynthfaceError(f"bandwidth has no entry for class {_plain(label)!r}; give one per class "
                                     f"(classes: {[_plain(v) for v in self.classes_]})")
            if not (isinstance(h, Real) and math.isfinite(h) and h > 0):
                raise SynthfaceError(f"bandwidth for class {_plain(label)!r} is {h!r}; give a positive number")
            return float(h)
        return None if self.bandwidth is None else float(self.bandwidth)

    def _check_params(self):
        if self.estimator not in ESTIMATORS:
            raise SynthfaceError(f"estimator={self.estimator!r}; use one of {', '.join(ESTIMATORS)}")
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise SynthfaceError(f"k={self.k!r}; give a positive integer (the neighbour rank, default 10)")
        if not (self.bandwidth is None or isinstance(self.bandwidth, Mapping)):
            if not (isinstance(self.bandwidth, Real) and math.isfinite(self.bandwidth) and self.bandwidth > 0):
                raise SynthfaceError(f"bandwidth={self.bandwidth!r}; give a positive number, a mapping "
                                     f"{{class: bandwidth}}, or None for the median k-th-neighbour distance")
        if not (isinstance(self.gamma, Real) and math.isfinite(self.gamma) and self.gamma >= 0):
            raise SynthfaceError(f"gamma={self.gamma!r}; give a number >= 0 (1 = plain inverse density)")
        if self.max_ratio is not None and not (isinstance(self.max_ratio, Real) and self.max_ratio >= 1):
            raise SynthfaceError(f"max_ratio={self.max_ratio!r}; give a number >= 1, or None for no clipping")
        if self.normalize not in NORMALIZE:
            raise SynthfaceError(f"normalize={self.normalize!r}; use one of {', '.join(NORMALIZE)}")
        if self.bandwidth_queries is not None and not (isinstance(self.bandwidth_queries, (int, np.integer))
                                                       and self.bandwidth_queries >= 1):
            raise SynthfaceError(f"bandwidth_queries={self.bandwidth_queries!r}; give a positive integer or None")
        if self.block_size is not None and not (isinstance(self.block_size, (int, np.integer))
                                                and self.block_size >= 1):
            raise SynthfaceError(f"block_size={self.block_size!r}; give a positive integer or None")
        if self.dtype not in DTYPES:
            raise SynthfaceError(f"dtype={self.dtype!r}; use one of {', '.join(DTYPES)}")
        try:
            torch.empty(0, device=self.device)
        except (RuntimeError, TypeError, AssertionError) as e:  # CPU-only torch asserts on "cuda"
            raise SynthfaceError(f"device={self.device!r} is not usable here ({e}); use 'cpu'") from None

    # ------------------------------------------------------------------ reporting

    def _fitted(self):
        if not hasattr(self, "weights_"):
            raise SynthfaceError("this CIDWeights is not fitted yet; call fit(X, y) first")

    def summary(self) -> dict:
        """Per class: size, bandwidth, clipped samples, max/min weight ratio and the Kish effective
        sample size (sum w)^2 / sum w^2, i.e. how many uniform samples the weighting is worth."""
        self._fitted()
        out = {}
        labels = self.codes_
        for c, label in enumerate(self.classes_):
            w = self.weights_[labels == c]
            out[str(_plain(label))] = {
                "n": int(len(w)), "bandwidth": None if np.isnan(self.bandwidth_[c]) else float(self.bandwidth_[c]),
                "clipped": int(self.clipped_[labels == c].sum()), "max_over_min": float(w.max() / w.min()),
                "effective_n": float(w.sum() ** 2 / (w ** 2).sum())}
        return out

    # ------------------------------------------------------------------ save / load

    def save(self, path) -> Path:
        """Weights, densities and the fitted configuration to a .safetensors file (JSON metadata)."""
        from safetensors.numpy import save as save_bytes

        from ..fileio import atomic_write
        self._fitted()
        tensors = {"weights": self.weights_, "log_density": self.log_density_, "bandwidth": self.bandwidth_,
                   "clipped": self.clipped_.astype(np.uint8), "class_counts": self.class_counts_.astype(np.int64),
                   "codes": self.codes_.astype(np.int64)}
        params = self.get_params()
        if isinstance(params["bandwidth"], Mapping):  # JSON keys must be strings: keep (label, value) pairs
            params["bandwidth"] = {"per_class": [[_plain(k), float(v)] for k, v in params["bandwidth"].items()]}
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "params": params,
                "classes": [_plain(v) for v in self.classes_], "n_features_in": int(self.n_features_in_)}
        data = save_bytes({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                          metadata={"synthface": json.dumps(meta)})
        path = Path(path)
        atomic_write(path, lambda f: f.write(data))
        return path

    @classmethod
    def load(cls, path) -> "CIDWeights":
        from safetensors import SafetensorError, safe_open
        from safetensors.numpy import load_file

        path = Path(path)
        if not path.is_file():
            raise SynthfaceError(f"CID weights file {path} does not exist; write one with CIDWeights.save")
        try:
            with safe_open(str(path), "np") as f:
                meta = json.loads((f.metadata() or {}).get("synthface", "null"))
            t = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise SynthfaceError(f"{path} is not a synthface CID weights file ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise SynthfaceError(f"{path} is not a synthface CID weights file (written by CIDWeights.save)")
        if meta.get("version") != FORMAT_VERSION:
            raise SynthfaceError(f"{path}: CID weights format version {meta.get('version')} is not supported (this "
                                 f"synthface reads version {FORMAT_VERSION}); refit and save it again")
        params = dict(meta["params"])
        if isinstance(params.get("bandwidth"), dict):
            params["bandwidth"] = {k: v for k, v in params["bandwidth"]["per_class"]}
        m = cls(**params)
        m.classes_ = np.asarray(meta["classes"])
        m.n_features_in_ = int(meta["n_features_in"])
        m.weights_, m.log_density_, m.bandwidth_ = t["weights"], t["log_density"], t["bandwidth"]
        m.clipped_, m.class_counts_, m.codes_ = t["clipped"].astype(bool), t["class_counts"], t["codes"]
        return m


# ---------------------------------------------------------------------- blocked kernels


def _rows_per_block(n_cols: int, block_size: Optional[int]) -> int:
    return int(block_size) if block_size else max(1, min(n_cols, _BLOCK_ELEMENTS // max(n_cols, 1)))


def _sq_dist(a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    d2 = torch.addmm(b_sq.unsqueeze(0), a, b.T, beta=1.0, alpha=-2.0)
    return d2.add_(a_sq.unsqueeze(1)).clamp_(min=0)


def _kth_distances(X: torch.Tensor, k: int, queries: np.ndarray, block_size: Optional[int]) -> np.ndarray:
    """Distance from each query row of X to its k-th nearest other row (self excluded, duplicates kept)."""
    n = X.shape[0]
    sq = (X * X).sum(1)
    step = _rows_per_block(n, block_size)
    out = np.empty(len(queries))
    for q0 in range(0, len(queries), step):
        q = torch.from_numpy(queries[q0:q0 + step]).to(X.device)
        d2 = _sq_dist(X[q], sq[q], X, sq)
        d2[torch.arange(len(q), device=X.device), q] = math.inf
        kth = torch.topk(d2, k, dim=1, largest=False).values[:, -1]
        out[q0:q0 + len(q)] = kth.sqrt().double().cpu().numpy()
    return out


def _kde_log_density(X: torch.Tensor, h: float, leave_one_out: bool, block_size: Optional[int]) -> np.ndarray:
    """log of (1/m) sum_j exp(-|x_i - x_j|^2 / 2h^2), m = n (or n - 1 without the self term).

    Only blocks on and above the diagonal are computed; each contributes its row sums to its row
    block and its column sums to its column block (the kernel matrix is symmetric). With the self
    term every sum is >= 1, so plain sums cannot underflow; without it, rows whose sum underflows
    are recomputed as a log-sum-exp."""
    n = X.shape[0]
    sq = (X * X).sum(1)
    inv = 1.0 / (2.0 * h * h)
    step = int(block_size) if block_size else max(1, min(n, int(math.isqrt(_BLOCK_ELEMENTS))))
    sums = torch.zeros(n, dtype=torch.float64, device=X.device)
    for i0 in range(0, n, step):
        i1 = min(n, i0 + step)
        for j0 in range(i0, n, step):
            j1 = min(n, j0 + step)
            K = _sq_dist(X[i0:i1], sq[i0:i1], X[j0:j1], sq[j0:j1]).mul_(-inv).exp_()
            if i0 == j0:
                K.diagonal().fill_(0.0 if leave_one_out else 1.0)
            sums[i0:i1] += K.sum(1, dtype=torch.float64)
            if j0 != i0:
                sums[j0:j1] += K.sum(0, dtype=torch.float64)
    sums = sums.cpu().numpy()
    log_sums = np.log(np.maximum(sums, _TINY))
    if leave_one_out:
        under = np.flatnonzero(sums < _TINY)
        rows_step = _rows_per_block(n, block_size)
        for r0 in range(0, len(under), rows_step):
            r = torch.from_numpy(under[r0:r0 + rows_step]).to(X.device)
            d2 = _sq_dist(X[r], sq[r], X, sq).double()
            d2[torch.arange(len(r), device=X.device), r] = math.inf
            log_sums[under[r0:r0 + rows_step]] = torch.logsumexp(-d2 * inv, 1).cpu().numpy()
    return log_sums - math.log(n - 1 if leave_one_out else n)


def _normalise(log_w: np.ndarray, codes: np.ndarray, n_classes: int, how: str) -> np.ndarray:
    if how == "global":
        w = np.exp(log_w - log_w.max())
        return w / w.mean()
    w = np.empty_like(log_w)
    for c in range(n_classes):
        rows = codes == c
        wc = np.exp(log_w[rows] - log_w[rows].max())  # shift first: exp of large log-weights overflows
        w[rows] = wc / wc.mean()
    return w


# ---------------------------------------------------------------------- inputs


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _check_inputs(X, y) -> tuple[np.ndarray, np.ndarray]:
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SynthfaceError(f"embeddings X must be a numeric [n, d] array ({e})") from None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise SynthfaceError(f"embeddings X must be a non-empty 2-D array [n_samples, dim], got shape {X.shape}")
    y = np.asarray(y)
    if y.ndim != 1:
        raise SynthfaceError(f"labels y must be 1-D [n_samples], got shape {y.shape}")
    if len(y) != len(X):
        raise SynthfaceError(f"X has {len(X)} rows but y has {len(y)} labels; give one label per embedding")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise SynthfaceError(f"{int(bad.sum())} embedding row(s) hold NaN or inf (first: row "
                             f"{int(np.flatnonzero(bad)[0])}); drop or recompute them before CID")
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise SynthfaceError(f"{int(np.isnan(y).sum())} label(s) are NaN; drop those samples or label them")
    return X, y


# ---------------------------------------------------------------------- oracle


def oracle_identity_weights(identity, y, normalize: Optional[str] = None) -> np.ndarray:
    """1 / (number of images of the sample's identity within its class): the baseline that uses
    ground-truth identities. normalize="per_class" rescales to mean 1 within each class (the
    scale of CIDWeights); None (default) returns the plain inverse counts."""
    identity, y = np.asarray(identity), np.asarray(y)
    if identity.ndim != 1 or y.ndim != 1:
        raise SynthfaceError(f"identity and y must be 1-D, got shapes {identity.shape} and {y.shape}")
    if len(identity) != len(y):
        raise SynthfaceError(f"identity has {len(identity)} entries but y has {len(y)}; give one of each per image")
    if len(y) == 0:
        raise SynthfaceError("identity and y are empty; give at least one image")
    for name, a in (("identity", identity), ("y", y)):
        if a.dtype.kind == "f" and np.isnan(a).any():
            raise SynthfaceError(f"{name} holds NaN; drop those images or give them a value")
    if normalize not in (None, "per_class"):
        raise SynthfaceError(f"normalize={normalize!r}; use None or 'per_class'")
    _, ids = np.unique(identity, return_inverse=True)
    classes, codes = np.unique(y, return_inverse=True)
    ids, codes = ids.reshape(-1), codes.reshape(-1)
    pair = ids.astype(np.int64) * len(classes) + codes
    _, pair_code, counts = np.unique(pair, return_inverse=True, return_counts=True)
    w = 1.0 / counts[pair_code.reshape(-1)]
    if normalize == "per_class":
        w = _normalise(np.log(w), codes, len(classes), "per_class")
    return w
