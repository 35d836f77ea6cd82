"""Cosine of an identity's two images under the world recogniser, datasets against renderer people.

    .venv/bin/python scripts/diagnose_coverage_gap/pair_similarity.py runs/cap100x2 runs/cap100x2-refine runs/cap100x2-labanchors-refine

A one-off diagnostic behind docs/benchmarks.md (issue 25, fourth session); run from the repository root."""
import sys, numpy as np, torch
torch.set_num_threads(1)
from pathlib import Path
from synthface.world.reference import renderer_coverage_sets
from synthface.identity import load_embedder
from synthface.evaluation.coverage import _dataset_crops
from synthface.dataset.merge import load_records
rec = load_embedder("world")
cells = ["group=group1,gender=female", "group=group3,gender=male"]
rs = renderer_coverage_sets(cells, 100, 2)
for c in cells:
    E = rec.embed_aligned(rs[c]["real"]); g = (E[0::2] * E[1::2]).sum(1)
    print(c, "renderer genuine cos: median %.3f q10 %.3f" % (np.median(g), np.quantile(g, 0.1)))
for run in sys.argv[1:]:
    recs = load_records(Path(run))[1]
    for c in cells:
        syn, sid = _dataset_crops(Path(run), recs, c)
        E = rec.embed_aligned(syn); g = (E[0::2] * E[1::2]).sum(1)
        cons = [im["consistency"] for r in recs if r["cell"] == c for im in r["images"]]
        print(run, c, "pair cos median %.3f q10 %.3f | consistency to reference median %.3f" % (np.median(g), np.quantile(g, 0.1), np.median(cons)))
