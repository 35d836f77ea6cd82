"""Reading the methods' safetensors files (SensitiveNets, SAN, SAN ensembles): one check of path, format and
version, so every method refuses a foreign or newer file with the same kind of message. Tensors only: loading
never executes code from the file."""

from __future__ import annotations

from pathlib import Path

from ..errors import SynthfaceError


def read_method_file(path, format_name: str, version: int, what: str) -> tuple[dict, dict]:
    """(metadata, tensors) of a file `what`.save wrote in this format and version, or a SynthfaceError."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise SynthfaceError(f"{what} file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise SynthfaceError(f"{path} is not a safetensors file written by {what}.save ({e})") from None
    if meta.get("format") != format_name:
        raise SynthfaceError(f"{path} is not a {what} model (format {meta.get('format')!r})")
    if meta.get("version") != str(version):
        raise SynthfaceError(f"{path} is {what} format version {meta.get('version')}; this synthface reads "
                             f"version {version}")
    return meta, tensors
