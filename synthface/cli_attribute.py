"""`synthface evaluate-attribute`: identity robustness of a face-attribute classifier on an
identity-labelled dataset (issue 16)."""

from __future__ import annotations

import json

import click

from .cli_errors import removed_on_failure
from .cli_types import DEVICE
from .errors import SynthfaceError


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
    from .evaluation.attribute import run_evaluate_attribute, summary

    try:
        with removed_on_failure(out):
            res = run_evaluate_attribute(model, dataset, out=out, task=task, groups=groups, min_images=min_images,
                                         device=device, log=lambda m: click.echo(m, err=True))
    except SynthfaceError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(summary(res), indent=2))
