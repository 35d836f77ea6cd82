"""Ensemble SAN (Mirjalili, Raschka, Ross, BTAS 2018): several SANs whose auxiliary gender classifiers differ
(seed, augmentation, over-sampling of a group), so that their perturbations differ and at least one is likely
to confound a gender classifier none of them saw.

Which output is released for a face is not verified from the paper (spec §3.6: [R]); synthface's rule:

* ``rule="confound"`` (default): every member perturbs the face with its opposite-gender prototype; each
  candidate is scored by the mean probability of the face's true gender under ALL members' auxiliary
  classifiers (the ensemble's own judges, none of which need be the attacker's); the candidate with the lowest
  score is released. With ``min_similarity`` set, candidates whose matcher cosine similarity to the original
  is below it are passed over, unless none reaches it (then the most similar is released), so utility is
  kept first. The auxiliary networks are needed at transform time: loaded from the members' specs, or passed.
* ``rule="random"``: member k = a draw keyed by (seed, face index), so the attacker cannot know which
  perturbation a face received; needs no auxiliary network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator

from ..errors import SynthfaceError
from ..fileio import atomic_write
from .san import FORMAT_VERSION, SemiAdversarialNet, _plain, gender_codes, read_safetensors, to_unit
from .san_aux import load_gender_classifier, load_matcher

FORMAT_NAME = "synthface.methods.san-ensemble"
RULES = ("confound", "random")


class SANEnsemble(BaseEstimator):
    """n_members SANs sharing `base` (SemiAdversarialNet parameters); member i trains against
    classifiers[i % len(classifiers)] with seed + i. rule / min_similarity: see the module docstring."""

    def __init__(self, n_members: int = 3, base: Optional[dict] = None, classifiers: Optional[Sequence[str]] = None,
                 rule: str = "confound", min_similarity: Optional[float] = None, seed: int = 0):
        self.n_members = n_members
        self.base = base
        self.classifiers = classifiers
        self.rule = rule
        self.min_similarity = min_similarity
        self.seed = seed

    def _check_params(self) -> None:
        if self.rule not in RULES:
            raise SynthfaceError(f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if not isinstance(self.n_members, (int, np.integer)) or self.n_members < 1:
            raise SynthfaceError(f"n_members must be a positive integer, got {self.n_members!r}")

    def fit(self, images, gender, classifiers: Optional[Sequence] = None, matcher=None, embedding_probe=None,
            embedding_matcher=None, log: Optional[Callable[[str], None]] = None) -> "SANEnsemble":
        """classifiers: loaded GenderClassifiers (or specs), one per member or cycled; default the
        constructor's `classifiers`, else the base's gender_classifier for every member. embedding_probe,
        embedding_matcher: passed to every member (SemiAdversarialNet.fit)."""
        self._check_params()
        base = dict(self.base or {})
        clfs = list(classifiers if classifiers is not None else (self.classifiers or [base.get(
            "gender_classifier", "world-attributes")]))
        if not clfs:
            raise SynthfaceError("an ensemble needs at least one auxiliary gender classifier")
        self.members_ = []
        for i in range(int(self.n_members)):
            clf = clfs[i % len(clfs)]
            spec = clf if isinstance(clf, str) else getattr(clf, "spec", None)
            params = {**base, "seed": int(base.get("seed", 0)) + int(self.seed) + i, "gender_classifier": spec}
            if log:
                log(f"ensemble member {i + 1}/{self.n_members}: classifier {spec}, seed {params['seed']}")
            self.members_.append(SemiAdversarialNet(**params).fit(images, gender, classifier=clf, matcher=matcher,
                                                                  embedding_probe=embedding_probe,
                                                                  embedding_matcher=embedding_matcher, log=log))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "members_"):
            raise SynthfaceError("this SANEnsemble is not fitted yet: call fit or SANEnsemble.load(path) first")

    def candidates(self, images, gender, batch: int = 64) -> np.ndarray:
        """Every member's opposite-prototype output: uint8 [M, N, S, S, 3]."""
        self._check_fitted()
        return np.stack([m.transform(images, "opposite", gender=gender, batch=batch) for m in self.members_])

    @torch.no_grad()
    def _scores(self, cands: np.ndarray, images, codes: np.ndarray, classifiers, matcher, batch: int):
        """(mean probability of the true gender [M, N], matcher similarity to the original [M, N] or None)."""
        first = self.members_[0]
        clfs = [load_gender_classifier(c, first.layout) for c in (
            classifiers if classifiers is not None else [m.aux_.get("gender_classifier") for m in self.members_])
            if c is not None]
        if not clfs:
            raise SynthfaceError("rule 'confound' needs the members' gender classifiers: pass classifiers=")
        y = torch.from_numpy(codes)
        p_true = np.zeros(cands.shape[:2])
        sims = None
        mat = None
        if self.min_similarity is not None:
            spec = matcher if matcher is not None else first.aux_.get("matcher")
            if spec is None:
                raise SynthfaceError("min_similarity needs a matcher: pass matcher=")
            mat = load_matcher(spec, first.layout)
            sims = np.zeros(cands.shape[:2])
        for s in range(0, cands.shape[1], batch):
            sl = slice(s, s + batch)
            ref = mat(to_unit(images[sl], bool(first.rgb))) if mat is not None else None
            for k in range(len(cands)):
                x = to_unit(cands[k, sl], True)
                probs = [torch.softmax(c(x), 1).gather(1, y[sl, None])[:, 0] for c in clfs]
                p_true[k, sl] = torch.stack(probs).mean(0).numpy()
                if mat is not None:
                    sims[k, sl] = (mat(x) * ref).sum(1).numpy()
        return p_true, sims

    def choose(self, images, gender, classifiers=None, matcher=None, batch: int = 64) -> tuple[np.ndarray, dict]:
        """(released uint8 [N, S, S, 3], {"member": [N] chosen member, "candidates": [M, N, ...]})."""
        self._check_params()
        codes = gender_codes(gender, len(images))
        cands = self.candidates(images, codes, batch)
        n = cands.shape[1]
        if self.rule == "random":
            pick = np.array([int(np.random.default_rng([int(self.seed), i]).integers(len(cands))) for i in range(n)])
        else:
            p_true, sims = self._scores(cands, np.asarray(images), codes, classifiers, matcher, batch)
            score = p_true.copy()
            if sims is not None:
                ok = sims >= float(self.min_similarity)
                score[~ok] = np.inf
                none_ok = ~ok.any(0)
                score[:, none_ok] = -sims[:, none_ok]  # nobody reaches the floor: the most similar
            pick = score.argmin(0)
        return cands[pick, np.arange(n)], {"member": pick, "candidates": cands}

    def transform(self, images, gender, classifiers=None, matcher=None, batch: int = 64) -> np.ndarray:
        return self.choose(images, gender, classifiers, matcher, batch)[0]

    def save(self, path) -> Path:
        from safetensors.torch import save as st_save

        self._check_fitted()
        tensors, members = {}, []
        for i, m in enumerate(self.members_):
            tensors.update({f"m{i}.{k}": v for k, v in m.state_tensors().items()})
            members.append(m._meta())
        meta = {"params": self.get_params(), "members": members}
        blob = st_save(tensors, metadata={"format": FORMAT_NAME, "version": str(FORMAT_VERSION),
                                          "config": json.dumps(meta, default=_plain)})
        return atomic_write(path, lambda f: f.write(blob))

    @classmethod
    def load(cls, path) -> "SANEnsemble":
        meta, tensors = read_safetensors(path, FORMAT_NAME, "SANEnsemble")
        cfg = json.loads(meta["config"])
        est = cls(**cfg["params"])
        est.members_ = []
        for i, mm in enumerate(cfg["members"]):
            pre = f"m{i}."
            est.members_.append(SemiAdversarialNet.from_state(
                mm, {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}, f"{path} member {i}"))
        return est


def load_san(path):
    """A SemiAdversarialNet or SANEnsemble from its file, whichever it holds."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            fmt = (f.metadata() or {}).get("format")
    except Exception:  # unreadable: let the single-model loader say why
        fmt = None
    return SANEnsemble.load(path) if fmt == FORMAT_NAME else SemiAdversarialNet.load(path)


__all__ = ["SANEnsemble", "load_san", "RULES"]
