"""Per-cell coverage of the demo generator's own faces against renderer faces (is diversity the
generator's bottleneck?), in the audit recogniser's and the audit attribute net's feature spaces.

    python scripts/measure_generator_coverage.py [--n 200] [--out coverage.json]
    python scripts/measure_generator_coverage.py --cells "group=group1,gender=female;group=group2,gender=female" --truncations 1,1.3,1.6 --skip-prior

For each group x gender cell: N faces of the generator's prior (z ~ N(0, I), psi 1) that the world's
labeller puts confidently (>= 0.99) in the cell, and N faces sampled from the latent model's cell
Gaussian (demo_out/model.synthface, as identity selection draws them, labels verified the same way),
one image each, against N renderer people of the cell (one image each, nuisance varied), with a
second renderer set of other people for the real data's own figures. JSON to stdout or --out.
"""

import argparse
import json
import time

import numpy as np

from synthface.align import arcface_crop112
from synthface.assets import asset, generator_path
from synthface.evaluation.coverage import attribute_features, cell_coverage
from synthface.generator import load_generator
from synthface.generator.synthesis import prior_latents, synthesize
from synthface.identity import load_embedder
from synthface.labelling import load_labeller
from synthface.latent import DemographicLatentModel, parse_cells
from synthface.latent.cells import label_cells, matches, spec_name
from synthface.nets import load_backbone
from synthface.utils import keyed_rng, name_key
from synthface.world.reference import renderer_coverage_sets


def crops(images):
    return arcface_crop112(images)


def in_cell(model, labeller, images, spec, conf=0.99):
    idx, c = label_cells(labeller.predict_proba(images), model.attributes_, conf)
    return matches(idx, c, spec, model.schema_, model.attributes_)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--model", default="demo_out/model.synthface")
    ap.add_argument("--out", default=None)
    ap.add_argument("--cells", default="all", help="cells to measure (as `generate --cells`)")
    ap.add_argument("--truncations", default="1", help="comma-separated scales of the latent model's cell "
                    "Gaussian about its mean (1: as fitted; above 1 widens it)")
    ap.add_argument("--psis", default="1", help="comma-separated truncation psi of the prior latents the "
                    "latent model lifts its samples with (1: none; above 1 extrapolates away from the mean w)")
    ap.add_argument("--skip-prior", action="store_true", help="measure only the latent model's samples")
    ap.add_argument("--prior-pool", type=int, default=30, help="prior faces drawn, as a multiple of --n (the "
                    "rarest cell needs ~60 for n faces)")
    ap.add_argument("--skip-latent", action="store_true", help="measure only the prior's faces (e.g. for a "
                    "generator the latent model was not fitted to)")
    ap.add_argument("--network", default=None, help="generator (default: the demo world's)")
    a = ap.parse_args()
    t0 = time.time()
    G = load_generator(a.network or generator_path())
    truncations = [float(t) for t in a.truncations.split(",")]
    psis = [float(t) for t in a.psis.split(",")]
    model = DemographicLatentModel.load(a.model)
    lab = load_labeller("world")
    audit = load_embedder("world-audit")
    attr = load_backbone(asset("torch/audit_attributes.safetensors"))
    feats = {"audit recogniser": audit.embed_aligned, "audit attributes": lambda x: attribute_features(attr, x)}
    specs = parse_cells(a.cells, model.schema_, model.attributes_)
    names = [spec_name(s) for s in specs]
    real = renderer_coverage_sets(names, a.n, 1)
    # prior faces, labelled once, split by cell
    if not a.skip_prior:
        pool_w = prior_latents(G, keyed_rng(0, 0xC0F).integers(0, 2**32 - 1, a.prior_pool * a.n).tolist(), 1.0)
        pool = synthesize(G, pool_w, "const")
    out = {"n": a.n, "truncations": truncations, "psis": psis, "cells": {}}
    for spec, name in zip(specs, names):
        sources = []
        if not a.skip_prior:
            sources.append(("prior", crops(pool[in_cell(model, lab, pool, spec)][:a.n])))
        for t, psi in [] if a.skip_latent else [(t, p) for t in truncations for p in psis]:
            # same draws for every setting, so the settings differ only in the spread
            rng = keyed_rng(0, 0xC0E, name_key(name))
            S, _ = model.sample_projection(spec, 6 * a.n, rng, t)
            W = model.lift(S, prior_latents(G, rng.integers(0, 2**32 - 1, len(S)).tolist(), psi)).astype(np.float32)
            imgs = synthesize(G, W, "const")
            ok = in_cell(model, lab, imgs, spec)
            src = "latent model" + (f" x{t:g}" if t != 1 else "") + (f" psi {psi:g}" if psi != 1 else "")
            sources.append((src, crops(imgs[ok][:a.n])))
            out.setdefault("label_pass", {}).setdefault(name, {})[src] = float(ok.mean())
        res = {}
        for src, x in sources:
            if len(x) < a.n:
                res[src] = {"error": f"only {len(x)} confident faces"}
                continue
            spaces = {k: (f(real[name]["real"]), f(real[name]["real2"]), f(x)) for k, f in feats.items()}
            res[src] = cell_coverage(spaces)
        out["cells"][name] = res
        print(name, {src: {k: round(v[k]["coverage_ratio"], 3) for k in feats} for src, v in res.items()
                     if "error" not in v}, flush=True)
    out["seconds"] = time.time() - t0
    text = json.dumps(out, indent=1)
    if a.out:
        open(a.out, "w").write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
