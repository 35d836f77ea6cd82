"""A dataset's coverage with two images per identity against one (first image against one image per real person).

    .venv/bin/python scripts/diagnose_coverage_gap/first_image_coverage.py runs/cap100x2-anchors-refine "group=group1,gender=female;group=group2,gender=female;group=group1,gender=male"

A one-off diagnostic behind docs/benchmarks.md (issue 25, fourth session); run from the repository root."""
import json, sys, numpy as np, torch
torch.set_num_threads(1)
from pathlib import Path
from synthface.world.reference import coverage_inputs
from synthface.evaluation.coverage import prdc, _dataset_crops
out = Path(sys.argv[1]); cells = sys.argv[2].split(";")
from synthface.dataset.merge import load_records
recs = load_records(out)[1]
ci = coverage_inputs(cells, 100, 2)
for cell in cells:
    rs = ci["real_sets"][cell]
    syn, sid = _dataset_crops(out, recs, cell)
    first = np.r_[True, sid[1:] != sid[:-1]]
    for name, f in ci["features"].items():
        R, R2, S = f(rs["real"]), f(rs["real2"]), f(syn)
        r_first = np.arange(len(R)) % 2 == 0
        full = prdc(R, S)["coverage"] / prdc(R, R2)["coverage"]
        one = prdc(R[r_first], S[first])["coverage"] / prdc(R[r_first], R2[r_first])["coverage"]
        # first images twice-as-many? compare synthetic first images against real two-image set
        print(cell, name, f"full {full:.2f}  one-image {one:.2f}", flush=True)
