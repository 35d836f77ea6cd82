"""Mean distance between an identity's two images, and between identities, in the audit spaces: a dataset against renderer people.

    .venv/bin/python scripts/diagnose_coverage_gap/within_identity_distance.py runs/cap100x2-labanchors-refine "group=group1,gender=female;group=group2,gender=female"

A one-off diagnostic behind docs/benchmarks.md (issue 25, fourth session); run from the repository root."""
import sys, numpy as np, torch
torch.set_num_threads(1)
from pathlib import Path
from synthface.world.reference import coverage_inputs
from synthface.evaluation.coverage import _normalise, _dataset_crops
from synthface.dataset.merge import load_records
out = Path(sys.argv[1]); cells = sys.argv[2].split(";")
recs = load_records(out)[1]
ci = coverage_inputs(cells, 100, 2)
for cell in cells:
    rs = ci["real_sets"][cell]
    syn, sid = _dataset_crops(out, recs, cell)
    for name, f in ci["features"].items():
        R = _normalise(f(rs["real"])); S = _normalise(f(syn))
        dr = np.linalg.norm(R[0::2] - R[1::2], axis=1).mean()
        ds = np.linalg.norm(S[0::2] - S[1::2], axis=1).mean()
        br = np.linalg.norm(R[0::2][:, None] - R[0::2][None], axis=2).mean()
        bs = np.linalg.norm(S[0::2][:, None] - S[0::2][None], axis=2).mean()
        print(cell, name, f"within real {dr:.3f} syn {ds:.3f} | between real {br:.3f} syn {bs:.3f}")
