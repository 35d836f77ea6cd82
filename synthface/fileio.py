"""Atomic file writes: write to a temporary name in the target folder, then rename, so a crash
never leaves a half-written file. mkstemp creates files as 0600; the result gets the mode a
plain open() would give (0666 minus the umask), so outputs stay readable by the user's group."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable


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


def write_json_atomic(path, obj) -> Path:
    return atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))
