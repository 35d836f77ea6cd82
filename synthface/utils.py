"""Small helpers every stage shares: the default log function, progress bars and keyed random
streams. Kept here once so that a log line, a bar or a random draw behaves the same everywhere."""

from __future__ import annotations

import sys
import zlib

import numpy as np


def log_stderr(message: str) -> None:
    """The default `log` of every long-running API function: one line to stderr."""
    print(message, file=sys.stderr)


def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool = True, initial: int = 0):
    """A tqdm bar on stderr. On a terminal it refreshes continuously; in a log file (no terminal)
    it writes a line every 30 s instead of on every update."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit=unit, desc=desc, disable=not enabled, file=sys.stderr,
                leave=False, mininterval=0.1 if sys.stderr.isatty() else 30)


def name_key(name: str) -> int:
    """A stable integer for a name (e.g. a cell), to key random streams by it."""
    return zlib.crc32(name.encode())


def keyed_rng(*keys) -> np.random.Generator:
    """A random stream determined by integer keys alone, e.g. (seed, name_key(cell), j): a draw
    depends on what it is for, never on how many draws came before it or on batching."""
    return np.random.default_rng([int(k) for k in keys])


def cell_file_name(cell: str) -> str:
    """'group=a,gender=b' -> 'group-a_gender-b' (a file or folder name; '/' cannot be in one)."""
    return cell.replace(",", "_").replace("=", "-").replace("/", "-")
