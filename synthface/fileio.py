"""File writing and image I/O. Every write is atomic: write to a temporary name in the target
folder, then rename, so a crash never leaves a half-written file. mkstemp creates files as 0600;
the result gets the mode a plain open() would give (0666 minus the umask), so outputs stay
readable by the user's group. Temporary names end in ".tmp" (is_temporary), so a later run can
sweep what a killed one left (sweep_temporaries)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from .errors import SynthfaceError

# mkstemp/mkdtemp names: ".NAME." + 8 random characters + suffix; older versions ended image temporaries in ".png"
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)*\.(tmp|png)$")


def umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path, write: Callable, suffix: str = ".tmp") -> Path:
    """Call write(file object) on a temporary file beside `path`, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix.endswith(".tmp") else suffix + ".tmp"  # recognisable by sweep_temporaries
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


def is_temporary(name: str) -> bool:
    """A temporary name of atomic_write / temp_path, or a fixed "*.tmp" name of older versions."""
    return bool(_TEMP_NAME.match(name)) or name.endswith(".tmp")


def temp_path(path, directory: bool = False) -> Path:
    """A fresh temporary file (or folder) beside `path`, unique to this writer, named as
    is_temporary recognises. The caller renames it into place or removes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def sweep_temporaries(root, skip: Iterable[str] = (".synthface-lock",)) -> list[Path]:
    """Remove the temporary files and folders (is_temporary) under `root` that killed or failed
    writers left. Only call it while holding root's writer lock with no other writer alive."""
    removed = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for d in [d for d in dirnames if is_temporary(d)]:
            shutil.rmtree(os.path.join(dirpath, d), ignore_errors=True)
            dirnames.remove(d)
            removed.append(Path(dirpath, d))
        for f in filenames:
            if is_temporary(f):
                try:
                    os.unlink(os.path.join(dirpath, f))
                    removed.append(Path(dirpath, f))
                except FileNotFoundError:
                    pass
    return removed


class DiskFull(SynthfaceError):
    """No space (or quota) left while writing an output."""


@contextmanager
def disk_full_message(target, rerun: str = "run the same command again; finished parts are kept"):
    """Turn 'no space left on device' (or quota exceeded) while writing `target` into one clear message."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" (writing {e.filename})" if e.filename else ""
        raise DiskFull(f"no space left on the device of {target}{where}; free some space, then {rerun}") from None


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


def cache_key(settings, root: Path):
    """Settings as a cache key: paths inside the folder `root` (a run's output folder) written relative to it (as
    "<out>/..."), so that a copied or moved run folder still finds the parts it trained."""
    if isinstance(settings, dict):
        return {k: cache_key(v, root) for k, v in settings.items()}
    if isinstance(settings, (list, tuple)):
        return [cache_key(v, root) for v in settings]
    if isinstance(settings, str):
        for prefix in sorted({str(root), os.path.abspath(root)}, key=len, reverse=True):
            settings = settings.replace(prefix + os.sep, "<out>" + os.sep)
    return settings


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
