"""`synthface train ...`: training commands on synthface's shared training stack (also under
torchrun: `torchrun --nproc_per_node=N -m synthface.cli train recognition ...`)."""

from __future__ import annotations

import json

import click

from .errors import SynthfaceError


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
@click.option("--scale", type=float, default=64.0, show_default=True)
@click.option("--embedding-dim", type=click.IntRange(min=2), default=512, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=128, show_default=True,
              help="global batch (split over torchrun's processes)")
@click.option("--lr", type=float, default=0.1, show_default=True)
@click.option("--weight-decay", type=float, default=5e-4, show_default=True)
@click.option("--warmup-epochs", type=float, default=1.0, show_default=True)
@click.option("--held-out", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="fraction of identities kept for verification after each epoch")
@click.option("--crop", type=click.Choice(["none", "arcface"]), default="none", show_default=True,
              help="arcface: warp FFHQ-aligned full faces (synthface world render) to the 112x112 ArcFace crop")
@click.option("--no-augment", is_flag=True, help="no flip / colour jitter on training images")
@click.option("--drop-small", is_flag=True, help="drop identities with a single image instead of stopping")
@click.option("--resume", is_flag=True, help="continue the run in --out from its checkpoint")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda")
@click.option("--amp", type=click.Choice(["auto", "none", "bf16", "fp16"]), default="auto", show_default=True,
              help="mixed precision on CUDA (auto: bf16); CPU runs in fp32")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="DataLoader workers")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="also checkpoint every N steps (0: at each epoch's end)")
def recognition(data, out, backbone, loss, margin, scale, embedding_dim, epochs, batch, lr, weight_decay,
                warmup_epochs, held_out, crop, no_augment, drop_small, resume, seed, device, amp, workers,
                checkpoint_every):
    """Train a face recogniser with a margin loss (arcface_torch's recipe) and export it."""
    from .train.recognition import RecognitionConfig, train_recognition

    cfg = RecognitionConfig(data=data, out=out, backbone=backbone, loss=loss, margin=margin, scale=scale,
                            embedding_dim=embedding_dim, epochs=epochs, batch=batch, lr=lr, weight_decay=weight_decay,
                            warmup_epochs=warmup_epochs, held_out=held_out, crop=crop, augment=not no_augment,
                            drop_small=drop_small, resume=resume, seed=seed, device=device, amp=amp, workers=workers,
                            checkpoint_every=checkpoint_every)
    try:
        res = train_recognition(cfg, log=lambda m: click.echo(m, err=True))
    except SynthfaceError as e:
        raise click.ClickException(str(e)) from None
    if "config" in res:
        click.echo(json.dumps({"out": out, "val_accuracy": res["val_accuracy"], "steps": res["steps"]}))
