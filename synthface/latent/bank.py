"""Latent bank: sampled z -> w -> image -> labels, stored as w, seeds and class probabilities.

    bank/
      bank.json            what made it: generator hash, psi, seed, labeller, schema, chunk size
      chunk_00000.npz      seeds [m], w [m, w_dim] (the w the image was made from, after
      chunk_00001.npz      truncation), p.<attribute> [m, classes]
      ...

Sample i uses seed `seed + i` (z = RandomState(seed + i).randn(z_dim), as NVIDIA's generate.py),
so any bank face can be regenerated with `synthface images --seeds`. Chunks are written to a
temporary name and renamed, so a crash leaves only whole chunks; rerunning the same command
skips them and continues, and a larger --n extends the bank.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import SynthfaceError
from ..fileio import atomic_write, disk_full_message, sweep_temporaries, write_json_atomic
from ..generator.synthesis import generator_hash, map_seeds, synthesize
from ..locks import DirectoryLock
from ..utils import log_stderr, progress_bar

BANK_VERSION = 1


class LatentBank:
    """Read side of a bank directory."""

    def __init__(self, path):
        self.path = Path(path)
        meta = self.path / "bank.json"
        if not meta.is_file():
            raise SynthfaceError(f"{self.path} is not a latent bank (no bank.json); make one with `synthface label`")
        self.meta = read_bank_json(meta)
        if self.meta.get("version") != BANK_VERSION:
            raise SynthfaceError(f"{self.path}: bank version {self.meta.get('version')} is not supported "
                                 f"(this synthface reads version {BANK_VERSION})")
        self.schema: dict[str, list[str]] = self.meta["schema"]

    def chunks(self) -> list[Path]:
        return sorted(self.path.glob("chunk_*.npz"))

    def __len__(self) -> int:
        total = 0
        for p in self.chunks():
            with _open_chunk(p) as z:
                total += int(z["seeds"].shape[0])
        return total

    def load(self, attributes=None) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(w [N, w_dim] float32, seeds [N], {attribute: probabilities [N, classes]})."""
        attributes = list(self.schema) if attributes is None else list(attributes)
        unknown = [a for a in attributes if a not in self.schema]
        if unknown:
            raise SynthfaceError(f"the bank has no attribute {', '.join(map(repr, unknown))}; it has "
                                 f"{', '.join(self.schema)}")
        files = self.chunks()
        if not files:
            raise SynthfaceError(f"{self.path} holds no chunks yet; run `synthface label` to fill it")
        ws, seeds, probs = [], [], {a: [] for a in attributes}
        for p in files:
            with _open_chunk(p) as z:
                ws.append(z["w"])
                seeds.append(z["seeds"])
                for a in attributes:
                    probs[a].append(z[f"p.{a}"])
                if not len(z["w"]) == len(z["seeds"]) == min(len(z[f"p.{a}"]) for a in attributes):
                    raise SynthfaceError(f"{p}: the chunk's arrays disagree in length; delete it and rerun the same "
                                         "`synthface label` command to regenerate it")
        found, promised = sum(len(s) for s in seeds), int(self.meta.get("n", 0))
        if found < promised:
            raise SynthfaceError(f"{self.path} is incomplete: bank.json promises {promised} latents but its "
                                 f"{len(files)} chunk(s) hold {found}; finish it by rerunning the same "
                                 "`synthface label` command (same --n, --seed, --chunk)")
        W = np.concatenate(ws).astype(np.float32)
        P = {a: np.concatenate(v).astype(np.float32) for a, v in probs.items()}
        bad = ~np.isfinite(W).all(1)
        for a in attributes:
            bad |= ~np.isfinite(P[a]).all(1)
        if bad.any():
            raise SynthfaceError(f"{self.path}: {int(bad.sum())} bank rows hold NaN or inf (first seed "
                                 f"{int(np.concatenate(seeds)[bad][0])}); the generator or labeller produced "
                                 "non-finite values; delete the affected chunks and rerun `synthface label`")
        return W, np.concatenate(seeds), P


def build_bank(G, labeller, out, n: int, seed: int = 0, truncation_psi: float = 1.0, noise_mode: str = "const",
               batch_size: int = 64, chunk_size: int = 4096, progress: bool = True,
               log: Callable[[str], None] = log_stderr,
               stop_after_chunks: Optional[int] = None) -> LatentBank:
    """Fill (or resume, or extend) a bank of n labelled latents in `out`. The bank is this process's
    alone while it writes: another writer is refused with its pid; temporaries of dead ones are swept."""
    if n < 1:
        raise SynthfaceError("--n must be at least 1")
    if chunk_size < 1 or batch_size < 1:
        raise SynthfaceError("chunk and batch sizes must be at least 1")
    out = Path(out)
    with disk_full_message(out, "run the same `synthface label` command again: finished chunks are kept"), \
            DirectoryLock(out, "label", log=log, sweep=sweep_temporaries):
        return _fill_bank(G, labeller, out, n, seed, truncation_psi, noise_mode, batch_size, chunk_size, progress,
                          log, stop_after_chunks)


def _fill_bank(G, labeller, out: Path, n: int, seed: int, truncation_psi: float, noise_mode: str, batch_size: int,
               chunk_size: int, progress: bool, log, stop_after_chunks: Optional[int]) -> LatentBank:
    meta = {"version": BANK_VERSION, "generator_hash": generator_hash(G), "z_dim": G.z_dim, "w_dim": G.w_dim,
            "resolution": G.img_resolution, "seed": seed, "truncation_psi": truncation_psi, "noise_mode": noise_mode,
            "chunk_size": chunk_size, "labeller": labeller.describe(), "schema": labeller.schema}
    mpath = out / "bank.json"
    if mpath.is_file():
        old = read_bank_json(mpath)
        # every setting that changes a bank row; the labeller by its weights' digest, wherever the file now lies
        keys = ("version", "generator_hash", "seed", "truncation_psi", "noise_mode", "chunk_size", "schema",
                "labeller")
        diff = [k for k in keys if _comparable(old.get(k)) != _comparable(meta[k])]
        if diff:
            raise SynthfaceError(f"{out} already holds a bank made with different {', '.join(diff)} "
                                 f"({'; '.join(f'{k}: bank {_show(old.get(k))}, now {_show(meta[k])}' for k in diff)}); "
                                 "use a new --out, or the same arguments to resume")
        meta["n"] = max(int(old.get("n", 0)), n)
    else:
        meta["n"] = n
    write_json_atomic(mpath, meta)
    n_chunks = -(-n // chunk_size)
    todo = [k for k in range(n_chunks) if not _chunk_complete(out, k, min(chunk_size, n - k * chunk_size))]
    done_images = (n_chunks - len(todo)) * chunk_size
    if done_images:
        log(f"{out}: {n_chunks - len(todo)} of {n_chunks} chunks already done, resuming")
    bar = progress_bar(n, "label", unit="img", enabled=progress, initial=min(done_images, n))
    try:
        for j, k in enumerate(todo):
            if stop_after_chunks is not None and j >= stop_after_chunks:
                break
            seeds = np.arange(seed + k * chunk_size, seed + min((k + 1) * chunk_size, n), dtype=np.int64)
            ws, probs = [], {a: [] for a in labeller.schema}
            for s in range(0, len(seeds), batch_size):
                w = map_seeds(G, seeds[s:s + batch_size].tolist(), truncation_psi)
                imgs = synthesize(G, w, noise_mode, batch_size,
                                  noise_seeds=seeds[s:s + batch_size] if noise_mode == "random" else None)
                p = labeller.predict_proba(imgs)
                ws.append(w.cpu().numpy().astype(np.float32))
                for a in labeller.schema:
                    probs[a].append(np.asarray(p[a], np.float32))
                bar.update(len(w))
            arrays = {"seeds": seeds, "w": np.concatenate(ws)}
            arrays.update({f"p.{a}": np.concatenate(v) for a, v in probs.items()})
            atomic_write(out / f"chunk_{k:05d}.npz", lambda f: np.savez(f, **arrays))
    finally:
        bar.close()
    return LatentBank(out)


def read_bank_json(path: Path) -> dict:
    """bank.json, or a clear refusal when it is damaged (a half-written or hand-edited file)."""
    try:
        meta = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SynthfaceError(f"{path} is damaged ({e}); restore it, or delete the bank folder and run "
                             "`synthface label` again") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("schema"), dict):
        raise SynthfaceError(f"{path} is not a synthface bank description (no attribute schema); restore it, or "
                             "delete the bank folder and run `synthface label` again")
    return meta


def _open_chunk(p: Path):
    """np.load of a chunk (never unpickling), turning a damaged file into one message naming it."""
    import zipfile

    try:
        z = np.load(p, allow_pickle=False)
        z["seeds"], z["w"]  # noqa: B018 - read now: a truncated member fails here, not later
        return z
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise SynthfaceError(f"{p} is a damaged bank chunk ({type(e).__name__}: {e}); delete it and rerun the "
                             "same `synthface label` command to regenerate it") from None


def _comparable(value):
    """Settings as compared on resume: file paths dropped (a moved labeller file is the same labeller; its
    sha256 says whether it is)."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k != "path"}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _show(value) -> str:
    text = json.dumps(_comparable(value), sort_keys=True)
    return text if len(text) <= 160 else text[:157] + "..."


def _chunk_complete(out: Path, k: int, expected: int) -> bool:
    p = out / f"chunk_{k:05d}.npz"
    if not p.is_file():
        return False
    try:
        with np.load(p) as z:
            return int(z["seeds"].shape[0]) == expected
    except Exception:
        return False  # unreadable: redo it
