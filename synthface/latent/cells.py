"""Demographic cells: one class per attribute, e.g. {"gender": "female", "ethnicity": "hispanic"}."""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import numpy as np

from ..errors import SynthfaceError

Cell = tuple[str, ...]  # class names, in the model's attribute order


def cell_name(attributes: Sequence[str], cell: Sequence[str]) -> str:
    return ",".join(f"{a}={c}" for a, c in zip(attributes, cell))


def all_cells(schema: Mapping[str, Sequence[str]], attributes: Sequence[str]) -> list[Cell]:
    return [tuple(c) for c in itertools.product(*[schema[a] for a in attributes])]


def parse_cell(text: str, schema: Mapping[str, Sequence[str]], attributes: Sequence[str]) -> dict[str, str]:
    """'gender=female,ethnicity=hispanic' -> {attribute: class}; unnamed attributes are free."""
    spec: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise SynthfaceError(f"bad cell {text!r}: write attribute=class pairs, e.g. "
                                 f"{cell_name(attributes, [schema[a][0] for a in attributes])}")
        a, _, c = (s.strip() for s in part.partition("="))
        if a not in attributes:
            raise SynthfaceError(f"unknown attribute {a!r} in cell {text!r}; the model knows {', '.join(attributes)}")
        if c not in schema[a]:
            raise SynthfaceError(f"unknown class {c!r} for {a!r} in cell {text!r}; classes: {', '.join(schema[a])}")
        if a in spec and spec[a] != c:
            raise SynthfaceError(f"cell {text!r} names {a!r} twice")
        spec[a] = c
    if not spec:
        raise SynthfaceError(f"empty cell {text!r}")
    return {a: spec[a] for a in attributes if a in spec}  # canonical order: the model's attributes


def parse_cells(text: str, schema, attributes) -> list[dict[str, str]]:
    """'all' (every full cell), 'all:a,b' (every combination of attributes a and b; the others are
    free, so each cell is balanced over them), or cells separated by ';'."""
    text = text.strip()
    if text == "all":
        return [dict(zip(attributes, c)) for c in all_cells(schema, attributes)]
    if text.startswith("all:"):
        over = [a.strip() for a in text[4:].split(",") if a.strip()]
        unknown = [a for a in over if a not in attributes]
        if not over or unknown or len(set(over)) != len(over):
            raise SynthfaceError(f"bad cells {text!r}: after 'all:' name distinct attributes of the model "
                                 f"({', '.join(attributes)}), e.g. all:{','.join(attributes[:2])}")
        over = [a for a in attributes if a in over]  # canonical order: the model's attributes
        return [dict(zip(over, c)) for c in all_cells(schema, over)]
    return [parse_cell(t, schema, attributes) for t in text.split(";") if t.strip()]


def spec_name(spec: Mapping[str, str]) -> str:
    return ",".join(f"{a}={c}" for a, c in spec.items())


def label_cells(probs: Mapping[str, np.ndarray], attributes, confidence: float):
    """Per-sample class index [N, A] and whether each attribute's label is confident [N, A]."""
    idx = np.stack([np.asarray(probs[a]).argmax(1) for a in attributes], 1)
    conf = np.stack([np.asarray(probs[a]).max(1) >= confidence for a in attributes], 1)
    return idx, conf


def matches(idx: np.ndarray, conf: np.ndarray, spec: Mapping[str, str], schema, attributes) -> np.ndarray:
    """Which labelled samples are confidently in the (possibly partial) cell `spec`: the named
    attributes must have the named class with confidence; the others are free."""
    ok = np.ones(len(idx), bool)
    for j, a in enumerate(attributes):
        if a in spec:
            ok &= conf[:, j] & (idx[:, j] == list(schema[a]).index(spec[a]))
    return ok
