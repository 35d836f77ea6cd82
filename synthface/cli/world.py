"""`synthface world render|assess` and `synthface demo`: the built-in demo world."""

from __future__ import annotations

import json

import click

from .errors import removed_on_failure, run_api
from .options import DEVICE, FINITE, NONNEG_INT, POSITIVE_INT, SEED, SEEDS, load_network


@click.group()
def world():
    """The built-in demo world: procedural faces with known demographics."""


@world.command("render")
@click.option("--outdir", required=True, type=click.Path(file_okay=False), help="image folder to create")
@click.option("--identities", type=POSITIVE_INT, default=1000, show_default=True)
@click.option("--images", "images_per_identity", type=POSITIVE_INT, default=6, show_default=True,
              help="images per identity")
@click.option("--size", type=click.IntRange(8, 4096), default=64, show_default=True)
@click.option("--distribution", type=click.Choice(["biased", "balanced"]), default="biased", show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True, help="world seed")
@click.option("--first-identity", type=NONNEG_INT, default=0, show_default=True)
@click.option("--image-labels", is_flag=True, help="also record each image's smile, smile_score and glasses")
@click.option("--workers", type=POSITIVE_INT, default=1, show_default=True,
              help="render in this many processes (same files, byte for byte)")
def world_render(outdir, identities, images_per_identity, size, distribution, seed, first_identity, image_labels,
                 workers):
    """Render a population as <identity>/<image>.png plus labels.jsonl (e.g. to train a GAN on)."""
    from ..world import BALANCED, BIASED, World
    from ..world.dataset import write_image_folder

    w = World(seed=seed, distribution=BIASED if distribution == "biased" else BALANCED)
    path = run_api(write_image_folder, w, outdir, identities, images_per_identity, size, first_identity=first_identity,
                log=lambda m: click.echo(m, err=True), per_image_labels=image_labels, workers=workers)
    click.echo(str(path))


@world.command("assess")
@click.option("--network", default="world", show_default=True, help="Generator file, or 'world' for the shipped one.")
@click.option("--seeds", type=SEEDS, default="0-1999", show_default=True, help="Seeds, e.g. 0-1999 or 50000-51999.")
@click.option("--trunc", "truncation_psi", type=FINITE, default=1.0, show_default=True)
@click.option("--outdir", required=True, type=click.Path(file_okay=False),
              help="gets assessment.json, seed_grid.png and cells/<group>_<gender>.png contact sheets")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
def world_assess(network, seeds, truncation_psi, outdir, device):
    """Score a demo-world generator: confident labels, cell frequencies against the biased training mix."""
    from ..labelling import OnnxClassifier
    from ..world import BIASED
    from ..world.assess import assess_generator
    from ..assets import attribute_classifier_path

    G, _ = load_network(network, device)
    clf = run_api(OnnxClassifier, run_api(attribute_classifier_path))
    with removed_on_failure(outdir):
        res = run_api(assess_generator, G, clf, outdir, seeds=seeds, distribution=BIASED,
                   truncation_psi=truncation_psi)
    click.echo(json.dumps({k: v for k, v in res.items() if k != "contact_sheets"}, indent=2))
@click.command()
@click.option("--outdir", default="demo_out", show_default=True, type=click.Path(file_okay=False))
@click.option("--n", type=POSITIVE_INT, default=512, show_default=True, help="random faces to generate and label")
@click.option("--bank-n", type=click.IntRange(min=1000), default=8000, show_default=True,
              help="latents labelled to fit the latent model (from 1000: it needs 30 confident faces per cell)")
@click.option("--per-cell", type=NONNEG_INT, default=100, show_default=True,
              help="faces per cell in the balanced set (0: skip)")
@click.option("--ids-per-cell", type=NONNEG_INT, default=10, show_default=True,
              help="identities per cell in the dataset (0: skip)")
@click.option("--images-per-id", type=POSITIVE_INT, default=5, show_default=True)
def demo(outdir, n, bank_n, per_cell, ids_per_cell, images_per_id):
    """Run the main job on the built-in demo world."""
    from ..demo import run_demo

    run_api(run_demo, outdir, n=n, bank_n=bank_n, per_cell=per_cell, ids_per_cell=ids_per_cell,
         images_per_id=images_per_id, log=lambda m: click.echo(m, err=True))
