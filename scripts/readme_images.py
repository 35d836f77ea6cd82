#!/usr/bin/env python
"""Regenerate docs/images/renderer_grid.png: one row per group x gender cell of the demo world
(8 identities, image 0 of each), as shown in the README."""

from pathlib import Path

import numpy as np

from synthface.generate import image_grid, save_image_atomic
from synthface.world import GENDERS, GROUPS, World


def main(out="docs/images/renderer_grid.png"):
    w = World(seed=0)
    rows = []
    for gi in range(len(GROUPS)):
        for si in range(len(GENDERS)):
            ident = w.identities(range(5000 + 8 * (2 * gi + si), 5000 + 8 * (2 * gi + si) + 8), group=gi, gender=si)
            rows.extend(w.render(ident, [0] * 8, size=96))
    save_image_atomic(image_grid(rows, cols=8), Path(out))
    print(out)


if __name__ == "__main__":
    main()
