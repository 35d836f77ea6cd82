"""How well does a generator reproduce the demo world? Label random samples with the world's
classifier, report confidence and cell frequencies next to the training distribution, and draw
a seed grid and one contact sheet per group x gender cell."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..fileio import image_grid, save_image_atomic, write_json_atomic
from ..generator.synthesis import generate_images
from ..labelling import OnnxClassifier
from .renderer import GENDERS, GROUPS

CELLS = [(g, s) for g in GROUPS for s in GENDERS]


def expected_cell_frequencies(distribution: dict) -> dict[str, float]:
    """Cell frequencies of a world distribution (group and gender are drawn independently)."""
    pg = {k: v / sum(distribution["group"].values()) for k, v in distribution["group"].items()}
    ps = {k: v / sum(distribution["gender"].values()) for k, v in distribution["gender"].items()}
    return {f"{g}/{s}": pg.get(g, 0.0) * ps.get(s, 0.0) for g, s in CELLS}


def label_images(classifier: OnnxClassifier, images: np.ndarray, confidence: float = 0.9) -> dict:
    probs = classifier.predict_proba(images)
    g, s = probs["group"], probs["gender"]
    cell = [f"{GROUPS[a]}/{GENDERS[b]}" for a, b in zip(g.argmax(1), s.argmax(1))]
    group_ok, gender_ok = g.max(1) >= confidence, s.max(1) >= confidence
    return {"cell": np.array(cell), "confident": group_ok & gender_ok, "group_confident": group_ok,
            "gender_confident": gender_ok, "group_p": g, "gender_p": s}


def confidence_table(labels: dict) -> dict[str, float]:
    """Fractions labelled with probability >= the threshold: by both classifier heads, and by each."""
    return {"confident_0.9_fraction": float(labels["confident"].mean()),
            "group_confident_0.9_fraction": float(labels["group_confident"].mean()),
            "gender_confident_0.9_fraction": float(labels["gender_confident"].mean())}


def cell_table(labels: dict) -> dict[str, float]:
    n = len(labels["cell"])
    return {f"{g}/{s}": float((labels["cell"] == f"{g}/{s}").sum() / n) for g, s in CELLS}


def assess_generator(G, classifier: OnnxClassifier, outdir, n: int = 1000, seeds: Sequence[int] | None = None,
                     distribution: dict | None = None, truncation_psi: float = 1.0, sheet_size: int = 24,
                     log: Callable = print) -> dict:
    """Generate n images from seeds 0..n-1 (psi 1: the model's own distribution), label them,
    and write seed_grid.png, cells/<group>_<gender>.png and assessment.json into outdir."""
    outdir = Path(outdir)
    seeds = list(range(n)) if seeds is None else list(seeds)
    images = np.stack([im for _, im in generate_images(G, seeds, truncation_psi=truncation_psi, noise_mode="const",
                                                       batch_size=64, progress=True)])
    lab = label_images(classifier, images)
    freq = cell_table(lab)
    res = {"images": len(images), "truncation_psi": truncation_psi, **confidence_table(lab), "cell_frequency": freq}
    if distribution is not None:
        exp = expected_cell_frequencies(distribution)
        res["training_cell_frequency"] = exp
        res["max_abs_difference_points"] = float(100 * max(abs(freq[c] - exp[c]) for c in freq))
    save_image_atomic(image_grid(list(images[:64]), cols=8), outdir / "seed_grid.png")
    sheets = {}
    for g, s in CELLS:
        rows = np.flatnonzero((lab["cell"] == f"{g}/{s}") & lab["confident"])[:sheet_size]
        if len(rows):
            p = save_image_atomic(image_grid(list(images[rows]), cols=8), outdir / "cells" / f"{g}_{s}.png")
            sheets[f"{g}/{s}"] = str(p.relative_to(outdir))
    res["contact_sheets"] = sheets
    write_json_atomic(outdir / "assessment.json", res)
    return res


def world_reference(world, classifier: OnnxClassifier, n: int = 1000, first_identity: int = 0) -> dict:
    """The same statistics on renderer images of a world: what a perfect generator would score."""
    ident = world.identities(range(first_identity, first_identity + n))
    images = world.render(ident, [0] * n, size=64)
    lab = label_images(classifier, images)
    truth = np.array([f"{GROUPS[a]}/{GENDERS[b]}" for a, b in zip(ident["group"], ident["gender"])])
    return {"images": n, **confidence_table(lab),
            "cell_accuracy": float((lab["cell"] == truth).mean()), "cell_frequency": cell_table(lab)}
