"""Median genuine cosine of renderer people of the thresholds' range (800000+, two images each) under the world recogniser: the identity target 0.84.

    .venv/bin/python scripts/diagnose_coverage_gap/genuine_similarity_reference.py 

A one-off diagnostic behind docs/benchmarks.md (issue 25, fourth session); run from the repository root."""
import numpy as np, torch
torch.set_num_threads(1)
from synthface.world.world import World, BALANCED, take
from synthface.align import arcface_crop112
from synthface.identity import load_embedder
rec = load_embedder("world")
w = World(seed=0, distribution=BALANCED)
ident = w.identities(range(800000, 800600))
rows = np.repeat(np.arange(600), 2); shots = np.tile(np.arange(2), 600)
crops = np.concatenate([arcface_crop112(w.render(take(ident, rows[s:s+200]), shots[s:s+200], size=64)) for s in range(0, 1200, 200)])
E = rec.embed_aligned(crops); g = (E[0::2] * E[1::2]).sum(1)
print("median %.3f mean %.3f q25 %.3f q75 %.3f" % (np.median(g), g.mean(), np.quantile(g, .25), np.quantile(g, .75)))
