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
