"""Tune the demo generator again around an anchor file's pivots (its inversions, reused) with another locality weight,
and write a tuned generator and an anchor file for it: `synthface anchors --tune-steps` without inverting again.

    .venv/bin/python scripts/diagnose_coverage_gap/retune_anchors.py runs/tuned/anchors-female150-tuned.npz \
        --steps 1500 --locality 10 --threads 2 --out runs/tuned/retune-l10     # 6 min 20 s on two threads

writes OUT.generator.safetensors and OUT.npz (then `generate --network OUT.generator.safetensors --anchors OUT.npz`).
The demo world's anchors only (their faces are re-rendered: renderer people 9,000,000+, 150 per cell as the file was
built). A one-off behind docs/benchmarks.md (issue 25, fifth session); run from the repository root."""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from synthface.fileio import atomic_write  # noqa: E402
from synthface.generator import load_generator  # noqa: E402
from synthface.identity import load_embedder  # noqa: E402
from synthface.identity.refine import differentiable_twin  # noqa: E402
from synthface.latent.anchors import load_anchors, save_tuned_generator, tune_generator  # noqa: E402
from synthface.world.reference import renderer_anchor_faces  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("anchors")
ap.add_argument("--steps", type=int, default=1500)
ap.add_argument("--locality", type=float, default=10.0)
ap.add_argument("--per-cell", type=int, default=150)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--out", required=True)
a = ap.parse_args()
torch.set_num_threads(a.threads)
A = load_anchors(a.anchors)
G = load_generator("world")
faces, names = renderer_anchor_faces(list(dict.fromkeys(A["cell"].tolist())), a.per_cell, G.img_resolution)
assert names == A["cell"].tolist(), "the anchor file was not built from --per-cell renderer people per cell"
twin = differentiable_twin(load_embedder("world", "cpu"), "cpu")
Gt = tune_generator(G, A["w"], faces, twin, a.steps, locality_weight=a.locality, log=print)
net = a.out + ".generator.safetensors"
own, _ = save_tuned_generator(Gt, G, net, "world", f"pivotal tuning re-run on the pivots of {a.anchors}, {a.steps} "
                              f"steps, locality weight {a.locality:g}")
with np.load(a.anchors) as f:
    z = dict(f)
z.update(generator_hash=np.array(own), tuned_network=np.array(net))
atomic_write(Path(a.out + ".npz"), lambda f: np.savez(f, **z))
print(f"wrote {net} and {a.out}.npz")
