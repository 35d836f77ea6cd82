#!/usr/bin/env python
"""Regenerate the README's images in docs/images/:

- renderer_grid.png: one row per group x gender cell of the demo world (8 identities, image 0);
- generator_grid.png: the shipped demo generator's seeds 0-31 (psi 1, noise const);
- balanced_rows.png and balanced_frequencies.png: from a finished `make demo` output
  (one row per cell of the balanced set; cell frequencies, uniform vs latent model).

    python scripts/readme_images.py [--demo demo_out]
"""

import shutil
from pathlib import Path

import click
import numpy as np
from PIL import Image

from synthface.fileio import image_grid, save_image_atomic
from synthface.generator.synthesis import generate_images
from synthface.generator import load_generator
from synthface.world import GENDERS, GROUPS, World
from synthface.world.assets import generator_path


@click.command()
@click.option("--out", default="docs/images", show_default=True)
@click.option("--demo", default=None, help="a finished demo output directory (for the balanced-set images)")
def main(out, demo):
    out = Path(out)
    w = World(seed=0)
    rows = []
    for gi in range(len(GROUPS)):
        for si in range(len(GENDERS)):
            ident = w.identities(range(5000 + 8 * (2 * gi + si), 5000 + 8 * (2 * gi + si) + 8), group=gi, gender=si)
            rows.extend(w.render(ident, [0] * 8, size=96))
    save_image_atomic(image_grid(rows, cols=8), out / "renderer_grid.png")
    G = load_generator(generator_path())
    imgs = [im for _, im in generate_images(G, range(32), noise_mode="const", batch_size=32)]
    save_image_atomic(image_grid(imgs, cols=8), out / "generator_grid.png")
    if demo:
        cells = sorted(p for p in (Path(demo) / "balanced" / "images").iterdir() if p.is_dir())
        rows = [np.asarray(Image.open(f).convert("RGB")) for c in cells for f in sorted(c.glob("*.png"))[:8]]
        save_image_atomic(image_grid(rows, cols=8), out / "balanced_rows.png")
        shutil.copyfile(Path(demo) / "balanced" / "frequencies.png", out / "balanced_frequencies.png")
    print(f"wrote images to {out}")


if __name__ == "__main__":
    main()
