"""Writer locks on output directories, so two runs never write one dataset or bank at once.

Every writer holds an flock on its own file in DIR/.synthface-lock/ holding its pid, host, command,
start time and job identity. The kernel drops an flock when its process dies, even by kill -9, so a
file nobody holds an flock on is a stale lock: the next writer removes it (and may then sweep the
dead writer's temporary files). Every decision is taken under a short exclusive flock on
DIR/.synthface-lock/register, so two writers starting at the same moment cannot both win.

Shards of one job share a directory: each takes its own slot ("generate-00001-of-00004") with the
same job identity, in shared mode. Anything else (a second writer of the same slot, a writer of
another job, an exclusive writer such as merge while shards run) is refused with the holder's pid.
The lock folder is removed when its last holder releases it, so finished outputs do not carry it.
flock works on local file systems and on NFS v4 (where Linux maps it to NFS byte-range locks).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .errors import SynthfaceError

LOCK_DIR = ".synthface-lock"
REGISTER = "register"

# (real directory, slot) -> [lock, depth]: a process may take a lock it already holds (generate
# holds its shard slot around the merge it runs afterwards).
_HELD: dict = {}


class DirectoryLocked(SynthfaceError):
    """Another running process writes the directory."""


@dataclass
class Holder:
    slot: str
    pid: int
    host: str
    started: float
    command: str
    job: Optional[str]
    shared: bool

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host} ({self.command}, {self.slot}, since {when})"

    def is_me(self) -> bool:
        return self.pid == os.getpid() and self.host == socket.gethostname()


def _command() -> str:
    argv = [Path(sys.argv[0]).name] + sys.argv[1:3] if sys.argv and sys.argv[0] else ["python"]
    return " ".join(argv)[:80]


def _flock_path(path: Path, create: bool, blocking: bool) -> Optional[int]:
    """An fd holding an exclusive flock on `path`, or None when another process holds it (or the
    file is gone). The path is checked to still name the locked file: a releasing holder may have
    removed it between our open and our flock."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        except FileNotFoundError:
            if not create:
                return None
            path.parent.mkdir(parents=True, exist_ok=True)  # removed by a releasing holder: retry
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
        if not create:
            return None


def _read_holder(path: Path) -> Holder:
    try:
        d = json.loads(path.read_text())
        return Holder(d["slot"], int(d["pid"]), d["host"], float(d["started"]), d.get("command", "?"),
                      d.get("job"), bool(d.get("shared")))
    except (OSError, ValueError, KeyError, TypeError):  # written a moment ago and not yet complete
        return Holder(path.name, -1, "?", time.time(), "?", None, False)


@dataclass
class DirectoryLock:
    """Hold `directory` for writing as `slot` (one file per slot). `shared`: writers of the same
    `job` in other slots may hold it too (shards of one job); otherwise the writer is alone.
    Use as a context manager; `others_alive` says whether another process held the directory when
    this one took it. `sweep(directory)` runs when the lock is taken with no other writer alive:
    the temporary files then present were left by dead writers (with one alive they may be its own)."""

    directory: object
    slot: str = "writer"
    job: Optional[str] = None
    shared: bool = False
    log: Optional[Callable[[str], None]] = None
    sweep: Optional[Callable[[Path], object]] = None
    others_alive: bool = field(default=False, init=False)
    broken_: list = field(default_factory=list, init=False)
    _fd: Optional[int] = field(default=None, init=False, repr=False)
    _created: bool = field(default=False, init=False, repr=False)

    def _key(self):
        return (os.path.realpath(self.directory), self.slot)

    def __enter__(self) -> "DirectoryLock":
        held = _HELD.get(self._key())
        if held is not None:  # this process holds it already (e.g. generate, then its merge)
            held[1] += 1
            self.others_alive = held[0].others_alive
            return self
        folder = Path(self.directory) / LOCK_DIR
        self._created = not Path(self.directory).exists()
        folder.mkdir(parents=True, exist_ok=True)
        reg = _flock_path(folder / REGISTER, create=True, blocking=True)
        try:
            others = self._live_holders(folder)
            self._check(others)
            self.others_alive = any(not h.is_me() for h in others)
            self._fd = self._create_slot(folder / self.slot)
        finally:
            os.close(reg)
        _HELD[self._key()] = [self, 1]
        if self.sweep is not None and not self.others_alive:
            try:
                self.sweep(Path(self.directory))
            except BaseException:
                self.release()
                raise
        return self

    def _create_slot(self, path: Path) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            info = {"slot": self.slot, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                    "command": _command(), "job": self.job, "shared": self.shared}
            os.write(fd, (json.dumps(info) + "\n").encode())
        except BaseException:  # e.g. no space left for these few bytes
            os.unlink(path)
            os.close(fd)
            raise
        return fd

    def _live_holders(self, folder: Path) -> list[Holder]:
        """Holders whose process still runs; stale slot files (nobody holds their flock) are removed."""
        live = []
        for p in sorted(folder.iterdir()):
            if p.name == REGISTER:
                continue
            h = _read_holder(p)
            fd = _flock_path(p, create=False, blocking=False)
            if fd is None:
                if p.exists():
                    live.append(h)
                continue
            p.unlink()  # its process is gone: a stale lock
            os.close(fd)
            self.broken_.append(h)
            if self.log:
                self.log(f"{self.directory}: removed the stale lock of {h.describe()}, which no longer runs")
        return live

    def _check(self, others: list[Holder]) -> None:
        for h in others:
            if h.is_me() and h.slot != self.slot:
                continue  # this process's own outer lock (merge inside generate)
            if h.slot == self.slot:
                why = "the same part of it"
            elif not (self.shared and h.shared):
                why = "it"
            elif h.job != self.job:
                why = "it with different settings"
            else:
                continue  # another shard of this job
            raise DirectoryLocked(
                f"{self.directory} is in use: another synthface process is writing {why}, {h.describe()}; wait for "
                f"it to finish or stop it (kill {h.pid}), or use another output folder (a lock left by a process "
                "that no longer runs is removed automatically)")

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        held = _HELD.get(self._key())
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del _HELD[self._key()]
        lock = held[0]
        folder = Path(self.directory) / LOCK_DIR
        reg = _flock_path(folder / REGISTER, create=True, blocking=True)
        try:
            try:
                (folder / self.slot).unlink()
            except FileNotFoundError:
                pass
            if lock._fd is not None:
                os.close(lock._fd)
                lock._fd = None
            if not [p for p in folder.iterdir() if p.name != REGISTER]:
                (folder / REGISTER).unlink()  # the last holder: leave no lock folder behind
                folder.rmdir()
                if lock._created:
                    os.rmdir(self.directory)  # made for this run and still empty (it failed early): remove it
        except OSError:
            pass  # a holder arrived meanwhile, or the folder is not ours to tidy: leave it
        finally:
            os.close(reg)


def job_identity(*parts) -> str:
    """A short digest of what makes a job (its settings), for telling shards of one job apart from another job."""
    import hashlib

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
