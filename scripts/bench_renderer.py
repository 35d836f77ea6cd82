#!/usr/bin/env python
"""Renderer throughput (images/s on one core), JSON out.

    python scripts/bench_renderer.py --out bench_out/renderer.json

Measures the raw batched renderer and the World path (per-identity random streams +
rendering), at 64 and 128 px, single-threaded numpy.
"""

import json
import os
import platform
import time
from pathlib import Path

import click
import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from synthface.world import World, draw_identities, draw_nuisance, render, take  # noqa: E402


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


@click.command()
@click.option("--n", default=256, show_default=True, help="images per measurement")
@click.option("--out", default="bench_out/renderer.json", show_default=True)
def main(n, out):
    rng = np.random.default_rng(0)
    p = draw_identities(rng, rng.integers(0, 3, n), rng.integers(0, 2, n), rng.uniform(18, 80, n))
    q = draw_nuisance(rng, n, p["glasses_habit"])
    w = World(seed=0)
    results = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "n": n, "runs": []}
    for size in (64, 128):
        t = best_of(lambda: render(p, q, size))
        results["runs"].append({"path": "render (batched)", "size": size, "images_per_s": round(n / t, 1)})
        t = best_of(lambda: w.render(take(w.identities(range(n // 4)), np.repeat(np.arange(n // 4), 4)),
                                     np.tile(np.arange(4), n // 4), size))
        results["runs"].append({"path": "World.identities + World.render", "size": size, "images_per_s": round(n / t, 1)})
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2) + "\n")
    click.echo(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
