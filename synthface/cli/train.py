"""`synthface train ...`: training commands on synthface's shared training stack (also under
torchrun: `torchrun --nproc_per_node=N -m synthface.cli train recognition ...`)."""

from __future__ import annotations

import json

import click

from .options import DEVICE, NONNEGATIVE, POSITIVE, SEED, FiniteFloat
from ..errors import SynthfaceError


@click.group()
def train():
    """Train networks (face recognisers) on synthface or any face dataset."""


@train.command()
@click.option("--data", required=True, type=click.Path(exists=True),
              help="synthface dataset folder, ImageFolder, .rec file or identity CSV (path,identity[,...])")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="run directory")
@click.option("--backbone", default="r50", show_default=True,
              help="r18, r34, r50, r100, r200, mbf, mbf_large or world-recognizer")
@click.option("--loss", type=click.Choice(["arcface", "cosface", "combined"]), default="arcface", show_default=True)
@click.option("--margin", default=None,
              help="m for arcface/cosface, m1,m2,m3 for combined [default: 0.5, 0.4, 1,0.5,0 as arcface_torch]")
@click.option("--scale", type=POSITIVE, default=64.0, show_default=True)
@click.option("--embedding-dim", type=click.IntRange(min=2), default=512, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=128, show_default=True,
              help="global batch (split over torchrun's processes)")
@click.option("--lr", type=POSITIVE, default=0.1, show_default=True)
@click.option("--weight-decay", type=NONNEGATIVE, default=5e-4, show_default=True)
@click.option("--warmup-epochs", type=NONNEGATIVE, default=1.0, show_default=True)
@click.option("--held-out", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="fraction of identities kept for verification after each epoch")
@click.option("--crop", type=click.Choice(["none", "arcface"]), default="none", show_default=True,
              help="arcface: warp FFHQ-aligned full faces (synthface world render) to the 112x112 ArcFace crop")
@click.option("--no-augment", is_flag=True, help="no flip / colour jitter on training images (= --augment none)")
@click.option("--augment", type=click.Choice(["none", "basic", "strong"]), default="basic", show_default=True,
              help="basic: flip + colour jitter; strong: also rotation, scale, shift and blur (for synthetic faces)")
@click.option("--drop-small", is_flag=True, help="drop identities with a single image instead of stopping")
@click.option("--resume", is_flag=True, help="continue the run in --out from its checkpoint")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", type=DEVICE, default="auto", show_default=True, help="auto, cpu, cuda")
@click.option("--amp", type=click.Choice(["auto", "none", "bf16", "fp16"]), default="auto", show_default=True,
              help="mixed precision on CUDA (auto: bf16); CPU runs in fp32")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="DataLoader workers")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="also checkpoint every N steps (0: at each epoch's end)")
def recognition(data, out, backbone, loss, margin, scale, embedding_dim, epochs, batch, lr, weight_decay,
                warmup_epochs, held_out, crop, no_augment, augment, drop_small, resume, seed, device, amp, workers,
                checkpoint_every):
    """Train a face recogniser with a margin loss (arcface_torch's recipe) and export it."""
    from ..train.recognition import RecognitionConfig, train_recognition

    cfg = RecognitionConfig(data=data, out=out, backbone=backbone, loss=loss, margin=margin, scale=scale,
                            embedding_dim=embedding_dim, epochs=epochs, batch=batch, lr=lr, weight_decay=weight_decay,
                            warmup_epochs=warmup_epochs, held_out=held_out, crop=crop,
                            augment="none" if no_augment else augment, drop_small=drop_small, resume=resume, seed=seed,
                            device=device, amp=amp, workers=workers, checkpoint_every=checkpoint_every)
    try:
        res = train_recognition(cfg, log=lambda m: click.echo(m, err=True))
    except SynthfaceError as e:
        raise click.ClickException(str(e)) from None
    if "config" in res:
        click.echo(json.dumps({"out": out, "val_accuracy": res["val_accuracy"], "steps": res["steps"]}))


def _bandwidth(value):
    """--cid-bandwidth: a positive number, or default (per class: median k-th-neighbour distance)."""
    if value is None or str(value).lower() in ("default", "none", ""):
        return None
    try:
        h = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a positive number or 'default'") from None
    if not 0 < h < float("inf"):  # also refuses nan
        raise click.BadParameter(f"{value!r}: the bandwidth must be positive")
    return h


def _region(value):
    if not value:
        return None
    try:
        r = tuple(float(v) for v in value.split(","))
    except ValueError:
        r = ()
    # four fractions of the face, each side after the one it faces (nan fails every comparison)
    if len(r) != 4 or not all(0.0 <= v <= 1.0 for v in r) or not (r[0] < r[1] and r[2] < r[3]):
        raise click.BadParameter(f"{value!r}: give four fractions top,bottom,left,right in [0, 1] with top < bottom "
                                 "and left < right, e.g. 0.375,0.94,0.22,0.78", param_hint="--region")
    return r


@train.command()
@click.option("--data", required=True, type=click.Path(exists=True),
              help="synthface dataset folder, ImageFolder (e.g. synthface world render --image-labels), .rec or CSV")
@click.option("--task", required=True, help="the label column to predict: smile, glasses, gender, any categorical one")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="run directory")
@click.option("--weights", type=click.Choice(["erm", "cid", "oracle"]), default="erm",
              show_default=True, help="per-sample weights: none (erm), CID from --recognizer's embeddings, or "
                                      "inverse identity frequency from the dataset's identities (oracle)")
@click.option("--weighting", type=click.Choice(["loss", "sampler"]), default="loss", show_default=True,
              help="apply the weights in the loss, or resample the training set in proportion to them")
@click.option("--recognizer", default="world", show_default=True, help="recogniser whose embeddings CID uses "
              "(world, onnx:PATH, insightface:DIR, torch:PATH, ...)")
@click.option("--cid-bandwidth", default=None, help="kernel bandwidth (L2 distance between unit embeddings); "
              "default: per class, the median distance to the k-th neighbour")
@click.option("--cid-k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--cid-gamma", type=FiniteFloat(min=0), default=1.0, show_default=True)
@click.option("--cid-max-ratio", type=FiniteFloat(min=1), default=10.0, show_default=True)
@click.option("--backbone", default="small", show_default=True,
              help="small (a few-layer CNN, fast on CPU), or r18, r50, mbf, world-recognizer, ...")
@click.option("--width", type=click.IntRange(min=1), default=16, show_default=True, help="small backbone's width")
@click.option("--embedding-dim", type=click.IntRange(min=2), default=64, show_default=True)
@click.option("--size", type=click.IntRange(min=8), default=64, show_default=True, help="input side")
@click.option("--crop", type=click.Choice(["none", "arcface"]), default="none", show_default=True)
@click.option("--region", default=None, help="top,bottom,left,right fractions of the face the network looks at "
              "(e.g. 0.375,0.94,0.22,0.78: eyes to chin on FFHQ-aligned renders); default: all of it")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=POSITIVE, default=2e-3, show_default=True)
@click.option("--weight-decay", type=NONNEGATIVE, default=1e-4, show_default=True)
@click.option("--held-out", type=FiniteFloat(0, 1, max_open=True), default=0.1, show_default=True,
              help="fraction of identities kept out to report accuracy (0: none)")
@click.option("--no-augment", is_flag=True)
@click.option("--resume", is_flag=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
def attribute(data, task, out, weights, weighting, recognizer, cid_bandwidth, cid_k, cid_gamma, cid_max_ratio,
              backbone, width, embedding_dim, size, crop, region, epochs, batch, lr, weight_decay, held_out,
              no_augment, resume, seed, device):
    """Train a face-attribute classifier, optionally identity-robust (CID); export ONNX + sidecar."""
    from ..methods.attribute_weights import make_weigher
    from ..methods.cid import CIDWeights
    from ..train.attribute import AttributeConfig, train_attribute

    say = lambda m: click.echo(m, err=True)  # noqa: E731
    cfg = AttributeConfig(data=data, out=out, task=task, backbone=backbone, width=width, embedding_dim=embedding_dim,
                          size=size, crop=crop, region=_region(region), epochs=epochs, batch=batch, lr=lr,
                          weight_decay=weight_decay, held_out=held_out, augment=not no_augment, weights=weights,
                          weighting=weighting, seed=seed, device=device, resume=resume)
    try:
        cid = CIDWeights(k=cid_k, bandwidth=_bandwidth(cid_bandwidth), gamma=cid_gamma, max_ratio=cid_max_ratio)
        import torch
        dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        weigh = make_weigher(weights, weighting, recognizer, cid, device=dev, seed=seed, log=say)
        res = train_attribute(cfg, weigh=weigh, log=say)
    except SynthfaceError as e:
        raise click.ClickException(str(e)) from None
    if "config" in res:
        click.echo(json.dumps({"out": out, "val_accuracy": res["val_accuracy"], "steps": res["steps"],
                               "weights": res["weights"].get("per_class")}))
