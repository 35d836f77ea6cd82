"""Command-line interface (thin over the Python API). Option names follow NVIDIA's
generate.py where they overlap, so existing commands carry over."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .errors import SynthfaceError


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except SynthfaceError as e:
        raise click.ClickException(str(e)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="synthface")
def main():
    """synthface: demographically balanced synthetic faces from a pretrained StyleGAN2."""


@main.command()
@click.option("--network", "network", required=True, type=click.Path(dir_okay=False),
              help="Generator file: NVIDIA .pkl, TensorFlow .pkl or synthface .safetensors.")
@click.option("--seeds", required=True, help="Seeds, e.g. 0-7,12.")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--trunc-cutoff", "truncation_cutoff", type=click.IntRange(min=0), default=None,
              help="Truncate only the first N ws (default: all).")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True)
@click.option("--class-idx", type=int, default=None, help="Class label (conditional networks only).")
@click.option("--outdir", required=True, type=click.Path(file_okay=False), help="Where to save seedNNNN.png.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=8, show_default=True)
def images(network, seeds, truncation_psi, truncation_cutoff, noise_mode, class_idx, outdir, device, batch_size):
    """Generate images for a list of seeds (z = RandomState(seed).randn(1, z_dim))."""
    from .generate import generate_images, parse_seeds, save_image_atomic
    from .generator import load_generator, resolve_device

    seed_list = _run(parse_seeds, seeds)
    dev = _run(resolve_device, device)
    G = _run(load_generator, network, device=dev)
    if truncation_cutoff is not None and truncation_cutoff > G.num_ws:
        raise click.BadParameter(f"the network has {G.num_ws} ws; use a cutoff <= {G.num_ws}", param_hint="--trunc-cutoff")
    out = Path(outdir)
    count = 0
    gen = generate_images(G, seed_list, truncation_psi, truncation_cutoff, noise_mode, class_idx, batch_size, dev,
                          progress=True)
    for seed, arr in _iter(gen):
        save_image_atomic(arr, out / f"seed{seed:04d}.png")
        count += 1
    click.echo(f"wrote {count} images to {out}", err=True)


def _iter(gen):
    try:
        yield from gen
    except SynthfaceError as e:
        raise click.ClickException(str(e)) from None


@main.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
def convert(src, dst):
    """Convert a network (NVIDIA or TensorFlow pickle) to synthface's .safetensors format."""
    from .generator import load_generator, save_generator
    from .generator.checkpoint import file_sha256

    if not dst.endswith(".safetensors"):
        raise click.BadParameter("the output must end in .safetensors", param_hint="DST")
    G, info = _run(load_generator, src, device="cpu", return_info=True)
    save_generator(G, dst, source=f"{info.format} ({info.source})",
                   extra_metadata={"source_sha256": file_sha256(src), "source_name": Path(src).name})
    click.echo(f"wrote {dst}", err=True)


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(path, as_json):
    """Describe a network file: format, architecture, resolution, dims, parameters, sha256."""
    from .generator import describe

    d = _run(describe, path)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    width = max(map(len, d))
    for k, v in d.items():
        click.echo(f"{k:<{width}}  {v}")


@main.group()
def world():
    """The built-in demo world: procedural faces with known demographics."""


@world.command("render")
@click.option("--outdir", required=True, type=click.Path(file_okay=False), help="image folder to create")
@click.option("--identities", default=1000, show_default=True)
@click.option("--images", "images_per_identity", default=6, show_default=True, help="images per identity")
@click.option("--size", default=64, show_default=True)
@click.option("--distribution", type=click.Choice(["biased", "balanced"]), default="biased", show_default=True)
@click.option("--seed", default=0, show_default=True, help="world seed")
@click.option("--first-identity", default=0, show_default=True)
def world_render(outdir, identities, images_per_identity, size, distribution, seed, first_identity):
    """Render a population as <identity>/<image>.png plus labels.jsonl (e.g. to train a GAN on)."""
    from .world import BALANCED, BIASED, World
    from .world.dataset import write_image_folder

    w = World(seed=seed, distribution=BIASED if distribution == "biased" else BALANCED)
    path = _run(write_image_folder, w, outdir, identities, images_per_identity, size, first_identity=first_identity,
                log=lambda m: click.echo(m, err=True))
    click.echo(str(path))


@main.command()
@click.option("--outdir", default="demo_out", show_default=True, type=click.Path(file_okay=False))
@click.option("--n", default=512, show_default=True, help="random faces to generate and label")
def demo(outdir, n):
    """Run the main job on the built-in demo world."""
    from .demo import run_demo

    _run(run_demo, outdir, n=n, log=lambda m: click.echo(m, err=True))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
