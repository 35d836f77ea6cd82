"""How much pose, expression and light variety a generator's prior makes, against renderer faces.

    python scripts/measure_nuisance_spread.py [--networks world,runs/x/network-snapshot-000200.safetensors] [--n 1500]

For each generator: n faces of its prior (z ~ N(0, I), psi 1), read by the world's nuisance regressor; the
same regressor reads n renderer faces (balanced population, one image each of n people, nuisance drawn as
the renderer draws it). Prints, per nuisance, each side's standard deviation and the ratio generator /
renderer (1: the generator makes the renderer's variety; a ratio well below 1 caps what any variation of an
identity can reach); for glasses, a logit, the share of faces wearing them. JSON to stdout or --out.
"""

import argparse
import json
import time

import numpy as np

from synthface.assets import generator_path
from synthface.generator import load_generator
from synthface.generator.synthesis import prior_latents, synthesize
from synthface.labelling.nuisance import load_nuisance_regressor
from synthface.utils import keyed_rng
from synthface.world import BALANCED, World, take

RENDER_FIRST = 9_000_000  # renderer people used for nothing else


def spread(values: dict, logits=()) -> dict:
    """Standard deviation per nuisance; for a logit output (glasses) the share of faces it calls positive."""
    return {k: float(np.mean(v > 0)) if k in logits else float(np.std(v)) for k, v in values.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default="world", help="comma-separated generators (world: the demo world's)")
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    t0 = time.time()
    reg = load_nuisance_regressor("world")
    world = World(seed=0, distribution=BALANCED)
    ident = world.identities(range(RENDER_FIRST, RENDER_FIRST + a.n))
    faces = np.concatenate([world.render(take(ident, np.arange(s, min(s + 256, a.n))), [0] * (min(s + 256, a.n) - s))
                            for s in range(0, a.n, 256)])
    logits = [k for k, (_, kind) in reg.nuisances.items() if kind == "logit"]
    ref = spread(reg.predict(faces), logits)
    out = {"n": a.n, "renderer_std": ref, "generators": {}}
    seeds = keyed_rng(a.seed, 0x5D2E).integers(0, 2**32 - 1, a.n).tolist()
    for net in a.networks.split(","):
        G = load_generator(generator_path() if net == "world" else net, device="cpu")
        W = prior_latents(G, seeds, 1.0)
        got = spread(reg.predict(synthesize(G, W, "random", 64, noise_seeds=seeds)), logits)
        out["generators"][net] = {"std": got, "ratio": {k: got[k] / ref[k] for k in ref}}
        print(f"{net}: " + ", ".join(f"{k} {got[k] / ref[k]:.2f}" for k in ref), flush=True)
    out["seconds"] = round(time.time() - t0, 1)
    text = json.dumps(out, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
