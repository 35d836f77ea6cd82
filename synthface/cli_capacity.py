"""`synthface capacity`: how many distinct identities per cell a generator can supply at a separation
threshold, estimated from a few hundred candidates per cell before any GPU hours go into `generate`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import click

from .errors import SynthfaceError
from .utils import log_stderr

# A separation source turns (latent model, generator, recogniser, log) into the threshold with where it
# came from: {"threshold": cosine, "kind": ..., ...}, as identity.thresholds' functions return it.
SeparationSource = Callable[..., dict]


def separation_source(separation: Optional[float] = None, quantile: Optional[float] = None,
                      seed: int = 0) -> SeparationSource:
    """The threshold from --separation (a cosine) or --separation-quantile (the fallback on
    generated faces' impostor similarities, as `generate` measures it)."""
    if (separation is None) == (quantile is None):
        raise SynthfaceError("give the separation threshold: --separation COSINE or --separation-quantile Q")
    if separation is not None:
        if not -1 <= separation <= 1:
            raise SynthfaceError(f"--separation is a cosine similarity in [-1, 1], got {separation}")
        return lambda model, G, embedder, log: {"threshold": float(separation), "kind": "given"}
    if not 0 < quantile < 1:
        raise SynthfaceError(f"--separation-quantile must be in (0, 1), got {quantile}")

    def measure(model, G, embedder, log):
        from .identity.thresholds import impostor_threshold

        log(f"separation threshold: the {quantile} quantile of impostor similarities of 1000 random generated faces")
        return impostor_threshold(G, embedder, model.truncation_psi_, quantile=quantile, seed=seed)

    return measure


def run_capacity(network, model_path, out, separation: SeparationSource, cells: str = "all",
                 labellers=("world",), schema=None, recognizer: str = "world", align: str = "fixed",
                 n_candidates: int = 300, ids_per_cell: Optional[int] = None, identity_budget: float = 50.0,
                 accept_confidence: Optional[float] = None, truncation: float = 1.0, seed: int = 0,
                 batch_size: int = 64, device="auto", log: Callable[[str], None] = log_stderr) -> dict:
    """Load the job as `generate` does, take the threshold from `separation` (a SeparationSource:
    the hook for other threshold sources), estimate the capacity and write OUT/capacity.json,
    capacity.png and report.md. With `ids_per_cell`, the estimate carries the verdict for that many
    identities within `identity_budget` candidates per identity."""
    import math

    from .dataset.writer import load_job
    from .identity.capacity import estimate_capacity, reachable, write_capacity_report
    from .latent.cells import parse_cells
    from .latent.sampling import check_generator, check_labeller

    if n_candidates < 2:
        raise SynthfaceError(f"--candidates must be at least 2, got {n_candidates}")
    model, G, lab, emb = load_job(model_path, network, labellers, schema, recognizer, align, device)
    check_generator(model, G)
    check_labeller(model, lab, "verifying labeller")
    specs = parse_cells(cells, model.schema_, model.attributes_)
    src = separation(model, G, emb, log)
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


LABELLER_HELP = "verifying labeller, as for generate (repeatable): world, world-audit, onnx:PATH, ..."


@click.command("capacity")
@click.option("--network", required=True, help="the generator the latent model was fitted for ('world': the demo's)")
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False))
@click.option("--recognizer", "--recogniser", "recognizer", default="world", show_default=True,
              help="recogniser, as for generate: world, world-audit, onnx:PATH, insightface:PACK_DIR, arcface:PATH, ...")
@click.option("--cells", default="all", show_default=True, help="'all' or cells separated by ';'")
@click.option("--separation", type=float, default=None, help="max cosine similarity between identities")
@click.option("--separation-quantile", type=float, default=None,
              help="fallback: this quantile of impostor similarities of generated faces")
@click.option("--candidates", "n_candidates", type=click.IntRange(min=2), default=300, show_default=True,
              help="candidates drawn per cell (selection's first ones)")
@click.option("--ids-per-cell", type=click.IntRange(min=1), default=None,
              help="identities per cell you intend to ask generate for: adds the verdict")
@click.option("--identity-budget", type=float, default=50.0, show_default=True,
              help="generate's candidates per wanted identity, for the verdict")
@click.option("--labeller", "labellers", multiple=True, default=["world"], show_default=True, help=LABELLER_HELP)
@click.option("--schema", default=None, help="as for generate")
@click.option("--align", type=click.Choice(["fixed", "detect"]), default="fixed", show_default=True)
@click.option("--accept-confidence", type=click.FloatRange(0, 1, min_open=True), default=None)
@click.option("--trunc", "truncation", type=float, default=1.0, show_default=True)
@click.option("--seed", default=0, show_default=True, help="generate's --seed (the same candidates)")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False))
def capacity(network, model_path, recognizer, cells, separation, separation_quantile, n_candidates, ids_per_cell,
             identity_budget, labellers, schema, align, accept_confidence, truncation, seed, batch_size, device, out):
    """Estimate how many distinct identities per cell the generator can supply at the separation
    threshold (accepted vs candidates, observed and extrapolated): capacity.json, capacity.png, report.md."""
    try:
        src = separation_source(separation, separation_quantile, seed)
        est = run_capacity(network, model_path, out, src, cells, labellers, schema, recognizer, align, n_candidates,
                           ids_per_cell, identity_budget, accept_confidence, truncation, seed, batch_size, device,
                           log=lambda m: click.echo(m, err=True))
    except SynthfaceError as e:
        raise click.ClickException(str(e)) from None
    budgets = list(est["expected_identities"])
    for name, c in est["per_cell"].items():
        ids = est["expected_identities"]
        click.echo(f"{name}: pass rate {c['pass_rate']:.2f}, p within {c['p_within']:.4f}, observed "
                   f"{c['observed_accepted']} of {est['n_candidates']}; expected at "
                   + ", ".join(f"{int(b):,}: {ids[b]['central'][name]:.0f}" for b in budgets), err=True)
    if "verdict" in est:
        click.echo(f"{ids_per_cell} per cell within --identity-budget {identity_budget:g}: {est['verdict']['verdict']}",
                   err=True)
