"""What writing a dataset (writer.py) and merging it (merge.py) share: clearing what killed writers
left in the folder, and the reference faces a threshold is measured on, by spec."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..fileio import sweep_temporaries
from ..identity.thresholds import load_reference


def sweep_dataset(out: Path) -> None:
    """Temporaries that killed or failed writers left (call with the lock held and no other writer alive)."""
    sweep_temporaries(out)
    shutil.rmtree(out / ".partial", ignore_errors=True)


def load_reference_spec(spec: str) -> dict:
    """Reference faces by spec: 'world' (the demo world's renderer faces), an .npy of embeddings or an
    image folder (synthface.identity.thresholds.load_reference)."""
    if spec == "world":
        from ..world.reference import renderer_reference
        return renderer_reference()
    return load_reference(spec)
