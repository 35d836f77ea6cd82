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
  batch on the detached projected batch (an adversary); `"diverse"` (issue 26) keeps one detector per width
  in `detector_widths` (linear and MLPs), trains them on after every epoch and re-initialises each every
  `reinit_every` epochs on a staggered schedule, so the projection always faces detectors of several
  capacities and ages. Detectors trained with label smoothing (0.1) stay off softmax saturation, where the
  removal term would have no gradient.
* optional pre-erasure (`pre_erasure="leace"`): LEACE fitted on the training embeddings runs before the
  projection, which then only has nonlinear information left to remove.

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
from .sensitivenets_parts import (_DetectorState, _FitData, _Projection, _as_2d_float, _detector, _epoch_line,
                                  _normalise, _seeded_init, semi_hard_triplets)

FORMAT_NAME = "synthface.methods.sensitivenets"
FORMAT_VERSION = 1  # files with a pre-erasure hold two more tensors; files without one read as before
_PRE = "pre_erasure."  # tensor-name prefix of the LEACE pre-erasure in saved files

_TARGETS = ("true_class", "fixed_class")
_DETECTORS = ("pool", "fixed", "online", "diverse")
_PRE_ERASURE = (None, "leace")
_FIXED_COLUMN = 1  # the class column "fixed_class" drives (FR-NAS uses softmax[:, 1])

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
      detectors: "pool", "fixed", "online" or "diverse" (see the module docstring).
      pool_size: detectors kept per attribute in the pool ("pool").
      warmup_epochs: first epochs trained without the removal term.
      epochs, batch_size, lr: Adam on the projection; a batch holds batch_size embeddings,
        per_identity of each identity.
      per_identity: images of one identity per batch (K of the P x K batch).
      detector_hidden, detector_steps, detector_lr: the detectors' width (0: a softmax layer on the
        standardised embedding, the default; MLP detectors chased the attribute less well in our tests) and
        training (Adam steps of 256 embeddings).
      detector_widths, reinit_every ("diverse" only): one detector per width and attribute (0: linear, h > 0:
        an MLP with h hidden units); each goes on training on the current projection after every epoch and
        is re-initialised every reinit_every removal epochs, staggered by its position in the list.
      pre_erasure: None or "leace": fit LEACE (synthface.methods.erasure) on the normalised training
        embeddings first and train the projection on its output, so that linear information is gone before
        the detectors start; transform applies the same two steps.
      seed, device: reproducibility and torch device ("cpu", "cuda", "cuda:1", ...).
    """

    def __init__(self, hidden: Union[None, int, Sequence[int]] = None, margin: float = 0.2, lam: float = 1.0,
                 target: str = "true_class", target_prob: Optional[float] = None, detectors: str = "pool",
                 pool_size: int = 5, warmup_epochs: int = 1, epochs: int = 20, batch_size: int = 256,
                 lr: float = 1e-3, per_identity: int = 4, detector_hidden: int = 0, detector_steps: int = 300,
                 detector_lr: float = 1e-2, detector_widths: Sequence[int] = (0, 32, 128), reinit_every: int = 3,
                 pre_erasure: Optional[str] = None, seed: int = 0, device: str = "cpu"):
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
        self.detector_widths = detector_widths
        self.reinit_every = reinit_every
        self.pre_erasure = pre_erasure
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
        if self.pre_erasure not in _PRE_ERASURE:
            raise SynthfaceError(f"pre_erasure must be None or 'leace', got {self.pre_erasure!r}")
        widths = self.detector_widths
        if (isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__") or not len(widths)
                or not all(isinstance(w, (int, np.integer)) and w >= 0 for w in widths)):
            raise SynthfaceError(f"detector_widths must be a non-empty list of integers >= 0 (0: a linear "
                                 f"detector), got {widths!r}")
        for name in ("epochs", "batch_size", "pool_size", "per_identity", "detector_steps", "reinit_every"):
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

    def _new_detector(self, dim: int, hidden: int, n_classes: int, gen: torch.Generator, device) -> nn.Module:
        det = _detector(dim, int(hidden), n_classes)
        _seeded_init(det, gen)  # reproducible whatever else used torch's global RNG
        return det.to(device)

    def _train_detectors(self, dets: Mapping[str, list], Z: torch.Tensor, ys: dict, n_cls: dict,
                         gen: torch.Generator) -> None:
        """Train (or go on training) detectors on (detached) projected embeddings with class-balanced,
        label-smoothed cross-entropy, then freeze them. Smoothing keeps their softmax off saturation, where
        the removal term would have no gradient. All detectors share the minibatches (one optimiser)."""
        weights = {}
        for k, c in n_cls.items():
            counts = torch.bincount(ys[k], minlength=c).float().clamp(min=1)
            weights[k] = counts.sum() / (c * counts)
        models = [d for ds in dets.values() for d in ds]
        for d in models:
            d.requires_grad_(True).train()
        params = [p for d in models for p in d.parameters()]
        opt = torch.optim.Adam(params, lr=self.detector_lr, weight_decay=1e-4, foreach=True)
        bs = min(256, len(Z))
        for _ in range(self.detector_steps):
            idx = torch.randint(len(Z), (bs,), generator=gen).to(Z.device)
            z = Z[idx]
            loss = sum(F.cross_entropy(d(z), ys[k][idx], weight=weights[k], label_smoothing=0.1)
                       for k, ds in dets.items() for d in ds)
            opt.zero_grad()
            loss.backward()
            opt.step()
        for d in models:
            d.requires_grad_(False).eval()

    def _fit_detectors(self, Z: torch.Tensor, ys: dict, n_cls: dict, gen: torch.Generator) -> dict:
        """Fresh detectors of width detector_hidden, one per attribute, trained on Z."""
        dets = {k: [self._new_detector(Z.shape[1], self.detector_hidden, c, gen, Z.device)] for k, c in n_cls.items()}
        self._train_detectors(dets, Z, ys, n_cls, gen)
        return {k: v[0] for k, v in dets.items()}

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

    # ------------------------------------------------------------------------------------ fit, step by step

    def _init_model(self, X: np.ndarray, codes: dict, classes: dict, gen: torch.Generator, device) -> np.ndarray:
        """Fitted-state attributes, the seeded projection, and the optional LEACE pre-erasure (fitted on the
        normalised training embeddings, all attributes at once). Returns the projection's training input."""
        dim = X.shape[1]
        self.n_features_in_ = dim
        self.hidden_sizes_ = self._hidden_sizes(dim)
        self.classes_ = classes
        self.tau_ = {k: float(self.target_prob) if self.target_prob is not None else 1.0 / len(v)
                     for k, v in classes.items()}
        Z = _normalise(X)
        self.pre_erasure_ = None
        if self.pre_erasure == "leace":
            from .erasure import LEACE
            self.pre_erasure_ = LEACE(normalize_input=False).fit(Z, None, codes)
            Z = self.pre_erasure_.transform(Z)
        self.projection_ = _Projection(dim, self.hidden_sizes_)
        _seeded_init(self.projection_.mlp[:-1], gen)  # the last layer stays zero: the identity at the start
        self.projection_.to(device)
        return Z

    @staticmethod
    def _fit_data(Z: np.ndarray, id_codes: np.ndarray, codes: dict, classes: dict, rng, device) -> _FitData:
        """Tensors of the fit, with an identity-disjoint 80/20 split of the training identities: detectors
        (removal and monitoring) train on the 80 %, monitoring scores on the 20 %."""
        uniq = np.unique(id_codes)
        held = rng.permutation(uniq)[: max(1, int(round(0.2 * len(uniq))))]
        val_mask = np.isin(id_codes, held)
        return _FitData(Z=torch.from_numpy(np.ascontiguousarray(Z, dtype=np.float32)).to(device),
                        ids=torch.from_numpy(id_codes).to(device), id_codes=id_codes,
                        ys={k: torch.from_numpy(v).to(device) for k, v in codes.items()},
                        n_cls={k: len(v) for k, v in classes.items()},
                        tr_idx=torch.from_numpy(np.flatnonzero(~val_mask)).to(device),
                        va_idx=torch.from_numpy(np.flatnonzero(val_mask)).to(device), device=device)

    def _fresh(self, data: _FitData, P: torch.Tensor, gen) -> tuple[dict, dict]:
        """Fresh detectors trained on the 80 % of P and their accuracy on the held-out 20 %."""
        dets = self._fit_detectors(P[data.tr_idx], {k: v[data.tr_idx] for k, v in data.ys.items()}, data.n_cls, gen)
        return dets, {k: self._accuracy(d, P[data.va_idx], data.ys[k][data.va_idx]) for k, d in dets.items()}

    def _start_detectors(self, data: _FitData, state: _DetectorState, gen) -> None:
        """Before the first removal epoch: the first pool member, the online adversary or the diverse pool,
        trained on the current projection."""
        if self.detectors == "pool" and not state.pool[next(iter(state.pool))]:
            d0, _ = self._fresh(data, self._project(data.Z), gen)
            for k in state.pool:
                state.pool[k].append(d0[k])
        elif self.detectors == "online" and not state.online:
            d0, _ = self._fresh(data, self._project(data.Z), gen)
            for k, d in d0.items():
                d.requires_grad_(True).train()
                state.online[k] = (d, torch.optim.Adam(d.parameters(), lr=self.detector_lr, foreach=True))
        elif self.detectors == "diverse" and not state.pool[next(iter(state.pool))]:
            dim = data.Z.shape[1]
            for k, c in data.n_cls.items():
                state.pool[k] = [self._new_detector(dim, w, c, gen, data.device) for w in self.detector_widths]
            self._train_pool(data, state, self._project(data.Z), gen)

    def _train_pool(self, data: _FitData, state: _DetectorState, P: torch.Tensor, gen) -> None:
        self._train_detectors(state.pool, P[data.tr_idx], {k: v[data.tr_idx] for k, v in data.ys.items()},
                              data.n_cls, gen)

    def _refresh_diverse(self, data: _FitData, state: _DetectorState, P: torch.Tensor, removal_epoch: int, gen):
        """After a removal epoch: detector j of each attribute is re-initialised when (epoch + j) is a multiple
        of reinit_every (staggered, so the pool never restarts all at once); then every detector goes on
        training on the new projection."""
        dim = P.shape[1]
        for k, c in data.n_cls.items():
            for j, w in enumerate(self.detector_widths):
                if (removal_epoch + j) % int(self.reinit_every) == 0:
                    state.pool[k][j] = self._new_detector(dim, w, c, gen, data.device)
        self._train_pool(data, state, P, gen)

    def _online_step(self, state: _DetectorState, emb: torch.Tensor, targets: dict) -> dict:
        """The adversary's step on the detached batch; returns its detectors, frozen for the projection's step."""
        for k, (d, dopt) in state.online.items():
            dl = F.cross_entropy(d(emb.detach()), targets[k])
            dopt.zero_grad()
            dl.backward()
            dopt.step()
        for d, _ in state.online.values():
            d.requires_grad_(False)
        return {k: [d] for k, (d, _) in state.online.items()}

    def _train_epoch(self, data: _FitData, state: _DetectorState, opt, removing: bool, rng) -> tuple[dict, int]:
        """One pass over P x K batches: triplet loss plus lam x the removal term. Returns loss sums, #batches."""
        self.projection_.train()
        sums = {"triplet": 0.0, "removal": 0.0, "loss": 0.0, "active": 0.0}
        batches = self._batches(data.id_codes, rng)
        for b in batches:
            bt = torch.from_numpy(b).to(data.device)
            emb = self.projection_(data.Z[bt])
            trip, a, p, n, active = semi_hard_triplets(emb, data.ids[bt], float(self.margin))
            loss, rem = trip, torch.zeros((), device=data.device)
            if removing and len(a):
                targets = {k: v[bt] for k, v in data.ys.items()}
                dets = self._online_step(state, emb, targets) if self.detectors == "online" else state.pool
                lam_i = self._removal(emb, targets, dets)
                # Paper: sum over each triplet's three samples; averaged over triplets like L_trip.
                rem = (lam_i[a] + lam_i[p] + lam_i[n]).mean()
                loss = trip + float(self.lam) * rem
                for d, _ in state.online.values():
                    d.requires_grad_(True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            for key, v in (("triplet", trip), ("removal", rem), ("loss", loss)):
                sums[key] += float(v.detach())
            sums["active"] += active
        return sums, len(batches)

    def _end_epoch(self, data: _FitData, state: _DetectorState, epoch: int, removing: bool, gen) -> dict:
        """Monitoring detectors on the new projection; the pool's update. Returns the held-out accuracies
        (and, for "fixed", the fixed detector's)."""
        self.projection_.eval()
        P = self._project(data.Z)
        dets_now, acc = self._fresh(data, P, gen)
        out = {"detector_acc": acc}
        if self.detectors == "pool" and self.lam > 0 and epoch + 1 >= self.warmup_epochs:
            for k in state.pool:
                state.pool[k] = (state.pool[k] + [dets_now[k]])[-self.pool_size:]
        if self.detectors == "diverse" and removing and epoch + 1 < self.epochs:  # none after the last epoch
            self._refresh_diverse(data, state, P, epoch + 1 - self.warmup_epochs, gen)
        if self.detectors == "fixed" and self.lam > 0:
            out["fixed_detector_acc"] = {k: self._accuracy(state.pool[k][0], P[data.va_idx], data.ys[k][data.va_idx])
                                         for k in data.ys}
        return out

    def fit(self, X, identity, sensitive: Mapping[str, Sequence], log: Optional[Callable[[str], None]] = None):
        """Train the projection. X: (n, d) embeddings; identity: (n,) labels; sensitive: {name: (n,) labels}.

        `log`, if given, receives one line per epoch (losses and held-out detector accuracies); the same
        figures are kept in `history_` as a list of dicts."""
        self._check_params()
        X = _as_2d_float(X, "X")
        id_codes, codes, classes = self._check_labels(X, identity, sensitive)
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SynthfaceError(f"device {self.device!r} requested but CUDA is not available; use device='cpu'")
        rng = np.random.default_rng(self.seed)
        gen = torch.Generator().manual_seed(int(self.seed))
        Z = self._init_model(X, codes, classes, gen, device)
        data = self._fit_data(Z, id_codes, codes, classes, rng, device)
        state = _DetectorState(pool={k: [] for k in data.ys})
        if self.detectors == "fixed" and self.lam > 0:
            d0, _ = self._fresh(data, data.Z, gen)  # trained once on the input embeddings, as in the 2019 version
            state.pool = {k: [d] for k, d in d0.items()}
        opt = torch.optim.Adam(self.projection_.parameters(), lr=self.lr, foreach=True)
        self.history_ = []
        t_fit = time.perf_counter()
        for epoch in range(self.epochs):
            t0 = time.perf_counter()
            removing = self.lam > 0 and epoch >= self.warmup_epochs
            if removing:
                self._start_detectors(data, state, gen)
            sums, n_batches = self._train_epoch(data, state, opt, removing, rng)
            accs = self._end_epoch(data, state, epoch, removing, gen)
            rec = {"epoch": epoch + 1, **{k: v / n_batches for k, v in sums.items()}, "removing": bool(removing),
                   **accs, "seconds": time.perf_counter() - t0}
            self.history_.append(rec)
            if log is not None:
                log(_epoch_line(rec, self.epochs))
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
        Z = _normalise(X)
        if getattr(self, "pre_erasure_", None) is not None:
            Z = self.pre_erasure_.transform(Z)
        return self._project(torch.from_numpy(Z)).numpy()

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
        pre = getattr(self, "pre_erasure_", None)
        if pre is not None:
            tensors[_PRE + "mean"] = torch.from_numpy(np.ascontiguousarray(pre.mean_))
            tensors[_PRE + "eraser"] = torch.from_numpy(np.ascontiguousarray(pre.eraser_))
            meta["pre_erasure_rank"] = int(pre.rank_)
        blob = st_save(tensors, metadata={"format": FORMAT_NAME, "version": str(FORMAT_VERSION),
                                          "config": json.dumps(meta, default=_json_default)})
        return atomic_write(path, lambda f: f.write(blob))

    @classmethod
    def load(cls, path) -> "SensitiveNets":
        """Read a file written by save(); never executes code from it."""
        from .method_io import read_method_file

        meta, tensors = read_method_file(path, FORMAT_NAME, FORMAT_VERSION, "SensitiveNets")
        cfg = json.loads(meta["config"])
        # JSON has no tuples: give list-valued settings back as the tuples the constructor defaults to
        est = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["params"].items()})
        est.n_features_in_ = int(cfg["n_features_in"])
        est.hidden_sizes_ = [int(h) for h in cfg["hidden_sizes"]]
        est.classes_ = cfg["classes"]
        est.tau_ = cfg["tau"]
        est.history_ = cfg.get("history", [])
        est.pre_erasure_ = None
        pre = {k[len(_PRE):]: tensors.pop(k) for k in list(tensors) if k.startswith(_PRE)}
        if est.pre_erasure == "leace":
            from .erasure import LEACE
            if set(pre) != {"mean", "eraser"}:
                raise SynthfaceError(f"{path}: pre_erasure='leace' but the file lacks its tensors")
            est.pre_erasure_ = LEACE(normalize_input=False)
            est.pre_erasure_.mean_ = pre["mean"].numpy().astype(np.float64)
            est.pre_erasure_.eraser_ = pre["eraser"].numpy().astype(np.float64)
            est.pre_erasure_.rank_ = int(cfg.get("pre_erasure_rank", 0))
            est.pre_erasure_.n_features_in_ = est.n_features_in_
            est.pre_erasure_.classes_ = est.classes_
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
