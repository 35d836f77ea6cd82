"""Similarity thresholds of a recogniser: when two faces count as the same person.

The identity selection's separation threshold and the audit's threshold are both derived here, so
`generate`, `merge` and the demo agree on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import SynthfaceError
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
    return {"threshold": float(np.quantile(s, quantile)), "kind": "quantile", "quantile": quantile, "faces": n,
            "source": f"{n} random generated faces",
            "impostor_mean": float(s.mean()), "impostor_p99": float(np.quantile(s, 0.99)),
            "impostor_p999": float(np.quantile(s, 0.999))}


def audit_threshold(G, embedder, truncation_psi: float, quantile: float = 0.99, dataset_seed: int = 0) -> float:
    """The audit recogniser's threshold for a dataset made with `dataset_seed`: its impostor
    `quantile` on random faces drawn with dataset_seed + AUDIT_SEED_OFFSET."""
    return impostor_threshold(G, embedder, truncation_psi, quantile=quantile,
                              seed=dataset_seed + AUDIT_SEED_OFFSET)["threshold"]


# ------------------------------------------------------------------ operating point on reference faces
#
# Published synthetic sets call two identities distinct when the recogniser would not match them at
# its operating point (a false-match rate measured on real faces), not when they fall below a
# quantile of generated faces: a greedy set whose every pair must stay below a q-quantile can hold
# only about ln(budget)/(1-q) identities, and a generator that collapses identities would raise its
# own bar. So the default thresholds come from impostor pairs of reference faces.

def min_reference_pairs(fmr: float) -> int:
    """Impostor pairs needed for a threshold at `fmr` to rest on at least 10 false matches."""
    return int(np.ceil(10 / fmr))


def impostor_scores(embeddings: np.ndarray, identities: Optional[np.ndarray] = None,
                    block: int = 2048) -> np.ndarray:
    """Cosine similarities of every pair of reference faces of different identities (every pair
    when `identities` is None: one face per person), in blocks so memory stays bounded."""
    e = np.asarray(embeddings, np.float32)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    out = []
    for s in range(0, len(e), block):
        S = e[s:s + block] @ e[s:].T
        rows, cols = np.triu_indices(S.shape[0], 1, S.shape[1])
        keep = np.ones(len(rows), bool) if identities is None else \
            identities[s + rows] != identities[s + cols]
        out.append(S[rows[keep], cols[keep]])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def fmr_threshold(embeddings: np.ndarray, fmr: float, identities: Optional[np.ndarray] = None,
                  source: str = "reference faces") -> dict:
    """The recogniser's threshold at false-match rate `fmr` on reference-face embeddings: the lowest
    cosine at which at most a fraction `fmr` of impostor pairs match. Returns the threshold with
    its source and how many faces and impostor pairs it rests on."""
    if not 0 < fmr < 1:
        raise SynthfaceError(f"a false-match rate must be in (0, 1), got {fmr}")
    e = np.asarray(embeddings, np.float32)
    if e.ndim != 2 or len(e) < 2 or not np.isfinite(e).all():
        raise SynthfaceError(f"{source}: expected a finite [N, D] array of at least 2 embeddings, got shape "
                             f"{e.shape}")
    scores = impostor_scores(e, identities)
    need = min_reference_pairs(fmr)
    if scores.size < need:
        faces = int(np.ceil((1 + np.sqrt(1 + 8 * need)) / 2))
        raise SynthfaceError(f"{source}: a threshold at FMR {fmr:g} needs at least {need:,} impostor pairs (10 false "
                             f"matches); {len(e)} faces give {scores.size:,}. Use about {faces:,} or more reference "
                             "faces of distinct people, or a larger FMR")
    # The lowest threshold at which at most floor(fmr * pairs) impostor pairs match: just above the
    # (k+1)-th largest score, in float32 like the scores, so comparisons agree in either precision.
    k = int(np.floor(fmr * scores.size + 1e-9))
    kth = np.partition(scores, scores.size - 1 - k)[scores.size - 1 - k]
    threshold = float(np.nextafter(np.float32(kth), np.float32(np.inf)))
    return {"threshold": threshold, "kind": "fmr", "fmr": fmr, "source": source,
            "faces": int(len(e)), "impostor_pairs": int(scores.size),
            "impostor_mean": float(scores.mean())}


def load_reference(path) -> dict:
    """A user's reference faces: an .npy of embeddings [N, D] (one face per person, from the same
    recogniser), or an ImageFolder <identity>/<image> of FFHQ-aligned images or 112x112 ArcFace crops."""
    from ..fileio import file_digest, read_image_rgb

    p = Path(path)
    if p.is_file() and p.suffix == ".npy":
        try:
            e = np.load(p)
        except (OSError, ValueError) as err:
            raise SynthfaceError(f"--reference-embeddings {p}: {err}") from None
        return {"embeddings": e, "identities": None, "source": f"{p.name} (sha {file_digest(p)})"}
    if p.is_dir():
        files = sorted(f for f in p.glob("*/*") if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not files:
            raise SynthfaceError(f"--reference-images {p}: no <identity>/<image>.png|jpg files found")
        try:
            images = np.stack([read_image_rgb(f) for f in files])
        except (OSError, ValueError) as err:
            raise SynthfaceError(f"--reference-images {p}: {err} (all images must be readable and of one size)") \
                from None
        names = sorted({f.parent.name for f in files})
        ids = np.array([names.index(f.parent.name) for f in files])
        return {"images": images, "identities": ids, "source": f"{p.name}/ ({len(names)} identities)"}
    raise SynthfaceError(f"reference faces {p}: expected an .npy of embeddings or an image folder "
                         "<identity>/<image>.png")


def reference_threshold(reference: dict, embedder, fmr: float) -> dict:
    """fmr_threshold on a reference (as load_reference or world.reference return it), embedding its
    images with `embedder` when it holds images."""
    if "embeddings" in reference:
        e = reference["embeddings"]
    else:
        imgs = reference["images"]
        e = embedder.embed_aligned(imgs) if imgs.shape[1] == 112 and imgs.shape[2] == 112 else embedder.embed(imgs)
    return fmr_threshold(e, fmr, reference.get("identities"), reference["source"])
