#!/usr/bin/env python
"""How strongly CID weights follow identity frequency for a given bandwidth / estimator, on
identity-structured 512-d embeddings: one person with 50 images among 1,000 people with 1-5 images
each, all in one class (synthetic Gaussian people, or with --world the demo world's rendered faces
embedded by its recogniser). For each setting: the dominant person's mean weight over the mean weight
of people with one image (the identity oracle gives 1/50 = 0.02), the largest/smallest weight, and
the correlation with the oracle's weights. Prints JSON.

    python scripts/probe_cid_bandwidth.py --spreads 0.4,0.6
    python scripts/probe_cid_bandwidth.py --world 600     # 600 rendered people + the 50-image one
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from synthface.methods.cid import CIDWeights, oracle_identity_weights  # noqa: E402

SETTINGS = [{}, {"k": 1}, {"estimator": "knn"}, {"estimator": "knn", "k": 1},
            {"bandwidth": 0.5}, {"bandwidth": 0.4}, {"bandwidth": 0.3}, {"bandwidth": 0.2}]


def synthetic_people(spread: float, dim: int, rng):
    counts = np.r_[50, rng.integers(1, 6, 1000)]
    ident = np.repeat(np.arange(len(counts)), counts)
    X = rng.standard_normal((len(counts), dim))[ident] + spread * rng.standard_normal((len(ident), dim))
    return X / np.linalg.norm(X, axis=1, keepdims=True), ident


def world_people(n_people: int, rng):
    from synthface.identity.embedders import load_embedder
    from synthface.world import World
    from synthface.world.dataset import render_population
    counts = np.r_[50, rng.integers(1, 6, n_people)]
    images, ident = [], []
    for m in np.unique(counts):  # render_population takes one image count per call
        who = [10_000 + int(i) for i in np.flatnonzero(counts == m)]  # people no world model trained on
        for person, _, im in render_population(World(seed=0), who, int(m), size=64):
            images.append(im)
            ident.append(int(person["index"]) - 10_000)
    return load_embedder("world").embed(np.stack(images)), np.asarray(ident)


def probe(X, ident, label):
    y = np.zeros(len(ident), int)
    dom = ident == 0
    cos = (X[dom] @ X[dom].T)[np.triu_indices(int(dom.sum()), 1)].mean()
    single = np.bincount(ident)[ident] == 1
    oracle = oracle_identity_weights(ident, y, normalize="per_class")
    row = {"data": label, "n": int(len(y)), "dim": int(X.shape[1]), "same_person_cosine": float(cos),
           "same_person_distance": float(np.sqrt(2 - 2 * cos)), "settings": []}
    for cfg in SETTINGS:
        m = CIDWeights(max_ratio=None, **cfg).fit(X, y)
        w = m.weights_
        row["settings"].append({"params": cfg, "bandwidth": None if np.isnan(m.bandwidth_[0]) else float(m.bandwidth_[0]),
                                "dominant_over_singleton": float(w[dom].mean() / w[single].mean()),
                                "max_over_min": float(w.max() / w.min()),
                                "corr_with_oracle": float(np.corrcoef(w, oracle)[0, 1])})
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spreads", default="0.4,0.6", help="within-person noise per coordinate, before the norm")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--world", type=int, default=0, help="probe the demo world with this many people instead")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    if a.world:
        out = [probe(*world_people(a.world, rng), "world")]
    else:
        out = [probe(*synthetic_people(float(s), a.dim, rng), f"gaussian spread {s}") for s in a.spreads.split(",")]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
