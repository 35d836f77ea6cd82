"""Renderer faces as the demo world's reference for recogniser operating points.

Thresholds "at FMR F" are measured on impostor pairs of real faces; in the demo world the renderer's
faces are the real ones. They come from a population range kept for calibration alone (balanced
world, seed 0, identities 800000 on), disjoint from the ranges the world's models were trained on
and from the benchmarks experiments are judged on, so no threshold is tuned on test identities.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .world import BALANCED, World

CALIBRATION_FIRST_IDENTITY = 800_000


def renderer_reference(n: int = 2000, size: int = 64, first: int = CALIBRATION_FIRST_IDENTITY) -> dict:
    """n renderer faces of n distinct people (one image each, FFHQ-aligned), as a reference for
    synthface.identity.thresholds.reference_threshold."""
    images = _cached(n, size, first)
    return {"images": images, "identities": None,
            "source": f"demo-world renderer faces ({n} people, balanced population, identities {first}-{first + n - 1})"}


def cache_dir() -> Path:
    """SYNTHFACE_CACHE, else $XDG_CACHE_HOME/synthface, else ~/.cache/synthface."""
    if os.environ.get("SYNTHFACE_CACHE"):
        return Path(os.environ["SYNTHFACE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "synthface"


def _cached(n: int, size: int, first: int) -> np.ndarray:
    """The rendered faces, kept on disk keyed by the renderer's own source, so they are drawn once
    per machine (rendering is the slow part) and never reused after the renderer changes."""
    from ..fileio import atomic_write

    here = Path(__file__).resolve().parent
    code = b"".join((here / f).read_bytes() for f in ("renderer.py", "world.py"))
    key = hashlib.sha256(code + f"{n},{size},{first}".encode()).hexdigest()[:16]
    path = cache_dir() / f"world-reference-{key}.npy"
    if path.is_file():
        try:
            arr = np.load(path)
            if arr.shape == (n, size, size, 3) and arr.dtype == np.uint8:
                return arr
        except (OSError, ValueError):
            pass  # unreadable: render again
    world = World(seed=0, distribution=BALANCED)
    images = np.asarray(world.render(world.identities(range(first, first + n)), [0] * n, size=size))
    try:
        atomic_write(path, lambda f: np.save(f, images))
    except OSError:
        pass  # a read-only cache only costs time
    return images


COVERAGE_FIRST_IDENTITY = 8_000_000  # people of the coverage reference sets (a range of their own)
_COVERAGE_CELL_STRIDE = 100_000
_COVERAGE_SECOND = 50_000             # the second real set, for the real data's own figures


RENDER_CHUNK = 256  # faces rendered at once (each image is drawn from its own identity's stream alone)


def renderer_coverage_sets(cells, n_people: int, images: int, size: int = 64) -> dict:
    """Per cell name ('group=G,gender=S'): two disjoint sets of n_people renderer people x `images`
    images each (nuisance varied as the renderer varies it), as 112x112 ArcFace crops: what a
    synthetic cell of n_people identities x `images` images is compared with."""
    from ..align import arcface_crop112
    from .renderer import GENDERS, GROUPS
    from .world import take
    world = World(seed=0, distribution=BALANCED)
    out = {}
    for name in cells:
        parts = dict(p.split("=") for p in name.split(","))
        if set(parts) != {"group", "gender"}:
            continue
        gi, si = GROUPS.index(parts["group"]), GENDERS.index(parts["gender"])
        base = COVERAGE_FIRST_IDENTITY + (2 * gi + si) * _COVERAGE_CELL_STRIDE
        sets = []
        for first in (base, base + _COVERAGE_SECOND):
            ident = world.identities(range(first, first + n_people), group=gi, gender=si)
            rows = np.repeat(np.arange(n_people), images)
            shots = np.tile(np.arange(images), n_people)
            # in chunks: the renderer's per-pixel layers for thousands of faces at once took ~10 GB
            crops = np.concatenate([
                arcface_crop112(world.render(take(ident, rows[s:s + RENDER_CHUNK]), shots[s:s + RENDER_CHUNK],
                                             size=size))
                for s in range(0, len(rows), RENDER_CHUNK)])
            sets.append((crops, ident["index"][rows]))
        out[name] = {"real": sets[0][0], "real_identity": sets[0][1], "real2": sets[1][0],
                     "real2_identity": sets[1][1], "source": f"renderer people {base}+ and {base + _COVERAGE_SECOND}+"}
    return out


def coverage_inputs(cells, n_people: int, images: int) -> dict:
    """What `dataset.merge(coverage=...)` needs on the demo world: renderer reference sets per cell,
    the audit recogniser's and the audit attribute net's feature spaces, and the nuisance regressor."""
    from ..assets import asset
    from ..evaluation.coverage import attribute_features
    from ..identity import load_embedder
    from ..labelling.nuisance import load_nuisance_regressor
    from ..nets import load_backbone

    audit = load_embedder("world-audit")
    attr = load_backbone(asset("torch/audit_attributes.safetensors"))
    return {"real_sets": renderer_coverage_sets(cells, n_people, images),
            "features": {"audit recogniser": audit.embed_aligned,
                         "audit attributes": lambda crops: attribute_features(attr, crops)},
            "nuisance": load_nuisance_regressor("world"),
            "source": "demo-world renderer faces (balanced population, identities 8000000+)"}


ANCHOR_FIRST_IDENTITY = 9_000_000  # anchor people (latent.anchors): a range of their own


def renderer_anchor_faces(cells, per_cell: int, size: int = 64) -> tuple[np.ndarray, list]:
    """per_cell renderer people of each cell name ('group=G,gender=S'), one FFHQ-aligned image each, from the
    anchor range, and their cell names: the demo world's real faces to anchor a dataset's cells on."""
    from .renderer import GENDERS, GROUPS
    world = World(seed=0, distribution=BALANCED)
    images, names = [], []
    for name in cells:
        parts = dict(p.split("=") for p in name.split(","))
        if set(parts) != {"group", "gender"}:
            from ..errors import SynthfaceError
            raise SynthfaceError(f"the demo world's anchors are per group x gender cell, not {name!r}: "
                                 "give --cells as group=...,gender=... or all")
        gi, si = GROUPS.index(parts["group"]), GENDERS.index(parts["gender"])
        first = ANCHOR_FIRST_IDENTITY + (2 * gi + si) * _COVERAGE_CELL_STRIDE
        ident = world.identities(range(first, first + per_cell), group=gi, gender=si)
        images.append(np.asarray(world.render(ident, [0] * per_cell, size=size)))
        names += [name] * per_cell
    return np.concatenate(images), names
