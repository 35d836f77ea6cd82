"""`synthface capacity`'s job: how many distinct identities per cell a generator can supply at the
separation threshold `generate` would use, estimated before any GPU hours go into generating."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from ..errors import SynthfaceError
from ..generator import base_network
from ..utils import log_stderr


def run_capacity(network, model_path, out, cfg, cells: str = "all",
                 labellers=("world",), schema=None, recognizer: str = "world", align: str = "fixed",
                 n_candidates: int = 300, ids_per_cell: Optional[int] = None, identity_budget: float = 50.0,
                 accept_confidence: Optional[float] = None, truncation: float = 1.0, seed: int = 0,
                 batch_size: int = 64, device="auto", log: Callable[[str], None] = log_stderr) -> dict:
    """Load the job as `generate` does, take the separation threshold as `generate` would with the
    DatasetConfig `cfg` (given, at an FMR on reference faces, or a generated-face quantile), estimate
    the capacity and write OUT/capacity.json, capacity.png and report.md. With `ids_per_cell`, the
    estimate carries the verdict for that many identities within `identity_budget` candidates per identity."""
    import math

    from .writer import check_threshold_config, load_job, resolve_thresholds
    from ..identity.capacity import estimate_capacity, reachable, write_capacity_report
    from ..latent.cells import parse_cells
    from ..latent.sampling import check_generator, check_labeller

    if n_candidates < 2:
        raise SynthfaceError(f"--candidates must be at least 2, got {n_candidates}")
    if cfg.reference is None and base_network(network) == "world":
        cfg = replace(cfg, reference="world")
    check_threshold_config(cfg)
    model, G, lab, emb = load_job(model_path, network, labellers, schema, recognizer, align, device)
    check_generator(model, G)
    check_labeller(model, lab, "verifying labeller")
    specs = parse_cells(cells, model.schema_, model.attributes_)
    src = resolve_thresholds(cfg, model, G, emb, log=log)["sources"]["separation"]
    est = estimate_capacity(model, G, lab, emb, specs, src["threshold"], n_candidates=n_candidates, seed=seed,
                            accept_confidence=accept_confidence, truncation=truncation, batch_size=batch_size,
                            n_per_cell=ids_per_cell, log=log)
    est["separation_source"] = src
    est["job"] = {"network": str(network), "model": str(model_path), "recognizer": recognizer,
                  "labellers": list(labellers), "cells": cells}
    if ids_per_cell is not None:
        est["identity_budget"] = identity_budget
        est["verdict"] = reachable(est, ids_per_cell, int(math.ceil(identity_budget * ids_per_cell)))
    write_capacity_report(est, Path(out), log=log)
    return est
