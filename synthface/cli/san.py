"""CLI of Semi-Adversarial Networks: `synthface train san`, `synthface perturb`, `synthface privacy`
(cli/app.py puts perturb and privacy at the top level and san in the `train` group)."""

from __future__ import annotations

import json

import click

from .errors import removed_on_failure
from .options import DEVICE, NONNEG_INT, NONNEGATIVE, POSITIVE, POSITIVE_INT, SEED
from ..errors import SynthfaceError


def _log(msg: str) -> None:
    click.echo(msg, err=True)


def _widths(value: str) -> list[int]:
    try:
        return [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated widths, e.g. 256,128") from None


def _threads(n: int) -> None:
    if n:
        import torch
        torch.set_num_threads(n)


@click.command("san")
@click.option("--dataset", required=True, type=click.Path(exists=True, file_okay=False),
              help="synthface dataset (manifest.jsonl with gender labels or cells naming female / male)")
@click.option("--gender-classifier", "classifiers", multiple=True, default=("world-attributes",), show_default=True,
              help="differentiable auxiliary gender classifier: world-attributes, world-audit-attributes, "
                   "world-genderage or a `synthface train attribute` run directory (repeat: one per ensemble member)")
@click.option("--matcher", default="world-recognizer", show_default=True,
              help="differentiable auxiliary matcher: world-recognizer, torch:PATH.safetensors, arcface:PATH.pt")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="model file, e.g. M.san")
@click.option("--size", type=click.IntRange(8, 4096), default=None,
              help="side the SAN works at [default: the dataset's image side]")
@click.option("--rgb", is_flag=True, help="RGB in and out (first conv widened) instead of the official grey model")
@click.option("--layout", type=click.Choice(["arcface", "ffhq"]), default="arcface", show_default=True,
              help="how the dataset's faces are framed: ArcFace crops (synthface datasets) or full FFHQ-aligned")
@click.option("--enc-channels", default="8,12", show_default=True)
@click.option("--dec-channels", default="256,128", show_default=True)
@click.option("--skip-input", is_flag=True,
              help="add the output to the input's logit (a residual skip past the blurring autoencoder; "
                   "not official)")
@click.option("--pretrain-epochs", type=NONNEG_INT, default=1, show_default=True,
              help="reconstruction-only epochs first")
@click.option("--epochs", type=NONNEG_INT, default=20, show_default=True)
@click.option("--matcher-start", type=NONNEG_INT, default=5, show_default=True,
              help="SAN epochs without the matcher term")
@click.option("--gender-weight", type=NONNEGATIVE, default=1.0, show_default=True)
@click.option("--rec-weight", type=NONNEGATIVE, default=1.0, show_default=True)
@click.option("--matcher-weight", type=NONNEGATIVE, default=8.0, show_default=True)
@click.option("--embedding-weight", type=NONNEGATIVE, default=0.0, show_default=True,
              help="gender term on the matcher's descriptors (a logistic probe learnt on the training faces); "
                   "0: off, as published")
@click.option("--matcher-target", type=click.Choice(["mean", "each"]), default="mean", show_default=True,
              help="hold the mean of the two outputs' descriptors to the original's (official), or each one's")
@click.option("--embedding-matcher", default=None,
              help="recogniser whose descriptors the embedding term reads (a matcher spec) [default: --matcher]")
@click.option("--lr", type=POSITIVE, default=2e-4, show_default=True)
@click.option("--batch", type=POSITIVE_INT, default=8, show_default=True)
@click.option("--no-augment", is_flag=True, help="no horizontal flips")
@click.option("--members", type=POSITIVE_INT, default=1, show_default=True,
              help="ensemble size (>1 writes a SANEnsemble)")
@click.option("--rule", type=click.Choice(["confound", "random"]), default="confound", show_default=True,
              help="ensemble release rule (see synthface.methods.san_ensemble)")
@click.option("--work-dir", default=None, type=click.Path(file_okay=False),
              help="keep the Trainer's checkpoints and logs here [default: a temporary folder]")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--threads", type=NONNEG_INT, default=0, show_default=True, help="torch CPU threads (0: torch's default)")
def train_san(dataset, classifiers, matcher, out, size, rgb, layout, enc_channels, dec_channels, skip_input,
              pretrain_epochs, epochs, matcher_start, gender_weight, rec_weight, matcher_weight, embedding_weight,
              embedding_matcher, matcher_target, lr, batch, no_augment, members, rule, work_dir, seed, device, threads):
    """Train a Semi-Adversarial Network (or an ensemble) that hides gender and keeps faces matchable."""
    from ..methods.san import SemiAdversarialNet
    from ..methods.san_ensemble import SANEnsemble
    from ..methods.san_privacy import face_table, read_images

    _threads(threads)
    try:
        t = face_table(dataset)
        images = read_images(t["root"], t["paths"], size)
        params = dict(size=size or int(images.shape[1]), rgb=rgb, layout=layout, enc_channels=_widths(enc_channels),
                      dec_channels=_widths(dec_channels), skip_input=skip_input,
                      gender_classifier=classifiers[0], matcher=matcher,
                      pretrain_epochs=pretrain_epochs, epochs=epochs, matcher_start=matcher_start,
                      gender_weight=gender_weight, rec_weight=rec_weight, matcher_weight=matcher_weight,
                      embedding_weight=embedding_weight, embedding_matcher=embedding_matcher,
                      matcher_target=matcher_target, lr=lr,
                      batch_size=batch, augment=not no_augment, seed=seed, device=device, work_dir=work_dir)
        _log(f"{len(images)} faces of {len(set(t['identity'].tolist()))} identities, {images.shape[1]}px; "
             f"{int((t['gender'] == 0).sum())} female, {int((t['gender'] == 1).sum())} male")
        if members > 1:
            model = SANEnsemble(members, base=params, classifiers=list(classifiers), rule=rule, seed=0)
            model.fit(images, t["gender"], log=_log)
            hist = model.members_[-1].history_
        else:
            model = SemiAdversarialNet(**params).fit(images, t["gender"], log=_log)
            hist = model.history_
        model.save(out)
    except SynthfaceError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps({"out": str(out), "members": members, "last_epoch": hist[-1] if hist else None}, indent=2))


@click.command("perturb")
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="a SAN (or SAN ensemble) from `synthface train san`")
@click.option("--dataset", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="the perturbed dataset (same layout)")
@click.option("--prototype", type=click.Choice(["opposite", "same", "neutral"]), default="opposite",
              show_default=True, help="prototype of the released faces (an ensemble always releases by its rule)")
@click.option("--threads", type=NONNEG_INT, default=0, show_default=True)
def perturb(model_path, dataset, out, prototype, threads):
    """Perturb every face of a dataset with a SAN; writes a dataset every synthface command reads, and
    contact_sheet.png (original / same / opposite / neutral)."""
    from ..methods.san_ensemble import load_san
    from ..methods.san_privacy import perturb_dataset

    _threads(threads)
    try:
        res = perturb_dataset(load_san(model_path), dataset, out, prototype, log=_log)
    except SynthfaceError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(res, indent=2))


@click.command("privacy")
@click.option("--original", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--perturbed", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--gender-classifier", "classifiers", multiple=True, required=True,
              help="unseen gender classifier (repeatable): world-audit, world, genderage:PACK, onnx:PATH, a train "
                   "attribute run directory, world-audit-attributes, or sklearn:RECOGNISER (fresh logistic "
                   "regression on that recogniser's embeddings)")
@click.option("--recognizer", "recognizers", multiple=True, required=True,
              help="unseen matcher (repeatable): world-audit, world, onnx:PATH, insightface:PACK, torch:PATH, ...")
@click.option("--layout", type=click.Choice(["arcface", "ffhq"]), default="arcface", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
def privacy(original, perturbed, classifiers, recognizers, layout, out, seed, device):
    """Gender-classifier error and AUC on original vs perturbed faces, and matcher TMR at FMR 1e-3 / 1e-2 of
    perturbed probes against original galleries, per cell: report.md, report.html, results.json."""
    from ..methods.san_privacy import evaluate_privacy, privacy_markdown, write_privacy_report

    try:
        with removed_on_failure(out):
            res = evaluate_privacy(original, perturbed, classifiers, recognizers, layout, device, seed, log=_log)
            path = write_privacy_report(res, out)
    except SynthfaceError as e:
        raise click.ClickException(str(e)) from None
    click.echo(privacy_markdown(res))
    _log(f"wrote {path}")


__all__ = ["train_san", "perturb", "privacy"]
