"""Coverage after tilting a dataset's images to more in-plane roll.

    .venv/bin/python scripts/diagnose_coverage_gap/roll_tilt.py runs/cap100x2-anchors-refine "group=group1,gender=female;group=group2,gender=female"

A one-off diagnostic behind docs/benchmarks.md (issue 25, fourth session); run from the repository root."""
import sys, numpy as np, torch
torch.set_num_threads(1)
from pathlib import Path
from synthface.world.reference import coverage_inputs
from synthface.evaluation.coverage import prdc, _dataset_crops
from synthface.dataset.merge import load_records
import torch.nn.functional as F
out = Path(sys.argv[1]); cells = sys.argv[2].split(";")
recs = load_records(out)[1]
ci = coverage_inputs(cells, 100, 2)
nu = ci["nuisance"]
def rotate(crops, ang):
    x = torch.as_tensor(crops).permute(0, 3, 1, 2).float()
    c, s = torch.cos(torch.as_tensor(ang)).float(), torch.sin(torch.as_tensor(ang)).float()
    theta = torch.stack([torch.stack([c, -s, torch.zeros_like(c)], 1), torch.stack([s, c, torch.zeros_like(c)], 1)], 1)
    g = F.affine_grid(theta, x.shape, align_corners=False)
    y = F.grid_sample(x, g, padding_mode="border", align_corners=False)
    return y.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
for cell in cells:
    rs = ci["real_sets"][cell]
    syn, sid = _dataset_crops(out, recs, cell)
    for ang_sd in (0.0, 0.05, 0.1):
        rng = np.random.default_rng(0)
        s2 = rotate(syn, rng.normal(0, ang_sd, len(syn))) if ang_sd else syn
        r = nu.predict_matrix(s2, aligned=True)[:, nu.names.index("roll")].std()
        res = []
        for name, f in ci["features"].items():
            res.append(prdc(f(rs["real"]), f(s2))["coverage"] / prdc(f(rs["real"]), f(rs["real2"]))["coverage"])
        print(cell, ang_sd, f"roll sd {r:.3f}", np.round(res, 3), flush=True)
