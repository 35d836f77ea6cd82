"""`synthface evaluate`: per-group verification and fairness metrics of recognisers; `synthface
evaluate-attribute`: identity robustness of a face-attribute classifier on an identity-labelled dataset."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .errors import removed_on_failure, run_api
from .options import DEVICE, EMBEDDER_HELP, FMR, POSITIVE_INT, SEED
from ..errors import SynthfaceError


@click.command("evaluate-attribute")
@click.option("--model", required=True, help="labeller: a `synthface train attribute` run directory, an .onnx "
              "file with its .json sidecar, onnx:PATH, world, genderage:PATH, fairface:PATH")
@click.option("--dataset", required=True, type=click.Path(exists=True),
              help="identity-labelled dataset with the task's true labels (synthface dataset, rendered ImageFolder "
                   "with labels.jsonl, .rec, CSV)")
@click.option("--task", default=None, help="attribute to evaluate (default: the model's only one)")
@click.option("--groups", default=None, help="demographic label column for per-group figures, e.g. group or gender")
@click.option("--min-images", type=click.IntRange(min=1), default=2, show_default=True,
              help="identities with fewer images are left out of the per-identity figures")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="write metrics.json here")
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
def evaluate_attribute(model, dataset, task, groups, min_images, out, device):
    """Accuracy overall, per identity (mean, std, worst 5 % / 10 %) and per group of an attribute model."""
    from ..evaluation.attribute import run_evaluate_attribute, summary

    try:
        with removed_on_failure(out):
            res = run_evaluate_attribute(model, dataset, out=out, task=task, groups=groups, min_images=min_images,
                                         device=device, log=lambda m: click.echo(m, err=True))
    except SynthfaceError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(summary(res), indent=2))


@click.command()
@click.option("--dataset", required=True, type=click.Path(file_okay=False),
              help="a synthface dataset, or an ImageFolder of aligned 112x112 crops with --groups")
@click.option("--recognizer", "--recogniser", "recognizers", multiple=True, required=True,
              help="repeatable; compared side by side. " + EMBEDDER_HELP)
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--groups", "groups_csv", default=None, type=click.Path(exists=True, dir_okay=False),
              help="CSV with columns identity,group (identity = folder name) for a plain ImageFolder")
@click.option("--pairs", "pairs_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="reuse a pair list (pairs.csv of an earlier report)")
@click.option("--genuine", type=POSITIVE_INT, default=3000, show_default=True, help="genuine pairs per group (at most)")
@click.option("--impostor", type=POSITIVE_INT, default=3000, show_default=True,
              help="impostor pairs per group (at most)")
@click.option("--folds", type=click.IntRange(min=2), default=10, show_default=True)
@click.option("--target-fmr", type=FMR, default=1e-3, show_default=True, help="FMR that sets the global threshold")
@click.option("--cross-group", is_flag=True, help="draw impostors from every group, not only the same one")
@click.option("--bootstrap", "n_boot", type=POSITIVE_INT, default=200, show_default=True,
              help="resamples for the accuracy CIs")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
@click.option("--method", "methods", multiple=True, type=click.Path(dir_okay=False),
              help="repeatable: a fitted method (e.g. M.sensitivenets) applied to each recogniser's embeddings, "
                   "scored beside the raw ones")
def evaluate(dataset, recognizers, out, groups_csv, pairs_path, genuine, impostor, folds, target_fmr, cross_group,
             n_boot, seed, device, methods):
    """Per-group verification and fairness metrics of recognisers: report.md/.html, metrics.json, plots."""
    from ..evaluation import run_evaluation
    from ..identity import load_embedder
    from ..methods.projected import ProjectedEmbedder, load_method

    recs = [(r, run_api(load_embedder, r, device)) for r in recognizers]
    fitted = [(m, run_api(load_method, m)) for m in methods]
    recs += [(f"{r}+{Path(m).name}", ProjectedEmbedder(e, f, m)) for r, e in list(recs) for m, f in fitted]
    with removed_on_failure(out):
        run_api(run_evaluation, dataset, recs, out, groups_csv=groups_csv, pairs_path=pairs_path, genuine=genuine,
             impostor=impostor, folds=folds, seed=seed, target_fmr=target_fmr, cross_group=cross_group,
             n_boot=n_boot, log=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {Path(out) / 'report.html'}", err=True)
