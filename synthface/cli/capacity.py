"""`synthface capacity`: how many distinct identities per cell a generator can supply at a separation
threshold, estimated from a few hundred candidates per cell before any GPU hours go into `generate`."""

from __future__ import annotations


import click

from .errors import removed_on_failure
from .options import CELLS, CELLS_HELP, DEVICE, FINITE, FMR, FRACTION, SEED, SIMILARITY, FiniteFloat
from ..errors import SynthfaceError

LABELLER_HELP = "verifying labeller, as for generate (repeatable): world, world-audit, onnx:PATH, ..."


@click.command("capacity")
@click.option("--network", required=True, help="the generator the latent model was fitted for ('world': the demo's)")
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False))
@click.option("--recognizer", "--recogniser", "recognizer", default="world", show_default=True,
              help="recogniser, as for generate: world, world-audit, onnx:PATH, insightface:PACK_DIR, arcface:PATH, ...")
@click.option("--cells", type=CELLS, default="all", show_default=True, help=CELLS_HELP)
@click.option("--separation", type=SIMILARITY, default=None, help="max cosine similarity between identities")
@click.option("--separation-fmr", type=FMR, default=1e-4, show_default=True,
              help="the recogniser's threshold at this false-match rate on --reference-* faces (as generate)")
@click.option("--separation-quantile", type=FRACTION, default=None,
              help="fallback: this quantile of impostor similarities of generated faces")
@click.option("--reference-embeddings", type=click.Path(dir_okay=False), default=None)
@click.option("--reference-images", type=click.Path(file_okay=False), default=None,
              help="real faces for the FMR threshold (default with --network world: renderer faces)")
@click.option("--candidates", "n_candidates", type=click.IntRange(min=2), default=300, show_default=True,
              help="candidates drawn per cell (selection's first ones)")
@click.option("--ids-per-cell", type=click.IntRange(min=1), default=None,
              help="identities per cell you intend to ask generate for: adds the verdict")
@click.option("--identity-budget", type=FiniteFloat(min=1.0), default=50.0, show_default=True,
              help="generate's candidates per wanted identity, for the verdict")
@click.option("--labeller", "labellers", multiple=True, default=["world"], show_default=True, help=LABELLER_HELP)
@click.option("--schema", default=None, help="as for generate")
@click.option("--align", type=click.Choice(["fixed", "detect"]), default="fixed", show_default=True)
@click.option("--accept-confidence", type=FiniteFloat(0, 1, min_open=True), default=None)
@click.option("--trunc", "truncation", type=FINITE, default=1.0, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True, help="generate's --seed (the same candidates)")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False))
def capacity(network, model_path, recognizer, cells, separation, separation_fmr, separation_quantile,
             reference_embeddings, reference_images, n_candidates, ids_per_cell, identity_budget, labellers, schema,
             align, accept_confidence, truncation, seed, batch_size, device, out):
    """Estimate how many distinct identities per cell the generator can supply at the separation
    threshold (accepted vs candidates, observed and extrapolated): capacity.json, capacity.png, report.md."""
    from ..dataset import DatasetConfig
    from ..dataset.capacity import run_capacity

    if reference_embeddings and reference_images:
        raise click.UsageError("give --reference-embeddings or --reference-images, not both")
    cfg = DatasetConfig(cells=cells, separation=separation, separation_fmr=separation_fmr,
                        separation_quantile=separation_quantile, reference=reference_embeddings or reference_images,
                        seed=seed)
    try:
        with removed_on_failure(out):
            est = run_capacity(network, model_path, out, cfg, cells, labellers, schema, recognizer, align,
                               n_candidates, ids_per_cell, identity_budget, accept_confidence, truncation, seed,
                               batch_size, device, log=lambda m: click.echo(m, err=True))
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
