"""How sure the world labeller is of renderer people of each cell (identities 800000-801199).

    .venv/bin/python scripts/diagnose_coverage_gap/labeller_confidence.py 

A one-off diagnostic behind docs/benchmarks.md (issue 25, fourth session); run from the repository root."""
import numpy as np, torch
torch.set_num_threads(1)
from synthface.world.world import World, BALANCED
from synthface.labelling import load_labeller
lab = load_labeller("world")
w = World(seed=0, distribution=BALANCED)
ident = w.identities(range(800000, 801200))
imgs = np.asarray(w.render(ident, [0] * 1200, size=64))
p = lab.predict_proba(imgs)
conf = np.minimum(p["group"][np.arange(1200), ident["group"]], p["gender"][np.arange(1200), ident["gender"]])
for g in range(3):
    for s in range(2):
        m = (ident["group"] == g) & (ident["gender"] == s)
        c = conf[m]
        print(g, s, m.sum(), "q05 %.5f q10 %.5f q25 %.5f median %.6f  share>=.99 %.2f >=.999 %.2f" % (np.quantile(c, .05), np.quantile(c, .1), np.quantile(c, .25), np.median(c), (c >= .99).mean(), (c >= .999).mean()))
