"""Which renderer people of a cell a dataset leaves uncovered: their world attributes and nuisances, covered against uncovered.

    .venv/bin/python scripts/diagnose_coverage_gap/uncovered_people.py runs/cap100x2-anchors-refine "group=group2,gender=female"

A one-off diagnostic behind docs/benchmarks.md (issue 25, fourth session); run from the repository root."""
import json, sys, numpy as np, torch
torch.set_num_threads(1)
from pathlib import Path
from synthface.world.reference import coverage_inputs
from synthface.evaluation.coverage import _normalise, _sq_dist, knn_radii, _dataset_crops
from synthface.dataset.merge import load_records
from synthface.world.world import World, BALANCED
out = Path(sys.argv[1]); cell = sys.argv[2]
recs = load_records(out)[1]
ci = coverage_inputs([cell], 100, 2)
rs = ci["real_sets"][cell]
syn, sid = _dataset_crops(out, recs, cell)
nu = ci["nuisance"]
Y = nu.predict_matrix(rs["real"], aligned=True); Ys = nu.predict_matrix(syn, aligned=True)
w = World(seed=0, distribution=BALANCED)
parts = dict(p.split("=") for p in cell.split(","))
from synthface.world.renderer import GROUPS, GENDERS
ids = w.identities(rs["real_identity"].tolist(), group=GROUPS.index(parts["group"]), gender=GENDERS.index(parts["gender"]))
for name, f in ci["features"].items():
    R = _normalise(f(rs["real"])); S = _normalise(f(syn))
    r = knn_radii(R, 5); cov = (_sq_dist(R, S) <= r[:, None]).any(1)
    print(name, "coverage", cov.mean())
    for k in ["age", "tone", "curl", "hair_len", "volume", "fringe", "lipstick", "bald", "hairline", "part"]:
        v = np.asarray(ids[k], float)
        print(f"  {k:10s} covered {v[cov].mean():.3f} uncovered {v[~cov].mean():.3f}  (sd {v.std():.3f})")
    for j, n in enumerate(nu.names):
        print(f"  nu {n:10s} covered {Y[cov, j].mean():.3f} uncovered {Y[~cov, j].mean():.3f} (sd {Y[:, j].std():.3f}) syn mean {Ys[:, j].mean():.3f} sd {Ys[:, j].std():.3f}")
