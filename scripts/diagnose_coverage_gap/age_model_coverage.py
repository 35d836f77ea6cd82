"""Coverage of a cell's latent-model faces: the demo model against a model that also knows age (each group x
gender cell balanced over its age classes). 100 faces (random from a label-checked pool of 400), 3 draws each.

    .venv/bin/python scripts/diagnose_coverage_gap/age_model_coverage.py "group=group2,gender=female;group=group1,gender=female;group=group3,gender=female;group=group2,gender=male" runs/model-world-age.synthface

A one-off diagnostic behind docs/benchmarks.md (issue 25, sixth session); run from the repository root."""
import sys, time
import numpy as np
sys.path.insert(0, "scripts")
from measure_generator_coverage import crops
from synthface.labelling import load_labeller
from synthface.assets import asset, generator_path
from synthface.evaluation.coverage import attribute_features, cell_coverage
from synthface.generator import load_generator
from synthface.generator.synthesis import prior_latents, synthesize
from synthface.identity import load_embedder
from synthface.latent import DemographicLatentModel, parse_cells
from synthface.latent.cells import label_cells, matches, spec_name
from synthface.nets import load_backbone
from synthface.utils import keyed_rng, name_key
from synthface.world.reference import renderer_coverage_sets

t0 = time.time(); N = 100; POOL = 400
G = load_generator(generator_path())
lab = load_labeller("world-age")
audit = load_embedder("world-audit"); aattr = load_backbone(asset("torch/audit_attributes.safetensors"))
judge = {"audit recogniser": audit.embed_aligned, "audit attributes": lambda x: attribute_features(aattr, x)}
models = {"demo model": DemographicLatentModel.load("demo_out/model.synthface"),
          "age model": DemographicLatentModel.load(sys.argv[2])}
for cell in sys.argv[1].split(";"):
    real = renderer_coverage_sets([cell], N, 1)[cell]
    jr = {k: (f(real["real"]), f(real["real2"])) for k, f in judge.items()}
    for mname, model in models.items():
        spec = dict(p.split("=") for p in cell.split(","))
        rng = keyed_rng(0, 0xC0E, name_key(cell))
        S, which = model.sample_projection(spec, 8 * POOL, rng, 1.0)
        W = model.lift(S, prior_latents(G, rng.integers(0, 2**32 - 1, len(S)).tolist(), 1.0)).astype(np.float32)
        imgs, ages = [], []
        for s in range(0, len(W), 256):
            im = synthesize(G, W[s:s+256], "const"); p = lab.predict_proba(im)
            idx, conf = label_cells(p, model.attributes_, 0.9)
            ok = matches(idx, conf, spec, model.schema_, model.attributes_)
            imgs.append(im[ok]); ages.append(p["age"][ok].argmax(1))
            if sum(len(i) for i in imgs) >= POOL: break
        x = crops(np.concatenate(imgs)[:POOL]); ages = np.concatenate(ages)[:POOL]
        jx = {k: f(x) for k, f in judge.items()}
        res = []
        for s in range(3):
            i = np.random.default_rng(s).choice(len(x), N, replace=False)
            res.append({k: round(cell_coverage({k: (jr[k][0], jr[k][1], jx[k][i])})[k]["coverage_ratio"], 3) for k in judge})
        print(cell, mname, "pool", len(x), "age classes", np.bincount(ages, minlength=3), res, flush=True)
print("seconds", time.time() - t0)
