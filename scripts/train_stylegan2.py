#!/usr/bin/env python
"""Train a small StyleGAN2 on a folder of square images; rerun the same command to resume.

    python scripts/train_stylegan2.py --data faces/ --outdir runs/demo --resolution 64 --kimg 300

The run directory gets checkpoint.pt (resume state), network-snapshot.safetensors (G_ema,
loadable with `synthface images --network ...`), fakes*.png sample grids and log.jsonl.
"""


import click

from synthface.train.stylegan2 import TrainConfig, train

D = TrainConfig()  # the one source of defaults


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="folder of images")
@click.option("--outdir", required=True, help="run directory (resumes if it holds a checkpoint)")
@click.option("--resolution", default=D.resolution, show_default=True)
@click.option("--kimg", default=D.kimg, show_default=True, help="train until this many thousand images")
@click.option("--batch", default=D.batch, show_default=True)
@click.option("--z-dim", default=D.z_dim, show_default=True)
@click.option("--w-dim", default=D.w_dim, show_default=True)
@click.option("--mapping-layers", default=D.mapping_layers, show_default=True)
@click.option("--channel-base", default=D.channel_base, show_default=True, help="channels at resolution r: base / r")
@click.option("--channel-max", default=D.channel_max, show_default=True)
@click.option("--lr", default=D.g_lr, show_default=True)
@click.option("--d-lr", default=None, type=float, help="D's learning rate (default: --lr)")
@click.option("--gamma", "r1_gamma", default=None, type=float, help="R1 weight (default 0.0002 * res^2 / batch)")
@click.option("--init", "init_generator", default=None, type=click.Path(exists=True, dir_okay=False),
              help="start G from this exported generator (.safetensors); D starts fresh")
@click.option("--d-warmup-kimg", default=D.d_warmup_kimg, show_default=True, help="train D alone this long first (use with --init)")
@click.option("--g-topk", default=D.g_topk, show_default=True,
              help="fraction of fakes, those D rates most real, that G's loss uses")
@click.option("--snapshot-kimg", default=D.snapshot_kimg, show_default=True)
@click.option("--keep-snapshots", is_flag=True, help="keep every snapshot (network-snapshot-<kimg>.safetensors), "
              "not only the latest")
@click.option("--seed", default=D.seed, show_default=True)
@click.option("--device", default=D.device, show_default=True)
@click.option("--threads", default=D.threads, show_default=True, help="CPU threads (0: torch's default)")
def main(**kw):
    lr, d_lr = kw.pop("lr"), kw.pop("d_lr")
    cfg = TrainConfig(g_lr=lr, d_lr=lr if d_lr is None else d_lr, **kw)
    path = train(cfg)
    click.echo(f"G_ema -> {path}")


if __name__ == "__main__":
    main()
