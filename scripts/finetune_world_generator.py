#!/usr/bin/env python
"""Fine-tune the demo world's StyleGAN2 for diversity in its rare female cells (issue 25, item 3).

    python scripts/finetune_world_generator.py --workdir build/world-ft --threads 1   # rerun to resume

Why: measured with scripts/measure_generator_coverage.py, the shipped generator's own faces cover
renderer people of group1/female and group2/female far less well than other renderer people do
(group2/female: only ~2 % of its faces are confidently that cell). Widening the latent model's cell
Gaussian or extrapolating the prior (psi > 1) did not help (docs/benchmarks.md), so G has to change.

What it does: (1) renders a training set that keeps the biased population (World seed 0, groups
25/15/60 %, genders 35/65 %; --identities people x --images each, one more person per image than the
shipped 6000 x 6 set at the same size) plus --extra-per-cell more people of each rare female cell
(identities 20,000,000+, a range no evaluation uses), so G gets more of those cells' variety to learn
from while the prior stays biased (group3/male remains the largest cell); (2) starts G from the
shipped generator, trains a fresh D alone for --d-warmup-kimg (the shipped D was never kept), then
both, with the run resumable (rerun the same command; snapshots every 10 kimg under
WORKDIR/stylegan2). Assess a snapshot with `synthface world assess --network SNAPSHOT` and
`scripts/measure_generator_coverage.py --network SNAPSHOT` before shipping it.
"""

from pathlib import Path

import click

from synthface.assets import generator_path
from synthface.train.stylegan2 import TrainConfig, train
from synthface.world import BIASED, World
from synthface.world.dataset import write_image_folder

EXTRA_FIRST = 20_000_000
RARE_CELLS = (("group1", "female"), ("group2", "female"))


def cell_world(group: str, gender: str) -> World:
    """A world whose every person is of one cell (same seed, so people are drawn as the renderer draws them)."""
    return World(seed=0, distribution={"group": {group: 1.0}, "gender": {gender: 1.0}})


@click.command()
@click.option("--workdir", default="build/world-ft", show_default=True)
@click.option("--identities", default=12000, show_default=True, help="people of the biased population")
@click.option("--images", default=2, show_default=True, help="images per person")
@click.option("--extra-per-cell", default=1000, show_default=True,
              help="more people of group1/female and of group2/female each")
@click.option("--d-warmup-kimg", default=40.0, show_default=True)
@click.option("--kimg", default=300.0, show_default=True, help="train until this many kimg (warm-up included)")
@click.option("--lr", default=0.002, show_default=True, help="G's learning rate (D: 0.0025)")
@click.option("--threads", default=1, show_default=True)
def main(workdir, identities, images, extra_per_cell, d_warmup_kimg, kimg, lr, threads):
    data = Path(workdir) / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_image_folder(World(seed=0, distribution=BIASED), data / "biased", identities, images, 64)
    for k, (group, gender) in enumerate(RARE_CELLS):
        if extra_per_cell > 0:
            write_image_folder(cell_world(group, gender), data / f"{group}_{gender}", extra_per_cell, images, 64,
                               first_identity=EXTRA_FIRST + k * 1_000_000)
    cfg = TrainConfig(data=str(data), outdir=str(Path(workdir) / "stylegan2"), resolution=64, z_dim=128, w_dim=128,
                      mapping_layers=4, channel_base=1024, channel_max=128, batch=32, kimg=kimg, g_lr=lr, d_lr=0.0025,
                      seed=1, snapshot_kimg=10, init_generator=str(generator_path()), d_warmup_kimg=d_warmup_kimg,
                      threads=threads)
    click.echo(f"G_ema -> {train(cfg)}")


if __name__ == "__main__":
    main()
