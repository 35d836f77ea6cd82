"""`synthface generate` as a job: this process's shard (from torchrun or a SLURM array), or every shard
on Ray actors, then the merge when one process wrote the whole set. It sits above the writer (one
shard), the merge and the Ray runner, which do not import it."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Optional

from ..errors import SynthfaceError
from ..fileio import disk_full_message
from ..utils import log_stderr
from .merge import check_rec_encoding, merge, resolve_audit
from .ray_runner import run_with_ray
from .writer import (DatasetConfig, check_threshold_config, generate_dataset, generate_lock, load_job,
                     load_leakage_gallery, merge_coverage, network_defaults, shard_from_env)


def run_generate(network, model_path, out, cfg: DatasetConfig, labellers=("world",), schema=None,
                 recognizer: str = "world", align: str = "fixed", shard_index: Optional[int] = None,
                 num_shards: Optional[int] = None, merge_after: bool = True, ray_shards: Optional[int] = None,
                 audit: Optional[str] = None, audit_quantile: Optional[float] = None, audit_fmr: float = 1e-3,
                 leakage_gallery=None, device="auto", capacity_candidates: int = 200, rec_encoding: str = "jpeg444",
                 log: Callable[[str], None] = log_stderr) -> dict:
    """`synthface generate`: this shard's part of the dataset (or every shard on Ray), then the merge
    when this is the only shard. Shards default to torchrun's or a SLURM array's."""
    env_index, env_count = shard_from_env()
    shard_index = env_index if shard_index is None else shard_index
    num_shards = env_count if num_shards is None else num_shards
    cfg = network_defaults(cfg, network)
    check_threshold_config(cfg)
    check_rec_encoding(rec_encoding)
    model, G, lab, emb = load_job(model_path, network, labellers, schema, recognizer, align, device)
    leak = None if leakage_gallery is None else load_leakage_gallery(leakage_gallery)
    result = {"shard_index": shard_index, "num_shards": num_shards, "merged": None}
    if ray_shards:
        if leak is not None:
            raise SynthfaceError("--ray does not take --leakage-gallery yet; run the shards with --shard-index")
        result["ray"] = run_with_ray(model_path, network, out, cfg, list(labellers), schema, recognizer, align,
                                     ray_shards)
        _merge_after(result, out, merge_after, audit, audit_quantile, G, device, audit_fmr, rec_encoding, log, network)
        return result
    # One process writes and merges: it holds the lock from the first write to the card.
    with disk_full_message(out, "run the same `synthface generate` command again: finished identities are kept"), \
            (generate_lock(Path(out), 0, 1, None, log) if num_shards == 1 else contextlib.nullcontext()):
        result["generate"] = generate_dataset(model, G, lab, emb, out, cfg, shard_index, num_shards, leakage=leak,
                                              log=log, capacity_candidates=capacity_candidates)
        if num_shards == 1:
            _merge_after(result, out, merge_after, audit, audit_quantile, G, device, audit_fmr, rec_encoding, log, network)
    return result


def _merge_after(result, out, merge_after, audit, audit_quantile, G, device, audit_fmr, rec_encoding, log,
                 network=None) -> None:
    if merge_after:
        result["merged"] = merge(out, audit=resolve_audit(out, audit, None, audit_quantile, G, device, audit_fmr),
                                 rec_encoding=rec_encoding, log=log, coverage=merge_coverage(out, network))
