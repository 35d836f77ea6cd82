"""CLI of the embedding methods: `synthface train sensitivenets` and `synthface leakage` (cli/app.py puts
`leakage` at the top level and `sensitivenets` in the `train` group)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from .errors import removed_on_failure
from .options import DEVICE, NONNEG_INT, NONNEGATIVE, POSITIVE, POSITIVE_INT, PROBABILITY, SEED, CommaList

CLASSIFIERS = ("svm", "mlp", "rf", "logreg")
from ..errors import SynthfaceError


def _log(msg: str) -> None:
    click.echo(msg, err=True)


def _fail(e: SynthfaceError):
    raise click.ClickException(str(e)) from None


@click.command("leakage")
@click.option("--dataset", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--recognizer", required=True, help="world, world-audit, onnx:PATH, insightface:PACK_DIR, ...")
@click.option("--method", "method_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="a fitted method (M.sensitivenets): also audit its projected embeddings")
@click.option("--sensitive", type=CommaList(item="attribute"), default=None,
              help="attributes to audit, e.g. group,gender [default: all of the cells']")
@click.option("--groups", "groups_csv", default=None, type=click.Path(exists=True, dir_okay=False),
              help="identity,group CSV for an ImageFolder dataset")
@click.option("--classifiers", type=CommaList(CLASSIFIERS, item="classifier"), default="svm,mlp,rf",
              show_default=True, help="svm, mlp, rf, logreg")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True, help="identity-disjoint folds")
@click.option("--bootstrap", "n_boot", type=POSITIVE_INT, default=1000, show_default=True,
              help="identity resamples for the CIs")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False))
def leakage_cmd(dataset, recognizer, method_path, sensitive, groups_csv, classifiers, folds, n_boot, seed, device,
                out):
    """How well fresh classifiers recover sensitive attributes from embeddings: report.md and report.json."""
    from ..methods.dataset_jobs import run_leakage

    out = Path(out)
    with removed_on_failure(out):
        try:
            _, md = run_leakage(dataset, recognizer, out, method_path, sensitive, groups_csv, classifiers, folds,
                                n_boot, seed, device, log=_log)
        except SynthfaceError as e:
            _fail(e)
    click.echo(md)
    _log(f"wrote {out / 'report.md'}")


@click.command("sensitivenets")
@click.option("--dataset", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--recognizer", required=True, help="world, world-audit, onnx:PATH, insightface:PACK_DIR, ...")
@click.option("--sensitive", type=CommaList(item="attribute"), default="group,gender", show_default=True,
              help="attributes to remove")
@click.option("--groups", "groups_csv", default=None, type=click.Path(exists=True, dir_okay=False),
              help="identity,group CSV for an ImageFolder dataset")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="model file, e.g. M.sensitivenets")
@click.option("--cache", default=None, type=click.Path(file_okay=False),
              help="embedding cache folder [default: beside --out]")
@click.option("--hidden", type=POSITIVE_INT, default=None,
              help="hidden width of the residual MLP [default: embedding size]")
@click.option("--margin", type=NONNEGATIVE, default=0.2, show_default=True)
@click.option("--lam", type=NONNEGATIVE, default=1.0, show_default=True, help="weight of the removal term")
@click.option("--target", type=click.Choice(["true_class", "fixed_class"]), default="true_class", show_default=True)
@click.option("--target-prob", type=PROBABILITY, default=None, help="tau [default: 1/#classes]")
@click.option("--detectors", type=click.Choice(["pool", "fixed", "online"]), default="pool", show_default=True)
@click.option("--pool-size", type=POSITIVE_INT, default=5, show_default=True)
@click.option("--detector-steps", type=POSITIVE_INT, default=300, show_default=True,
              help="Adam steps per detector training")
@click.option("--warmup-epochs", type=NONNEG_INT, default=1, show_default=True)
@click.option("--epochs", type=POSITIVE_INT, default=20, show_default=True)
@click.option("--batch-size", type=POSITIVE_INT, default=256, show_default=True)
@click.option("--lr", type=POSITIVE, default=1e-3, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
def sensitivenets_cmd(dataset, recognizer, sensitive, groups_csv, out, cache, hidden, margin, lam, target,
                      target_prob, detectors, pool_size, detector_steps, warmup_epochs, epochs, batch_size, lr, seed, device):
    """Fit SensitiveNets on a dataset's embeddings: keep identity, remove the sensitive attributes."""
    from ..methods import SensitiveNets
    from ..methods.dataset_jobs import dataset_embeddings, select_attributes

    out = Path(out)
    try:
        X, ident, attrs = dataset_embeddings(dataset, recognizer, device,
                                             Path(cache) if cache else out.parent / "cache", groups_csv, log=_log)
        sens = select_attributes(attrs, sensitive)
        _log(f"{len(X)} embeddings of {len(np.unique(ident))} identities, {X.shape[1]}-d; removing "
             f"{', '.join(sens)}")
        m = SensitiveNets(hidden=hidden, margin=margin, lam=lam, target=target, target_prob=target_prob,
                          detectors=detectors, pool_size=pool_size, detector_steps=detector_steps,
                          warmup_epochs=warmup_epochs, epochs=epochs,
                          batch_size=batch_size, lr=lr, seed=seed, device=device)
        m.fit(X, ident, sens, log=_log)
        m.save(out)
    except SynthfaceError as e:
        _fail(e)
    last = m.history_[-1] if m.history_ else {}
    click.echo(json.dumps({"out": str(out), "epochs": len(m.history_), "seconds": round(m.fit_seconds_, 1),
                           "detector_acc": last.get("detector_acc")}, indent=2))
