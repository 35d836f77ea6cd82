"""SensitiveNets (Morales et al., TPAMI 2021): a projection on top of a frozen face recogniser that keeps
identities apart (triplet loss) while detectors of sensitive attributes are driven towards chance.

Specification: ../shared/docs/fairness-methods.md §1 (what is known of the paper) and §6 (acceptance). Where
the paper is silent the choices here are the project's ([D] in the spec):

* projection `phi(z) = normalise(z + MLP(z))`, z the L2-normalised input; the MLP's last layer starts at zero,
  so an untrained model returns the normalised input;
* triplet loss of §1.3 on squared distances, triplets mined inside each batch (P identities x K images) with
  synthface.train.losses.TripletLoss's semi-hard rule;
* removal term `log(1 + |tau - P(D | phi(x))|)` on every sample of every triplet, summed over attributes and
  averaged over the detectors of an attribute; `D` is the sample's true class (`target="true_class"`,
  tau = 1/#classes by default) or a fixed class column (`"fixed_class"`, column 1 as in a public
  re-implementation);
* detectors: a softmax layer (or, with detector_hidden > 0, a small MLP) on the embedding standardised with
  the statistics of the batch it sees, frozen while the projection trains. `"pool"` trains a fresh one on the
  current projection before the first removal epoch and after every epoch and keeps the last `pool_size`;
  `"fixed"` trains one on the input embeddings only; `"online"` keeps one detector that takes one step per
  batch on the detached projected batch (an adversary). Detectors trained with label smoothing (0.1) stay
  off softmax saturation, where the removal term would have no gradient.

Every epoch a fresh detector per attribute is trained on 80 % of the identities and scored on the other 20 %;
that held-out accuracy is what `history_` reports as `detector_acc` (a detector's accuracy on its own training
identities says little: it can memorise identity -> attribute). The projection itself trains on all identities,
so this monitors removal on training identities; the audit on unseen identities is
synthface.evaluation.leakage.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from torch import nn
from torch.nn import functional as F

from ..errors import SynthfaceError
from ..fileio import atomic_write
from ..train.losses import TripletLoss

FORMAT_NAME = "synthface.methods.sensitivenets"
FORMAT_VERSION = 1

_TARGETS = ("true_class", "fixed_class")
_DETECTORS = ("pool", "fixed", "online")
_FIXED_COLUMN = 1  # the class column "fixed_class" drives (FR-NAS uses softmax[:, 1])
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


def _detector(Z: torch.Tensor, hidden: int, n_classes: int) -> nn.Sequential:
    if hidden == 0:  # a softmax layer on the embedding, as in one re-implementation
        return nn.Sequential(_Standardise(), nn.Linear(Z.shape[1], n_classes))
    return nn.Sequential(_Standardise(), nn.Linear(Z.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


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


class SensitiveNets(BaseEstimator, TransformerMixin):
    """Learn an embedding projection that keeps identity and removes sensitive attributes.

    Parameters (configuration only; `fit` sets the trailing-underscore state):
      hidden: hidden widths of the residual MLP; an int h means (h,); None means (d,). One hidden layer
        removed the attributes better than the spec's two in our synthetic tests (a deeper MLP more easily
        re-encodes the attribute in a new direction instead of removing it); () is a linear residual map.
      margin: triplet margin on squared distances of unit vectors.
      lam: weight of the removal term (0 trains the triplet loss alone).
      target: "true_class" (P(true class) -> tau) or "fixed_class" (P(class column 1) -> tau).
      target_prob: tau; None means 1/#classes of each attribute.
      detectors: "pool", "fixed" or "online" (see the module docstring).
      pool_size: detectors kept per attribute in the pool.
      warmup_epochs: first epochs trained without the removal term.
      epochs, batch_size, lr: Adam on the projection; a batch holds batch_size embeddings,
        per_identity of each identity.
      per_identity: images of one identity per batch (K of the P x K batch).
      detector_hidden, detector_steps, detector_lr: the detectors' width (0: a softmax layer on the
        standardised embedding, the default; MLP detectors chased the attribute less well in our tests) and
        training (Adam steps of 256 embeddings).
      seed, device: reproducibility and torch device ("cpu", "cuda", "cuda:1", ...).
    """

    def __init__(self, hidden: Union[None, int, Sequence[int]] = None, margin: float = 0.2, lam: float = 1.0,
                 target: str = "true_class", target_prob: Optional[float] = None, detectors: str = "pool",
                 pool_size: int = 5, warmup_epochs: int = 1, epochs: int = 20, batch_size: int = 256,
                 lr: float = 1e-3, per_identity: int = 4, detector_hidden: int = 0, detector_steps: int = 300,
                 detector_lr: float = 1e-2, seed: int = 0, device: str = "cpu"):
        self.hidden = hidden
        self.margin = margin
        self.lam = lam
        self.target = target
        self.target_prob = target_prob
        self.detectors = detectors
        self.pool_size = pool_size
        self.warmup_epochs = warmup_epochs
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.per_identity = per_identity
        self.detector_hidden = detector_hidden
        self.detector_steps = detector_steps
        self.detector_lr = detector_lr
        self.seed = seed
        self.device = device

    # ------------------------------------------------------------------------------------ validation

    def _check_params(self) -> None:
        if self.target not in _TARGETS:
            raise SynthfaceError(f"target must be one of {', '.join(_TARGETS)}, got {self.target!r}")
        if self.detectors not in _DETECTORS:
            raise SynthfaceError(f"detectors must be one of {', '.join(_DETECTORS)}, got {self.detectors!r}")
        if self.target_prob is not None and not 0.0 < float(self.target_prob) < 1.0:
            raise SynthfaceError(f"target_prob must be in (0, 1) or None (1/#classes), got {self.target_prob}")
        if not isinstance(self.detector_hidden, (int, np.integer)) or self.detector_hidden < 0:
            raise SynthfaceError(f"detector_hidden must be an integer >= 0 (0: linear detectors), "
                                 f"got {self.detector_hidden!r}")
        for name in ("epochs", "batch_size", "pool_size", "per_identity", "detector_steps"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise SynthfaceError(f"{name} must be a positive integer, got {v!r}")
        if self.per_identity < 2:
            raise SynthfaceError("per_identity must be at least 2 (a triplet needs a positive)")
        if self.batch_size < 2 * self.per_identity:
            raise SynthfaceError(f"batch_size ({self.batch_size}) must hold at least two identities of "
                                 f"per_identity={self.per_identity} images")
        if not isinstance(self.warmup_epochs, (int, np.integer)) or self.warmup_epochs < 0:
            raise SynthfaceError(f"warmup_epochs must be an integer >= 0, got {self.warmup_epochs!r}")
        for name in ("margin", "lam", "lr", "detector_lr"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v) or v < 0:
                raise SynthfaceError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.lr <= 0 or self.detector_lr <= 0:
            raise SynthfaceError("lr and detector_lr must be > 0")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise SynthfaceError(f"device {self.device!r} is not a torch device (use cpu or cuda)") from None

    def _hidden_sizes(self, dim: int) -> list[int]:
        h = self.hidden
        if h is None:
            return [dim]
        if isinstance(h, (int, np.integer)):
            h = [int(h)]
        h = [int(x) for x in h]
        if any(x < 1 for x in h):
            raise SynthfaceError(f"hidden widths must be positive, got {self.hidden!r}")
        return h

    @staticmethod
    def _check_labels(X: np.ndarray, identity, sensitive) -> tuple[np.ndarray, dict, dict]:
        n = len(X)
        identity = np.asarray(identity)
        if identity.ndim != 1 or len(identity) != n:
            raise SynthfaceError(f"identity must hold one label per embedding: {n} embeddings, "
                                 f"identity of shape {identity.shape}")
        ids, id_codes, counts = np.unique(identity, return_inverse=True, return_counts=True)
        if len(ids) < 2:
            raise SynthfaceError("fit needs at least two identities (a triplet needs a negative)")
        single = ids[counts < 2]
        if len(single):
            raise SynthfaceError(f"{len(single)} identities have a single embedding and so no positive for a "
                                 f"triplet (e.g. {single[:3].tolist()}); drop them or add images")
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
                raise SynthfaceError(f"sensitive attribute {name!r} has a single class ({cls.tolist()}); there "
                                     f"is nothing to remove, leave it out")
            codes[str(name)] = c.astype(np.int64)
            classes[str(name)] = cls.tolist()
        return id_codes.astype(np.int64), codes, classes

    # ------------------------------------------------------------------------------------ training

    def _batches(self, id_codes: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """One epoch as P x K batches: every embedding once, in chunks of K images of one identity."""
        k = self.per_identity
        order = np.argsort(id_codes, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(id_codes[order]) != 0])
        chunks = []
        for members in np.split(order, starts[1:]):
            members = rng.permutation(members)
            parts = [members[i:i + k] for i in range(0, len(members), k)]
            if len(parts) > 1 and len(parts[-1]) == 1:  # a lone image has no positive: join the previous chunk
                parts[-2] = np.r_[parts[-2], parts[-1]]
                parts.pop()
            chunks += parts
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        batches, cur, size = [], [], 0
        for c in chunks:
            cur.append(c)
            size += len(c)
            if size >= self.batch_size:
                batches.append(np.concatenate(cur))
                cur, size = [], 0
        if cur:
            if batches and size < 2 * k:  # too small to mine: merge with the previous batch
                batches[-1] = np.r_[batches[-1], np.concatenate(cur)]
            else:
                batches.append(np.concatenate(cur))
        return batches

    def _project(self, Z: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.projection_(Z[i:i + chunk]) for i in range(0, len(Z), chunk)])

    def _fit_detectors(self, Z: torch.Tensor, ys: dict, n_cls: dict, gen: torch.Generator) -> dict:
        """Fresh detectors, one per attribute, trained on (detached) projected embeddings with class-balanced,
        label-smoothed cross-entropy. Smoothing keeps their softmax off saturation, where the removal term
        would have no gradient. All attributes share the minibatches (one optimiser step for all)."""
        dets = {}
        for k, c in n_cls.items():
            det = _detector(Z, self.detector_hidden, c)
            # Seeded initial weights, so fits are reproducible whatever else used torch's global RNG.
            with torch.no_grad():
                for m in det:
                    if isinstance(m, nn.Linear):
                        bound = 1.0 / math.sqrt(m.in_features)
                        m.weight.copy_((torch.rand(m.weight.shape, generator=gen) * 2 - 1) * bound)
                        m.bias.copy_((torch.rand(m.bias.shape, generator=gen) * 2 - 1) * bound)
            dets[k] = det.to(Z.device)
        weights = {}
        for k, c in n_cls.items():
            counts = torch.bincount(ys[k], minlength=c).float().clamp(min=1)
            weights[k] = counts.sum() / (c * counts)
        params = [p for d in dets.values() for p in d.parameters()]
        opt = torch.optim.Adam(params, lr=self.detector_lr, weight_decay=1e-4, foreach=True)
        bs = min(256, len(Z))
        for _ in range(self.detector_steps):
            idx = torch.randint(len(Z), (bs,), generator=gen).to(Z.device)
            z = Z[idx]
            loss = sum(F.cross_entropy(d(z), ys[k][idx], weight=weights[k], label_smoothing=0.1)
                       for k, d in dets.items())
            opt.zero_grad()
            loss.backward()
            opt.step()
        return {k: d.requires_grad_(False).eval() for k, d in dets.items()}

    @staticmethod
    def _accuracy(det: nn.Module, Z: torch.Tensor, y: torch.Tensor) -> float:
        with torch.no_grad():
            return float((det(Z).argmax(1) == y).float().mean())

    def _removal(self, emb: torch.Tensor, targets: dict, dets: dict) -> torch.Tensor:
        """Per-sample removal term: sum over attributes of the mean over that attribute's detectors."""
        total = emb.new_zeros(len(emb))
        for name, models in dets.items():
            y = targets[name]
            tau = self.tau_[name]
            terms = []
            for det in models:
                prob = F.softmax(det(emb), dim=1)
                p = prob.gather(1, y[:, None])[:, 0] if self.target == "true_class" else prob[:, _FIXED_COLUMN]
                terms.append(torch.log1p((tau - p).abs()))
            total = total + torch.stack(terms).mean(0)
        return total

    # long: warm-up, then epochs that alternate projection steps with detector-pool retraining and
    # log both; the pieces share the batch sampler, optimisers and pool, so they read best in one place.
    def fit(self, X, identity, sensitive: Mapping[str, Sequence], log: Optional[Callable[[str], None]] = None):
        """Train the projection. X: (n, d) embeddings; identity: (n,) labels; sensitive: {name: (n,) labels}.

        `log`, if given, receives one line per epoch (losses and held-out detector accuracies); the same
        figures are kept in `history_` as a list of dicts."""
        self._check_params()
        X = _as_2d_float(X, "X")
        id_codes, codes, classes = self._check_labels(X, identity, sensitive)
        dim = X.shape[1]
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SynthfaceError(f"device {self.device!r} requested but CUDA is not available; use device='cpu'")
        rng = np.random.default_rng(self.seed)
        gen = torch.Generator().manual_seed(int(self.seed))

        self.n_features_in_ = dim
        self.hidden_sizes_ = self._hidden_sizes(dim)
        self.classes_ = classes
        self.tau_ = {k: float(self.target_prob) if self.target_prob is not None else 1.0 / len(v)
                     for k, v in classes.items()}
        self.projection_ = _Projection(dim, self.hidden_sizes_)
        with torch.no_grad():  # seeded init, independent of the global torch RNG
            for m in self.projection_.mlp[:-1]:
                if isinstance(m, nn.Linear):
                    bound = 1.0 / math.sqrt(m.in_features)
                    m.weight.copy_((torch.rand(m.weight.shape, generator=gen) * 2 - 1) * bound)
                    m.bias.copy_((torch.rand(m.bias.shape, generator=gen) * 2 - 1) * bound)
        self.projection_.to(device)

        Z = torch.from_numpy(_normalise(X)).to(device)
        ids_t = torch.from_numpy(id_codes).to(device)
        ys = {k: torch.from_numpy(v).to(device) for k, v in codes.items()}
        n_cls = {k: len(v) for k, v in classes.items()}

        # Identity-disjoint split for the monitoring detectors (and the ones the removal term uses).
        uniq = np.unique(id_codes)
        held = rng.permutation(uniq)[: max(1, int(round(0.2 * len(uniq))))]
        val_mask = np.isin(id_codes, held)
        tr_idx = torch.from_numpy(np.flatnonzero(~val_mask)).to(device)
        va_idx = torch.from_numpy(np.flatnonzero(val_mask)).to(device)

        def fresh(P: torch.Tensor) -> tuple[dict, dict]:
            dets = self._fit_detectors(P[tr_idx], {k: v[tr_idx] for k, v in ys.items()}, n_cls, gen)
            return dets, {k: self._accuracy(d, P[va_idx], ys[k][va_idx]) for k, d in dets.items()}

        pool: dict[str, list[nn.Module]] = {k: [] for k in ys}
        online: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {}
        if self.detectors == "fixed" and self.lam > 0:
            d0, _ = fresh(Z)  # trained once on the input embeddings, as in the 2019 version
            pool = {k: [d] for k, d in d0.items()}

        opt = torch.optim.Adam(self.projection_.parameters(), lr=self.lr, foreach=True)
        self.history_ = []
        t_fit = time.perf_counter()
        for epoch in range(self.epochs):
            t0 = time.perf_counter()
            removing = self.lam > 0 and epoch >= self.warmup_epochs
            if removing and self.detectors == "pool" and not pool[next(iter(pool))]:
                d0, _ = fresh(self._project(Z))
                for k in pool:
                    pool[k].append(d0[k])
            if removing and self.detectors == "online" and not online:
                d0, _ = fresh(self._project(Z))
                for k, d in d0.items():
                    d.requires_grad_(True).train()
                    online[k] = (d, torch.optim.Adam(d.parameters(), lr=self.detector_lr, foreach=True))
            self.projection_.train()
            sums = {"triplet": 0.0, "removal": 0.0, "loss": 0.0, "active": 0.0}
            batches = self._batches(id_codes, rng)
            for b in batches:
                bt = torch.from_numpy(b).to(device)
                emb = self.projection_(Z[bt])
                trip, a, p, n, active = semi_hard_triplets(emb, ids_t[bt], float(self.margin))
                loss = trip
                rem = torch.zeros((), device=device)
                if removing and len(a):
                    targets = {k: v[bt] for k, v in ys.items()}
                    if self.detectors == "online":
                        for k, (d, dopt) in online.items():  # the adversary's step, on detached features
                            dl = F.cross_entropy(d(emb.detach()), targets[k])
                            dopt.zero_grad()
                            dl.backward()
                            dopt.step()
                        for d, _ in online.values():
                            d.requires_grad_(False)
                        dets = {k: [d] for k, (d, _) in online.items()}
                    else:
                        dets = pool
                    lam_i = self._removal(emb, targets, dets)
                    # Paper: sum over each triplet's three samples; averaged over triplets like L_trip.
                    rem = (lam_i[a] + lam_i[p] + lam_i[n]).mean()
                    loss = trip + float(self.lam) * rem
                    if self.detectors == "online":
                        for d, _ in online.values():
                            d.requires_grad_(True)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sums["triplet"] += float(trip.detach())
                sums["removal"] += float(rem.detach())
                sums["loss"] += float(loss.detach())
                sums["active"] += active
            self.projection_.eval()
            P = self._project(Z)
            dets_now, acc = fresh(P)
            if self.detectors == "pool" and self.lam > 0 and epoch + 1 >= self.warmup_epochs:
                for k in pool:
                    pool[k] = (pool[k] + [dets_now[k]])[-self.pool_size:]
            rec = {"epoch": epoch + 1, **{k: v / len(batches) for k, v in sums.items()},
                   "removing": bool(removing), "detector_acc": acc, "seconds": time.perf_counter() - t0}
            if self.detectors == "fixed" and self.lam > 0:
                rec["fixed_detector_acc"] = {k: self._accuracy(pool[k][0], P[va_idx], ys[k][va_idx]) for k in ys}
            self.history_.append(rec)
            if log is not None:
                accs = " ".join(f"{k} {v:.3f}" for k, v in acc.items())
                log(f"epoch {epoch + 1}/{self.epochs}: loss {rec['loss']:.4f} (triplet {rec['triplet']:.4f}, "
                    f"removal {rec['removal']:.4f}, active triplets {rec['active']:.2f}); held-out detector "
                    f"accuracy {accs}; {rec['seconds']:.1f} s")
        self.fit_seconds_ = time.perf_counter() - t_fit
        self.projection_.cpu().eval()
        self.projection_.requires_grad_(False)
        return self

    # ------------------------------------------------------------------------------------ inference

    def _check_fitted(self) -> None:
        if not hasattr(self, "projection_"):
            raise SynthfaceError("this SensitiveNets is not fitted yet: call fit(X, identity, sensitive) or "
                                 "SensitiveNets.load(path) first")

    def transform(self, X) -> np.ndarray:
        """L2-normalised projected embeddings, float32 (n, d)."""
        self._check_fitted()
        X = _as_2d_float(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise SynthfaceError(f"X has {X.shape[1]} features but this SensitiveNets was fitted on "
                                 f"{self.n_features_in_}-d embeddings; use the same recogniser")
        self.projection_.cpu()
        return self._project(torch.from_numpy(_normalise(X))).numpy()

    # ------------------------------------------------------------------------------------ persistence

    def save(self, path) -> Path:
        """One .safetensors file: projection weights, and in its metadata the JSON of the configuration,
        classes, taus and training history (versioned)."""
        from safetensors.torch import save as st_save

        self._check_fitted()
        meta = {"params": self.get_params(), "n_features_in": int(self.n_features_in_),
                "hidden_sizes": list(self.hidden_sizes_), "classes": self.classes_, "tau": self.tau_,
                "history": getattr(self, "history_", [])}
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.projection_.state_dict().items()}
        blob = st_save(tensors, metadata={"format": FORMAT_NAME, "version": str(FORMAT_VERSION),
                                          "config": json.dumps(meta, default=_json_default)})
        return atomic_write(path, lambda f: f.write(blob))

    @classmethod
    def load(cls, path) -> "SensitiveNets":
        """Read a file written by save(); never executes code from it."""
        from .method_io import read_method_file

        meta, tensors = read_method_file(path, FORMAT_NAME, FORMAT_VERSION, "SensitiveNets")
        cfg = json.loads(meta["config"])
        est = cls(**cfg["params"])
        est.n_features_in_ = int(cfg["n_features_in"])
        est.hidden_sizes_ = [int(h) for h in cfg["hidden_sizes"]]
        est.classes_ = cfg["classes"]
        est.tau_ = cfg["tau"]
        est.history_ = cfg.get("history", [])
        est.projection_ = _Projection(est.n_features_in_, est.hidden_sizes_)
        try:
            est.projection_.load_state_dict(tensors, strict=True)
        except RuntimeError as e:
            raise SynthfaceError(f"{path}: weights do not match the stored configuration ({e})") from None
        est.projection_.eval().requires_grad_(False)
        return est


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
