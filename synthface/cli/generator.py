"""`synthface images`, `convert`, `info`: a generator checkpoint's images, conversion and description."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .errors import api_iter, run_api
from .options import DEVICE, FINITE, NONNEG_INT, PRECISION_HELP, SEEDS


@click.command()
@click.option("--network", "network", required=True, type=click.Path(dir_okay=False),
              help="Generator file: NVIDIA .pkl, TensorFlow .pkl or synthface .safetensors.")
@click.option("--seeds", required=True, type=SEEDS, help="Seeds, e.g. 0-7,12.")
@click.option("--trunc", "truncation_psi", type=FINITE, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--trunc-cutoff", "truncation_cutoff", type=click.IntRange(min=0), default=None,
              help="Truncate only the first N ws (default: all).")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True)
@click.option("--class-idx", type=NONNEG_INT, default=None, help="Class label (conditional networks only).")
@click.option("--outdir", required=True, type=click.Path(file_okay=False), help="Where to save seedNNNN.png.")
@click.option("--device", type=DEVICE, default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help=PRECISION_HELP)
def images(network, seeds, truncation_psi, truncation_cutoff, noise_mode, class_idx, outdir, device, batch_size,
           precision):
    """Generate images for a list of seeds (z = RandomState(seed).randn(1, z_dim))."""
    from ..fileio import save_image_atomic
    from ..generator.synthesis import generate_images
    from ..generator import load_generator, resolve_device

    seed_list = seeds
    dev = run_api(resolve_device, device)
    G = run_api(load_generator, network, device=dev, precision=precision)
    if truncation_cutoff is not None and truncation_cutoff > G.num_ws:
        raise click.BadParameter(f"the network has {G.num_ws} ws; use a cutoff <= {G.num_ws}", param_hint="--trunc-cutoff")
    out = Path(outdir)
    count = 0
    gen = generate_images(G, seed_list, truncation_psi, truncation_cutoff, noise_mode, class_idx, batch_size, dev,
                          progress=True)
    for seed, arr in api_iter(gen):
        save_image_atomic(arr, out / f"seed{seed:04d}.png")
        count += 1
    click.echo(f"wrote {count} images to {out}", err=True)

@click.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
def convert(src, dst):
    """Convert a network (NVIDIA or TensorFlow pickle) to synthface's .safetensors format."""
    from ..generator import load_generator, save_generator
    from ..generator.checkpoint import file_sha256

    if not dst.endswith(".safetensors"):
        raise click.BadParameter("the output must end in .safetensors", param_hint="DST")
    G, info = run_api(load_generator, src, device="cpu", return_info=True)
    save_generator(G, dst, source=f"{info.format} ({info.source})",
                   extra_metadata={"source_sha256": file_sha256(src), "source_name": Path(src).name})
    click.echo(f"wrote {dst}", err=True)


@click.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(path, as_json):
    """Describe a network file: format, architecture, resolution, dims, parameters, sha256."""
    from ..generator import describe

    d = run_api(describe, path)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    width = max(map(len, d))
    for k, v in d.items():
        click.echo(f"{k:<{width}}  {v}")
