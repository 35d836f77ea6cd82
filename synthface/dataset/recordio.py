"""MXNet RecordIO (`train.rec` + `train.idx`) as arcface_torch reads it, written without mxnet.

Record: uint32 magic 0xced7230a, uint32 length (upper 3 bits: continuation flag, 0 here), the
payload, zero padding to a multiple of 4. Payload: IRHeader `<IfQQ` (flag, label, id, id2), then
`flag` float32 labels when flag > 0, then the encoded image. Record 0 is the header arcface_torch
looks for: flag 2, labels (N + 1, N + 1 + identities); images are records 1..N; records
N+1..N+identities hold each identity's [first, last + 1) image range. `train.idx` is text lines
"key<TAB>byte offset".
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterable

from ..fileio import temp_path, umask_mode

MAGIC = 0xCED7230A


def pack_record(payload: bytes) -> bytes:
    if len(payload) >= 1 << 29:
        raise ValueError("records of 512 MB or more are not supported")
    pad = (4 - len(payload) % 4) % 4
    return struct.pack("<II", MAGIC, len(payload)) + payload + b"\0" * pad


def header(label, id_: int = 0, id2: int = 0) -> bytes:
    if isinstance(label, (list, tuple)):
        return struct.pack("<IfQQ", len(label), 0.0, id_, id2) + struct.pack(f"<{len(label)}f", *label)
    return struct.pack("<IfQQ", 0, float(label), id_, id2)


def write_rec(path_rec, path_idx, images: Iterable[tuple[int, bytes]], n_images: int, identity_ranges) -> None:
    """images: (identity label, encoded image bytes) in identity order; identity_ranges: per
    identity (first, end) record keys. Writes to temporary names of this writer's own, then renames
    both; a failure removes them."""
    path_rec, path_idx = Path(path_rec), Path(path_idx)
    tmp_rec, tmp_idx = temp_path(path_rec), temp_path(path_idx)
    n_ids = len(identity_ranges)
    try:
        with open(tmp_rec, "wb") as rec, open(tmp_idx, "w") as idx:
            def put(key, payload):
                idx.write(f"{key}\t{rec.tell()}\n")
                rec.write(pack_record(payload))
            put(0, header([float(n_images + 1), float(n_images + 1 + n_ids)]))
            key = 1
            for label, data in images:
                put(key, header(float(label), key) + data)
                key += 1
            if key != n_images + 1:
                raise ValueError(f"expected {n_images} images, got {key - 1}")
            for i, (a, b) in enumerate(identity_ranges):
                put(n_images + 1 + i, header([float(a), float(b)], n_images + 1 + i))
        for tmp in (tmp_rec, tmp_idx):
            os.chmod(tmp, umask_mode())
        tmp_rec.replace(path_rec)
        tmp_idx.replace(path_idx)
    finally:
        for tmp in (tmp_rec, tmp_idx):
            if tmp.exists():
                tmp.unlink()
