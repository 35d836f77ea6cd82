"""The labeller interface, label-set mapping and combination.

A labeller takes uint8 RGB FFHQ-aligned images [N, H, W, 3] (numpy or torch) and returns
{attribute: class probabilities [N, n_classes]}; `schema` names the classes of each attribute
and `describe()` is what a latent bank records about it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import SynthfaceError
from ..fileio import file_digest  # noqa: F401  (re-exported for older imports)


@runtime_checkable
class Labeller(Protocol):
    schema: dict[str, list[str]]

    def predict_proba(self, images) -> dict[str, np.ndarray]: ...

    def describe(self) -> dict: ...


# FairFace's 7 races onto the 6 groups of LatentPlay / Rahimi et al. (the two Asian classes merged).
FAIRFACE7_TO_6 = {"White": "white", "Black": "black", "Latino_Hispanic": "hispanic", "East Asian": "asian",
                  "Southeast Asian": "asian", "Indian": "indian", "Middle Eastern": "middleeastern"}
FAIRFACE7_TO_4 = {"White": "white", "Black": "black", "East Asian": "asian", "Southeast Asian": "asian",
                  "Indian": "indian", "Latino_Hispanic": None, "Middle Eastern": None}
GENDER_LOWER = {"Male": "male", "Female": "female"}

# Named schemas for `--schema`: target attribute -> (source attribute, class map or None to keep).
PRESETS: dict[str, dict] = {
    "fairface6": {"ethnicity": {"from": "race", "classes": FAIRFACE7_TO_6},
                  "gender": {"from": "gender", "classes": GENDER_LOWER}},
    "fairface4": {"ethnicity": {"from": "race", "classes": FAIRFACE7_TO_4},
                  "gender": {"from": "gender", "classes": GENDER_LOWER}},
}


class MappedLabeller:
    """Renames attributes and maps label sets, e.g. FairFace's 7 races onto 6 groups.

    `spec` = {target: {"from": source attribute, "classes": {source class: target class or None}}}.
    A target class gets the summed probability of its source classes; a source class mapped to
    None is dropped and the rest renormalised (its mass is reported as `dropped_mass`). Every
    source class must be mentioned, so a typo cannot silently lose a class. Only the
    attributes named in `spec` are kept.
    """

    def __init__(self, labeller: Labeller, spec: Mapping[str, Mapping]):
        self.inner = labeller
        self.spec = {k: dict(v) for k, v in spec.items()}
        self.schema: dict[str, list[str]] = {}
        self._maps: dict[str, tuple[str, Optional[np.ndarray], list[str]]] = {}
        for target, rule in self.spec.items():
            source = rule.get("from", target)
            if source not in labeller.schema:
                raise SynthfaceError(f"schema: attribute {target!r} maps from {source!r}, which the labeller does "
                                     f"not produce; it produces {sorted(labeller.schema)}")
            src_classes = labeller.schema[source]
            cmap = rule.get("classes")
            if cmap is None:
                self.schema[target] = list(src_classes)
                self._maps[target] = (source, None, src_classes)
                continue
            unknown = sorted(set(cmap) - set(src_classes))
            missing = [c for c in src_classes if c not in cmap]
            if unknown or missing:
                raise SynthfaceError(f"schema: mapping for {target!r} must name exactly the classes of {source!r} "
                                     f"{src_classes}; unknown: {unknown}, not mapped: {missing} "
                                     "(map a class to null to drop it)")
            targets = list(dict.fromkeys(v for v in cmap.values() if v is not None))
            if not targets:
                raise SynthfaceError(f"schema: mapping for {target!r} drops every class")
            M = np.zeros((len(src_classes), len(targets)), np.float64)
            for i, c in enumerate(src_classes):
                if cmap[c] is not None:
                    M[i, targets.index(cmap[c])] = 1.0
            self.schema[target] = targets
            self._maps[target] = (source, M, src_classes)

    def predict_proba(self, images) -> dict[str, np.ndarray]:
        raw = self.inner.predict_proba(images)
        out = {}
        for target, (source, M, _) in self._maps.items():
            p = np.asarray(raw[source], np.float64)
            if M is not None:
                p = p @ M
                p = p / np.clip(p.sum(1, keepdims=True), 1e-12, None)
            out[target] = p.astype(np.float32)
        return out

    def describe(self) -> dict:
        return {"kind": "mapped", "schema": self.spec, "inner": self.inner.describe()}


class CombinedLabeller:
    """Several labellers side by side (e.g. FairFace for ethnicity and insightface for gender)."""

    def __init__(self, labellers: Sequence[Labeller]):
        if not labellers:
            raise SynthfaceError("no labeller given")
        self.labellers = list(labellers)
        self.schema: dict[str, list[str]] = {}
        for lab in self.labellers:
            for name, classes in lab.schema.items():
                if name in self.schema:
                    raise SynthfaceError(f"two labellers both produce attribute {name!r}; keep it from one of them "
                                         f"with SPEC#ATTR,... (e.g. fairface:res34.pt#race) or drop one labeller")
                self.schema[name] = list(classes)

    def predict_proba(self, images) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for lab in self.labellers:
            out.update(lab.predict_proba(images))
        return out

    def describe(self) -> dict:
        if len(self.labellers) == 1:
            return self.labellers[0].describe()
        return {"kind": "combined", "labellers": [lab.describe() for lab in self.labellers]}


def load_schema(text_or_path: str) -> dict:
    """A preset name (fairface6, fairface4), a JSON file, or inline JSON."""
    if text_or_path in PRESETS:
        return PRESETS[text_or_path]
    p = Path(text_or_path)
    try:
        spec = json.loads(p.read_text()) if p.is_file() else json.loads(text_or_path)
    except json.JSONDecodeError as e:
        raise SynthfaceError(f"--schema {text_or_path!r} is neither a preset ({', '.join(PRESETS)}), a JSON file nor "
                             f"inline JSON: {e}") from None
    if not isinstance(spec, dict) or not all(isinstance(v, dict) for v in spec.values()):
        raise SynthfaceError('--schema must map attribute names to {"from": ..., "classes": {...}} objects')
    return spec
