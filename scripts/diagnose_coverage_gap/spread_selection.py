"""Does choosing a cell's faces for spread (k-center greedy in generation-side feature spaces: the world
recogniser's embeddings, the world attribute net's features, both) raise coverage of real faces in the audit
spaces, against the first-drawn and random subsets? 100 of 500 label-checked latent-model faces, one image each.

    .venv/bin/python scripts/diagnose_coverage_gap/spread_selection.py "group=group2,gender=female;group=group1,gender=female" 500

A one-off diagnostic behind docs/benchmarks.md (issue 25, sixth session); run from the repository root."""
import sys, time, json
import numpy as np
sys.path.insert(0, "scripts")
from measure_generator_coverage import crops, in_cell
from synthface.assets import asset, generator_path
from synthface.evaluation.coverage import attribute_features, cell_coverage
from synthface.generator import load_generator
from synthface.generator.synthesis import prior_latents, synthesize
from synthface.identity import load_embedder
from synthface.labelling import load_labeller
from synthface.latent import DemographicLatentModel, parse_cells
from synthface.latent.cells import spec_name
from synthface.nets import load_backbone
from synthface.utils import keyed_rng, name_key
from synthface.world.reference import renderer_coverage_sets

def kcenter(X, n, start=0):
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    chosen = [start]; d = ((X - X[start]) ** 2).sum(1)
    for _ in range(n - 1):
        j = int(np.argmax(d)); chosen.append(j); d = np.minimum(d, ((X - X[j]) ** 2).sum(1))
    return np.array(chosen)

t0 = time.time()
cells = sys.argv[1] if len(sys.argv) > 1 else "group=group2,gender=female"
N, POOL = 100, int(sys.argv[2]) if len(sys.argv) > 2 else 500
G = load_generator(generator_path())
model = DemographicLatentModel.load("demo_out/model.synthface")
lab = load_labeller("world")
audit = load_embedder("world-audit"); world_rec = load_embedder("world")
aattr = load_backbone(asset("torch/audit_attributes.safetensors"))
wattr = load_backbone(asset("torch/attributes.safetensors"))
judge = {"audit recogniser": audit.embed_aligned, "audit attributes": lambda x: attribute_features(aattr, x)}
specs = parse_cells(cells, model.schema_, model.attributes_)
res = {}
for spec in specs:
    name = spec_name(spec)
    real = renderer_coverage_sets([name], N, 1)[name]
    rng = keyed_rng(0, 0xC0E, name_key(name))
    S, _ = model.sample_projection(spec, 8 * POOL, rng, 1.0)
    W = model.lift(S, prior_latents(G, rng.integers(0, 2**32 - 1, len(S)).tolist(), 1.0)).astype(np.float32)
    imgs = []
    for s in range(0, len(W), 256):
        im = synthesize(G, W[s:s+256], "const"); ok = in_cell(model, lab, im, spec); imgs.append(im[ok])
        if sum(len(i) for i in imgs) >= POOL: break
    raw = np.concatenate(imgs)[:POOL]; x = crops(raw); print(name, "pool", len(x), flush=True)
    fr = world_rec.embed_aligned(x)
    import torch
    with torch.no_grad():
        pre = torch.from_numpy(lab.labellers[0].preprocess(raw))
        fa = wattr.trunk(wattr.features(pre)).numpy()
    jr = {k: (f(real["real"]), f(real["real2"])) for k, f in judge.items()}
    jx = {k: f(x) for k, f in judge.items()}
    def cov(idx):
        return {k: round(cell_coverage({k: (jr[k][0], jr[k][1], jx[k][idx])})[k]["coverage_ratio"], 3) for k in judge}
    norm = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)
    subsets = {"first": np.arange(N)}
    for s in range(3):
        subsets[f"random{s}"] = np.random.default_rng(s).choice(len(x), N, replace=False)
    subsets["kcenter world-attr"] = kcenter(fa, N)
    subsets["kcenter world-rec"] = kcenter(fr, N)
    subsets["kcenter both"] = kcenter(np.hstack([norm(fr), norm(fa)]), N)
    res[name] = {k: cov(v) for k, v in subsets.items()}
    for k, v in res[name].items(): print(" ", k, v, flush=True)
print(json.dumps(res)); print("seconds", time.time() - t0)
