"""Reading PyTorch weight files (torch.save archives) safely, with synthface's own messages.

`load_torch_file` is torch.load(weights_only=True) (torch's restricted unpickler: tensors and
containers only, never code) plus:
- a check of the tensor storages a file declares against the file's size, before anything is allocated
  (the legacy format allocates each declared storage first and reads it afterwards, so a hostile file
  could ask for terabytes);
- messages that say what the file holds and how to fix it. torch's own text advises re-running with
  weights_only=False, which executes code from the file: synthface's users must never be told that, so
  it never reaches them (`scrub_torch_advice` also cleans any message on its way to the terminal).
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Union

from .errors import SynthfaceError

_ITEMSIZE = {"Double": 8, "Long": 8, "ComplexFloat": 8, "ComplexDouble": 16, "Float": 4, "Int": 4, "Half": 2,
             "BFloat16": 2, "Short": 2, "Char": 1, "Byte": 1, "Bool": 1, "Untyped": 1}
LEGACY_OVERHEAD = 1 << 16  # the legacy format's headers; a declared payload beyond file size + this is a lie


class _Inert:
    """What every global and storage of the size scan becomes: callable, buildable, never code."""

    def __init__(self, name: str = ""):
        self.name = name

    def __call__(self, *args, **kwargs):
        return _Inert(self.name)

    def __setstate__(self, state):
        pass

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert(f"{self.name}.{name}")


class _SizeScan(pickle.Unpickler):
    """Reads a pickle without resolving any global (each becomes an _Inert), collecting the storages
    its persistent ids declare: ('storage', <type>, key, location, numel)."""

    def __init__(self, f):
        super().__init__(f)
        self.declared: dict[str, int] = {}

    def find_class(self, module, name):
        return _Inert(f"{module}.{name}")

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[4], int):
            kind = getattr(pid[1], "name", "").rpartition(".")[2].replace("Storage", "")
            self.declared[str(pid[2])] = pid[4] * _ITEMSIZE.get(kind, 1)
        return _Inert("storage")


def declared_storage_bytes(data: bytes) -> int:
    """Bytes of tensor storage a legacy-format torch file declares (0 when it cannot tell)."""
    f = io.BytesIO(data)
    total = 0
    for _ in range(4):  # magic number, protocol, system info, then the object with the storages
        scan = _SizeScan(f)
        try:
            scan.load()
        except Exception:  # noqa: BLE001 - not scannable: torch's own loader will judge it
            return total
        total += sum(scan.declared.values())
        if scan.declared:
            break
    return total


def check_declared_sizes(data: bytes, where: str) -> None:
    """Refuse a legacy torch file whose storages add up to more than the file holds."""
    if data[:4] == b"PK\x03\x04":  # zip archive: torch compares each record's size itself before reading
        return
    declared = declared_storage_bytes(data)
    if declared > len(data) + LEGACY_OVERHEAD:
        raise SynthfaceError(f"{where} declares {declared:,} bytes of tensors but the file is only {len(data):,} "
                             "bytes; it is damaged or forged; nothing was allocated or loaded")




def _first_global(text: str) -> str:
    m = re.search(r"GLOBAL ([A-Za-z_][\w.]*)", text)
    return m.group(1) if m else ""


def load_torch_file(path: Union[str, Path], what: str = "tensor state dict", fix: str = "") -> Any:
    """torch.load(path, weights_only=True) on the CPU, after the size check, with one clear message
    for a file that holds code (a pickled model), is damaged, or is not a torch file at all."""
    import torch

    path = Path(path)
    data = path.read_bytes()
    if data[:4] != b"PK\x03\x04" and data[:1] != b"\x80":
        raise SynthfaceError(f"{path} is not a PyTorch weights file (it starts with {data[:8]!r}, neither a torch.save "
                             "archive nor a pickle); check that it is the right file and that it downloaded completely")
    check_declared_sizes(data, str(path))
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        name = _first_global(str(e))
        if not name and "Unsupported global" not in str(e) and "Unsupported class" not in str(e):
            raise SynthfaceError(f"{path} is a damaged PyTorch weights file ({_first_sentence(e)}); check that it was "
                                 "copied completely") from None
        held = f"a pickled Python object ({name})" if name else "pickled Python objects"
        raise SynthfaceError(f"{path} is not a plain {what}: it holds {held}, and loading that would run code "
                             f"from the file, which synthface never does. "
                             f"{fix or 'Save the weights as a state_dict instead.'}") from None
    except (RuntimeError, EOFError, ValueError, KeyError, zipfile.BadZipFile, MemoryError) as e:
        raise SynthfaceError(f"{path} is not a readable PyTorch weights file ({_first_sentence(e)}); check that it is "
                             "the right file and that it was copied completely") from None


def _first_sentence(e: BaseException) -> str:
    text = scrub_torch_advice(str(e).strip().splitlines()[0] if str(e).strip() else "")
    text = re.split(r"(?<=[a-z)])\. ", text)[0][:200]
    return text or type(e).__name__


def state_dict_mismatch(expected: dict, found: dict, where: str, arch: str) -> str:
    """'' when `found` fits `expected` (names and shapes), else one line naming what is missing,
    unexpected or of the wrong shape (torch's own message is cut to its first line elsewhere)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [k for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return ""

    def some(keys):
        return ", ".join(map(repr, keys[:4])) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")

    parts = []
    if missing:
        parts.append(f"missing {len(missing)} tensor(s): {some(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} tensor(s): {some(unexpected)}")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape, e.g. {k!r} is {tuple(found[k].shape)}, {arch} has "
                     f"{tuple(expected[k].shape)}")
    return f"{where} does not fit {arch}: " + "; ".join(parts)


_ADVICE_WORDS = ("weights_only", "safe_globals", "arbitrary code", "trusted source", "trust the source")


def scrub_torch_advice(text: str) -> str:
    """Drop every sentence of torch's advice to turn the safe loader off (weights_only=False, allow-listing
    globals): synthface's users must never follow it."""
    if not any(w in text.lower() for w in _ADVICE_WORDS):
        return text
    sentences = re.split(r"(?<=[.!?])\s+|\n+", text)
    kept = [t for t in sentences if t.strip() and not any(w in t.lower() for w in _ADVICE_WORDS)]
    return " ".join(kept).strip() or "the file cannot be read safely"


__all__ = ["load_torch_file", "check_declared_sizes", "declared_storage_bytes", "state_dict_mismatch",
           "scrub_torch_advice"]
