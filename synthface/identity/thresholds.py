"""Similarity thresholds of a recogniser: when two faces count as the same person.

The identity selection's separation threshold and the audit's threshold are both derived here, so
`generate`, `merge` and the demo agree on them.
"""

from __future__ import annotations

import numpy as np

from ..generator.synthesis import prior_latents, synthesize
from ..utils import keyed_rng

# The audit threshold is measured on other random faces than the separation threshold (seed + 1),
# so the recogniser that judges a dataset is not calibrated on the faces that built it.
AUDIT_SEED_OFFSET = 1


def impostor_threshold(G, embedder, truncation_psi: float = 1.0, n: int = 1000, quantile: float = 0.99,
                       seed: int = 0) -> dict:
    """Separation threshold from the recogniser's impostor distribution: the `quantile` of cosine
    similarities between n random prior faces (distinct seeds, so almost all distinct people)."""
    seeds = keyed_rng(seed, 0x1A9).integers(0, 2**32 - 1, n).tolist()
    W = prior_latents(G, seeds, truncation_psi)
    e = embedder.embed(synthesize(G, W, "const"))
    S = e @ e.T
    iu = np.triu_indices(n, 1)
    s = S[iu]
    return {"threshold": float(np.quantile(s, quantile)), "quantile": quantile, "faces": n,
            "impostor_mean": float(s.mean()), "impostor_p99": float(np.quantile(s, 0.99)),
            "impostor_p999": float(np.quantile(s, 0.999))}


def audit_threshold(G, embedder, truncation_psi: float, quantile: float = 0.99, dataset_seed: int = 0) -> float:
    """The audit recogniser's threshold for a dataset made with `dataset_seed`: its impostor
    `quantile` on random faces drawn with dataset_seed + AUDIT_SEED_OFFSET."""
    return impostor_threshold(G, embedder, truncation_psi, quantile=quantile,
                              seed=dataset_seed + AUDIT_SEED_OFFSET)["threshold"]
