"""Which mixes of two anchors pass the label check: by the anchor people's lipstick and age, and each head's verdicts.

    .venv/bin/python scripts/diagnose_coverage_gap/anchor_mix_labels.py "group=group2,gender=female;group=group1,gender=female"

A one-off diagnostic behind docs/benchmarks.md (issue 25, fourth session); run from the repository root."""
import numpy as np, torch, sys
torch.set_num_threads(1)
from synthface.world.world import World, BALANCED
from synthface.world.renderer import GROUPS, GENDERS
from synthface.world.reference import ANCHOR_FIRST_IDENTITY
from synthface.labelling import load_labeller
from synthface.generator import load_generator
from synthface.assets import generator_path
from synthface.generator.synthesis import synthesize
from synthface.latent import DemographicLatentModel, parse_cells
from synthface.latent.cells import label_cells, matches
G = load_generator(generator_path()); G.requires_grad_(False)
model = DemographicLatentModel.load("demo_out/model.synthface")
lab = load_labeller("world"); w = World(seed=0, distribution=BALANCED)
A = np.load("runs/anchors-female150.npz")
for cell in sys.argv[1].split(";"):
    parts = dict(p.split("=") for p in cell.split(","))
    gi, si = GROUPS.index(parts["group"]), GENDERS.index(parts["gender"])
    W = A["w"][A["cell"] == cell]; n = len(W)
    ids = w.identities(range(ANCHOR_FIRST_IDENTITY + (2*gi+si)*100000, ANCHOR_FIRST_IDENTITY + (2*gi+si)*100000 + n), group=gi, gender=si)
    spec = parse_cells(cell, model.schema_, model.attributes_)[0]
    rng = np.random.default_rng(0); m = 1500
    i = rng.integers(0, n, m); j = (i + rng.integers(1, n, m)) % n
    t = rng.uniform(0.3, 0.7, (m, 1)).astype(np.float32)
    imgs = synthesize(G, (W[i]*t + W[j]*(1-t)).astype(np.float32))
    idx, conf = label_cells(lab.predict_proba(imgs), model.attributes_, model.confidence)
    ok = matches(idx, conf, spec, model.schema_, model.attributes_)
    p = lab.predict_proba(imgs)
    age = np.asarray(ids["age"]); lip = np.asarray(ids["lipstick"]).astype(float)
    # per-pair attributes: mean age of the pair, lipstick count
    pa = (age[i] + age[j]) / 2; pl = lip[i] + lip[j]
    print(cell, f"pass {ok.mean():.2f}", " | ".join(f"lip{k}: {ok[pl==k].mean():.2f}" for k in range(3)),
          " | age<30", f"{ok[pa<30].mean():.2f}", "age>40", f"{ok[pa>40].mean():.2f}")
    # why fail: which head
    for a in model.attributes_:
        print("   ", a, "mean max prob", np.round(p[a].max(1).mean(), 3), "argmax distribution", np.bincount(p[a].argmax(1), minlength=p[a].shape[1]) / m)
