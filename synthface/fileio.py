"""File writing and image I/O. Every write is atomic: write to a temporary name in the target
folder, then rename, so a crash never leaves a half-written file. mkstemp creates files as 0600;
the result gets the mode a plain open() would give (0666 minus the umask), so outputs stay
readable by the user's group."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np


def umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path, write: Callable, suffix: str = ".tmp") -> Path:
    """Call write(file object) on a temporary file beside `path`, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def file_digest(path) -> str:
    """First 16 hex digits of a file's sha256 (how models and weights are identified in metadata)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def write_json_atomic(path, obj) -> Path:
    return atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def save_image_atomic(arr: np.ndarray, path: os.PathLike) -> Path:
    """Write an HWC (or HW) uint8 image as PNG, atomically."""
    from PIL import Image

    mode = "L" if arr.ndim == 2 or arr.shape[2] == 1 else "RGB"
    img = Image.fromarray(arr.squeeze(-1) if mode == "L" and arr.ndim == 3 else arr, mode)
    return atomic_write(path, lambda f: img.save(f, format="PNG"), suffix=".png")


def read_image_rgb(path: os.PathLike) -> np.ndarray:
    """An image file as HWC uint8 RGB."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def image_grid(images: Sequence[np.ndarray], cols: Optional[int] = None, pad: int = 2) -> np.ndarray:
    """Tile HWC images into one grid image (white padding), e.g. for a contact sheet."""
    from .errors import SynthfaceError

    if not images:
        raise SynthfaceError("no images to tile")
    n = len(images)
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h, w, c = images[0].shape
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = im
    return grid
