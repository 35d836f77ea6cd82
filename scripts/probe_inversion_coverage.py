#!/usr/bin/env python
"""Can the demo generator make a rare cell's real variety at all? Renderer people of one cell (anchor people,
identities 9,000,000+, a range of their own) are inverted into W (one w per face: Adam on pixel error plus the
world recogniser's identity term through its torch twin, from the closest of 2,000 prior faces), and the cell's
coverage of other renderer people (the coverage reference sets, 8,000,000+) is measured, in the audit
recogniser's and the audit attribute net's spaces, for: the inversions themselves, samples of a Gaussian fitted
to them, convex mixes of two inversions (new people between two real ones), and the latent model's own cell
samples. Faces count only when the world's labeller is >= 0.99 sure of the cell, as in a dataset.

    python scripts/probe_inversion_coverage.py --cell group=group2,gender=female --n 100 --steps 150 \
        --out runs/inversion_g2f.json --sheet runs/inversion_g2f.png

The sheet's rows: anchor faces, their inversions, mixes of inversions, latent-model samples.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from synthface.align import arcface_crop112  # noqa: E402
from synthface.assets import asset, generator_path  # noqa: E402
from synthface.evaluation.coverage import attribute_features, cell_coverage  # noqa: E402
from synthface.generator import load_generator  # noqa: E402
from synthface.generator.synthesis import prior_latents, synthesize  # noqa: E402
from synthface.identity import load_embedder  # noqa: E402
from synthface.identity.torch_embedder import TorchBackboneEmbedder  # noqa: E402
from synthface.labelling import load_labeller  # noqa: E402
from synthface.latent import DemographicLatentModel, parse_cells  # noqa: E402
from synthface.latent.anchors import invert_images  # noqa: E402
from synthface.latent.cells import label_cells, matches  # noqa: E402
from synthface.nets import load_backbone  # noqa: E402
from synthface.world.reference import renderer_coverage_sets  # noqa: E402
from synthface.world.renderer import GENDERS, GROUPS  # noqa: E402
from synthface.world.world import BALANCED, World  # noqa: E402

from synthface.world.reference import ANCHOR_FIRST_IDENTITY as ANCHOR_FIRST  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default="group=group2,gender=female")
    ap.add_argument("--n", type=int, default=100, help="anchor people, reference people and faces per source")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--model", default="demo_out/model.synthface")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--sheet", type=Path)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()

    def log(m):
        print(f"[{time.time() - t0:5.0f}s] {m}", flush=True)

    G = load_generator(generator_path())
    G.requires_grad_(False)
    model = DemographicLatentModel.load(a.model)
    spec = parse_cells(a.cell, model.schema_, model.attributes_)[0]
    labeller = load_labeller("world")
    audit = load_embedder("world-audit")
    attr = load_backbone(asset("torch/audit_attributes.safetensors"))
    feats = {"audit recogniser": audit.embed_aligned, "audit attributes": lambda x: attribute_features(attr, x)}
    parts = dict(p.split("=") for p in a.cell.split(","))
    gi, si = GROUPS.index(parts["group"]), GENDERS.index(parts["gender"])
    world = World(seed=0, distribution=BALANCED)
    first = ANCHOR_FIRST + (2 * gi + si) * 100_000
    anchors = np.asarray(world.render(world.identities(range(first, first + a.n), group=gi, gender=si),
                                      [0] * a.n, size=G.img_resolution))
    W = invert_images(G, anchors, TorchBackboneEmbedder("world-recognizer", device="cpu"), steps=a.steps, lr=a.lr,
                      log=log)

    rng = np.random.default_rng(0)
    m = 4 * a.n
    i, j = rng.integers(0, a.n, m), rng.integers(0, a.n, m)
    t = rng.uniform(0.3, 0.7, (m, 1)).astype(np.float32)
    S, _ = model.sample_projection(spec, 6 * a.n, rng, 1.0)
    sources = {
        "inversions": synthesize(G, W),
        "Gaussian fitted to the inversions": synthesize(
            G, rng.multivariate_normal(W.mean(0), np.cov(W.T) + 1e-3 * np.eye(W.shape[1]), m).astype(np.float32)),
        "mixes of two inversions": synthesize(G, W[i] * t + W[j] * (1 - t)),
        "latent model": synthesize(G, model.lift(S, prior_latents(G, rng.integers(0, 2**32 - 1, len(S)).tolist(),
                                                                  1.0)).astype(np.float32)),
    }
    real = renderer_coverage_sets([a.cell], a.n, 1)[a.cell]
    reals = {k: (f(real["real"]), f(real["real2"])) for k, f in feats.items()}
    out = {"cell": a.cell, "n": a.n, "steps": a.steps, "sources": {}}
    for name, imgs in sources.items():
        idx, conf = label_cells(labeller.predict_proba(imgs), model.attributes_, 0.99)
        ok = matches(idx, conf, spec, model.schema_, model.attributes_)
        r = {"label_pass": float(ok.mean())}
        if ok.sum() >= a.n:
            crops = arcface_crop112(imgs[ok][:a.n])
            cov = cell_coverage({k: (*reals[k], f(crops)) for k, f in feats.items()})
            r.update({k: round(v["coverage_ratio"], 3) for k, v in cov.items()})
        else:
            r["error"] = f"only {int(ok.sum())} of {len(imgs)} faces confidently in the cell"
        out["sources"][name] = r
        log(f"{name}: {r}")
    out["seconds"] = round(time.time() - t0, 1)
    if a.out:
        a.out.write_text(json.dumps(out, indent=1))
    if a.sheet:
        from PIL import Image
        rows = [anchors, sources["inversions"], sources["mixes of two inversions"], sources["latent model"]]
        Image.fromarray(np.concatenate([np.concatenate(list(r[:16]), 1) for r in rows], 0)).save(a.sheet)
    return out


if __name__ == "__main__":
    main()
