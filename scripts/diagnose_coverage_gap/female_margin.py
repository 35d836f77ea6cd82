"""The audit classifier's female-minus-male logit margin on a cell: renderer people against datasets.

    .venv/bin/python scripts/diagnose_coverage_gap/female_margin.py "group=group2,gender=female" runs/cap100x2-labanchors-refine-id84 runs/cap100x2-anchors-refine runs/cap100x2

A one-off diagnostic behind docs/benchmarks.md (issue 25, fourth session); run from the repository root."""
import sys, numpy as np, torch
torch.set_num_threads(1)
from pathlib import Path
from synthface.world.reference import renderer_coverage_sets
from synthface.evaluation.coverage import _dataset_crops
from synthface.dataset.merge import load_records
from synthface.labelling import load_labeller
cell = sys.argv[1]
rs = renderer_coverage_sets([cell], 100, 2)[cell]
for spec in ["world-audit"]:
    lab = load_labeller(spec).labellers[0]
    def logits(c):
        x = ((torch.as_tensor(c).permute(0, 3, 1, 2).float() - lab.mean) / lab.std).numpy()
        return lab.session.run([lab.output_name], {lab.input_name: x})[0]
    a, b = lab.attributes["gender"][1]
    for run in [None] + sys.argv[2:]:
        if run is None:
            c = rs["real"]; name = "renderer"
        else:
            c, _ = _dataset_crops(Path(run), load_records(Path(run))[1], cell); name = run
        z = logits(c); m = z[:, a] - z[:, a + 1]   # female minus male logit
        print(f"{name:45s} female margin: median {np.median(m):.2f} q10 {np.quantile(m, .1):.2f} q90 {np.quantile(m, .9):.2f}")
