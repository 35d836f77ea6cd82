"""The demo world: numbered identities with known attributes, rendered deterministically.

Identity `i` of a world with seed `s` draws its attributes and parameters from its own
random stream (s, "identity", i) and image `j` of it draws its nuisance from (s, "image", i, j),
so any subset of identities or images renders the same whatever the batch or order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from .renderer import AGE_RANGE, GENDERS, GROUPS, draw_identities, draw_nuisance, landmarks, render

_IDENTITY, _IMAGE, _ATTRIBUTES = 0, 1, 2

# Web-scraped face data is dominated by one group and by men; this is the bias the demo
# generator is trained on and the balancing pipeline has to undo.
BIASED = {"group": {"group1": 0.25, "group2": 0.15, "group3": 0.60}, "gender": {"female": 0.35, "male": 0.65}}
BALANCED = {"group": {g: 1 / len(GROUPS) for g in GROUPS}, "gender": {g: 1 / len(GENDERS) for g in GENDERS}}


def _probs(dist: Mapping[str, float], names: Sequence[str], what: str) -> np.ndarray:
    unknown = set(dist) - set(names)
    if unknown:
        raise ValueError(f"unknown {what} value(s) {sorted(unknown)}; choose from {list(names)}")
    p = np.array([float(dist.get(n, 0.0)) for n in names])
    if (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"{what} proportions must be non-negative and not all zero, got {dict(dist)}")
    return p / p.sum()


def _concat(parts: list[dict]) -> dict:
    return {k: np.concatenate([d[k] for d in parts]) for k in parts[0]}


@dataclass(frozen=True)
class World:
    """A population of procedural people. `distribution` sets how attributes are drawn
    (BIASED, BALANCED or any {"group": {...}, "gender": {...}} of proportions)."""

    seed: int = 0
    distribution: Mapping = None  # type: ignore[assignment]

    def __post_init__(self):
        if self.distribution is None:
            object.__setattr__(self, "distribution", BALANCED)

    def attributes(self, indices: Iterable[int]) -> dict:
        """group index, gender index and age (years) of each identity."""
        pg = _probs(self.distribution["group"], GROUPS, "group")
        ps = _probs(self.distribution["gender"], GENDERS, "gender")
        out = {"group": [], "gender": [], "age": []}
        for i in indices:
            rng = np.random.default_rng([self.seed, _ATTRIBUTES, int(i)])
            out["group"].append(rng.choice(len(GROUPS), p=pg))
            out["gender"].append(rng.choice(len(GENDERS), p=ps))
            # adult ages skewed young, as in web photos
            out["age"].append(float(np.clip(AGE_RANGE[0] + rng.gamma(2.0, 9.0), *AGE_RANGE)))
        return {k: np.asarray(v) for k, v in out.items()}

    def identities(self, indices: Sequence[int], group=None, gender=None, age=None) -> dict:
        """Identity parameters; attributes default to the world's distribution and may be
        forced (arrays of group/gender indices and ages)."""
        indices = list(indices)
        attrs = self.attributes(indices)
        for k, v in (("group", group), ("gender", gender), ("age", age)):
            if v is not None:
                attrs[k] = np.broadcast_to(np.asarray(v), (len(indices),))
        parts = []
        for n, i in enumerate(indices):
            rng = np.random.default_rng([self.seed, _IDENTITY, int(i)])
            parts.append(draw_identities(rng, attrs["group"][n:n + 1], attrs["gender"][n:n + 1], attrs["age"][n:n + 1]))
        ident = _concat(parts)
        ident["index"] = np.asarray(indices, dtype=np.int64)
        return ident

    def nuisance(self, identity: dict, image_indices: Sequence[int], strength: float = 1.0) -> dict:
        """Per-image variation for image j of each identity (one j per row of `identity`)."""
        parts = []
        for n, (i, j) in enumerate(zip(identity["index"], image_indices)):
            rng = np.random.default_rng([self.seed, _IMAGE, int(i), int(j)])
            parts.append(draw_nuisance(rng, 1, identity["glasses_habit"][n:n + 1], strength))
        return _concat(parts)

    def render(self, identity: dict, image_indices: Sequence[int], size: int = 64, strength: float = 1.0,
               return_landmarks: bool = False):
        q = self.nuisance(identity, image_indices, strength)
        img = render(identity, q, size)
        return (img, landmarks(identity, q, size)) if return_landmarks else img


def take(identity: dict, rows) -> dict:
    """Rows of an identity batch (e.g. to repeat each identity K times)."""
    rows = np.asarray(rows)
    return {k: np.asarray(v)[rows] for k, v in identity.items()}


def labels_of(identity: dict) -> dict:
    """Readable labels of an identity batch."""
    return {"group": [GROUPS[g] for g in identity["group"]], "gender": [GENDERS[s] for s in identity["gender"]],
            "age": [float(a) for a in identity["age"]]}
