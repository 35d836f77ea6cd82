"""Build and load the CUDA kernels in csrc/, or explain why not and stay on the PyTorch path.

SYNTHFACE_OPS=auto (default): use the kernels for CUDA tensors when they build and load; on any
  failure warn once, naming the cause, and use the pure-PyTorch ops.
SYNTHFACE_OPS=cuda: the kernels or a loud error. SYNTHFACE_OPS=ref: never build.

Builds are cached per (source hash, torch version, CUDA version, GPU arch) under
$SYNTHFACE_CACHE or ~/.cache/synthface/ops. A lock file serialises concurrent builds; a lock
held by a dead process, or older than the stale age, is broken, and waiting for a live one gives
up after a timeout, so a build can never hang a run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import Optional

CSRC = Path(__file__).parent / "csrc"
SOURCES = ["ops.cpp", "bias_act.cu", "upfirdn2d.cu", "modconv_epilogue.cu"]
HEADERS = ["kernels.cuh", "launch.cuh"]
LOCK_TIMEOUT_S = float(os.environ.get("SYNTHFACE_OPS_LOCK_TIMEOUT", 600))
LOCK_STALE_S = float(os.environ.get("SYNTHFACE_OPS_LOCK_STALE", 3600))

_state: dict = {"module": None, "error": None, "tried": False}


class OpsBuildError(RuntimeError):
    """The CUDA kernels could not be built or loaded; the message says why."""


def mode() -> str:
    m = os.environ.get("SYNTHFACE_OPS", "auto").strip().lower()
    if m not in ("auto", "cuda", "ref"):
        raise ValueError(f"SYNTHFACE_OPS must be auto, cuda or ref, got {m!r}")
    return m


def cache_root() -> Path:
    return Path(os.environ.get("SYNTHFACE_CACHE", Path.home() / ".cache" / "synthface")) / "ops"


def source_hash() -> str:
    h = hashlib.sha256()
    for name in sorted(SOURCES + HEADERS + ["host_twin.cpp"]):
        h.update(name.encode() + b"\0" + (CSRC / name).read_bytes())
    return h.hexdigest()[:16]


def build_key() -> str:
    import torch
    arch = "none"
    if torch.cuda.is_available():
        arch = "sm_%d%d" % torch.cuda.get_device_capability()
    return f"{source_hash()}-torch{torch.__version__}-cuda{torch.version.cuda}-{arch}".replace("+", "_")


def diagnose() -> Optional[str]:
    """Why a build cannot work here, before trying (None if nothing obvious is missing)."""
    import torch
    from torch.utils import cpp_extension

    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch"
    if torch.version.cuda is None:
        return "this torch build has no CUDA support (a CPU wheel)"
    if shutil.which("ninja") is None:
        return "ninja is not installed (pip install ninja, or apt install ninja-build)"
    home = cpp_extension.CUDA_HOME
    nvcc = shutil.which("nvcc") or (home and str(Path(home) / "bin" / "nvcc"))
    if not nvcc or not Path(nvcc).exists():
        return "nvcc was not found (install the CUDA toolkit matching torch, or set CUDA_HOME)"
    return None


class BuildLock:
    """A lock file holding {pid, host, time}; broken when its holder is dead or it is stale."""

    def __init__(self, path: Path, timeout: float = LOCK_TIMEOUT_S, stale: float = LOCK_STALE_S):
        self.path, self.timeout, self.stale = Path(path), timeout, stale

    def _holder_dead(self) -> bool:
        try:
            info = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return time.time() - self._mtime() > 5  # unreadable and not just being written
        if time.time() - float(info.get("time", 0)) > self.stale:
            return True
        if info.get("host") == socket.gethostname():
            try:
                os.kill(int(info["pid"]), 0)
            except ProcessLookupError:
                return True
            except (PermissionError, KeyError, ValueError):
                return False
        return False

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return time.time()

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                with os.fdopen(fd, "w") as f:
                    json.dump({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}, f)
                return self
            except FileExistsError:
                if self._holder_dead():
                    try:
                        self.path.unlink()
                    except FileNotFoundError:
                        pass
                    continue
                if time.monotonic() - start > self.timeout:
                    raise OpsBuildError(f"another process has held the build lock {self.path} for more than "
                                        f"{self.timeout:.0f} s; delete it if no build is running")
                time.sleep(0.5)

    def __exit__(self, *exc):
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


BUILD_LOCK = "synthface-build.lock"


def _load_extension(name: str, sources: list, build_dir: Path, **kwargs):
    """cpp_extension.load under synthface's build lock. torch guards a build directory with its
    own lock file ("lock"), which a killed build leaves behind and which torch then waits on
    forever; while synthface's lock is held no build of ours is running, so such a file is stale
    and is removed first."""
    from torch.utils import cpp_extension

    build_dir.mkdir(parents=True, exist_ok=True)
    with BuildLock(build_dir / BUILD_LOCK):
        (build_dir / "lock").unlink(missing_ok=True)
        return cpp_extension.load(name=name, sources=[str(s) for s in sources], build_directory=str(build_dir),
                                  verbose=False, **kwargs)


def _build():
    reason = diagnose()
    if reason:
        raise OpsBuildError(reason)
    build_dir = cache_root() / build_key()
    try:
        return _load_extension("synthface_ops_" + source_hash(), [CSRC / s for s in SOURCES], build_dir,
                               extra_cuda_cflags=["-O3"], extra_cflags=["-O3"])
    except OpsBuildError:
        raise
    except Exception as e:  # compiler errors, CUDA/torch mismatch, undefined symbols at load
        text = str(e).strip().splitlines()
        tail = " | ".join(text[-3:]) if text else type(e).__name__
        raise OpsBuildError(f"building the CUDA kernels failed (compiler or CUDA/torch mismatch?): {tail}; "
                            f"build log in {build_dir}") from None


def plugin():
    """The loaded extension, or None (warned once) when auto mode falls back."""
    m = mode()
    if m == "ref":
        return None
    if not _state["tried"]:
        _state["tried"] = True
        try:
            _state["module"] = _build()
        except OpsBuildError as e:
            _state["error"] = str(e)
            if m == "auto":
                warnings.warn(f"synthface: CUDA kernels unavailable ({e}); using the PyTorch ops", stacklevel=3)
    if _state["module"] is None and m == "cuda":
        raise OpsBuildError(f"SYNTHFACE_OPS=cuda but the CUDA kernels are unavailable: {_state['error']}")
    return _state["module"]


def twin_build_dir(build_root: Optional[Path] = None) -> Path:
    return Path(build_root or cache_root()) / f"twin-{build_key()}"


def load_host_twin(build_root: Optional[Path] = None):
    """The CPU twin of the extension (csrc/host_twin.cpp): the same bindings and per-element maths
    as the kernels, run as plain loops on CPU tensors. For tests on machines without a GPU; needs
    only a C++ compiler. Built through the same locked path as the CUDA extension."""
    return _load_extension("synthface_ops_twin_" + source_hash(), [CSRC / "host_twin.cpp"],
                           twin_build_dir(build_root), extra_include_paths=[str(CSRC)], extra_cflags=["-O2"])


def reset() -> None:
    _state.update(module=None, error=None, tried=False)
