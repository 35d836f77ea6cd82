"""Where does a dataset lose coverage: its identities' own faces (w as selected, no variation) against
each identity's first and second written image; 100 faces against 100 renderer people, one image each.

    .venv/bin/python scripts/diagnose_coverage_gap/stage_coverage.py runs/cap100x2-age-refine-id84 "group=group2,gender=female;group=group2,gender=male"

A one-off diagnostic behind docs/benchmarks.md (issue 25, sixth session); run from the repository root."""
import sys, json
import numpy as np
from pathlib import Path
sys.path.insert(0, "scripts")
from measure_generator_coverage import crops
from synthface.assets import asset, generator_path
from synthface.evaluation.coverage import attribute_features, cell_coverage
from synthface.fileio import read_image_rgb
from synthface.generator import load_generator
from synthface.generator.synthesis import synthesize
from synthface.identity import load_embedder
from synthface.nets import load_backbone
from synthface.world.reference import renderer_coverage_sets
out = Path(sys.argv[1]); cells = sys.argv[2].split(";")
G = load_generator(sys.argv[3] if len(sys.argv) > 3 else generator_path())
audit = load_embedder("world-audit"); aattr = load_backbone(asset("torch/audit_attributes.safetensors"))
judge = {"rec": audit.embed_aligned, "attr": lambda x: attribute_features(aattr, x)}
z = np.load(out / "identities.npz"); names = [str(c) for c in z["cells"]]
recs = [json.loads(l) for l in open(out / "manifest.jsonl")]
for cell in cells:
    ci = names.index(cell); W = z["w"][z["cell"] == ci][:100]
    real = renderer_coverage_sets([cell], len(W), 1)[cell]
    jr = {k: (f(real["real"]), f(real["real2"])) for k, f in judge.items()}
    rows = {}
    for r in recs:
        if r.get("cell") == cell:
            rows.setdefault(r["identity"], []).append(r["path"])
    first = np.stack([read_image_rgb(out / v[0]) for k, v in sorted(rows.items())][:len(W)])
    second = np.stack([read_image_rgb(out / v[1]) for k, v in sorted(rows.items())][:len(W)])
    own = crops(synthesize(G, W.astype(np.float32), "const"))
    for nm, x in (("selected w, no variation", own), ("first image", first), ("second image", second)):
        r = {k: round(cell_coverage({k: (jr[k][0], jr[k][1], f(x))})[k]["coverage_ratio"], 3) for k, f in judge.items()}
        print(cell, nm, r, flush=True)
