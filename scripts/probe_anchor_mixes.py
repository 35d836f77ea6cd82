#!/usr/bin/env python
"""How well do new identities drawn between anchors cover a cell's real people? For each anchor file, mixes of
two anchors of the cell (convex, t in [0.3, 0.7], as `generate --anchors` draws them) are generated, kept when the
world's labeller is sure of the cell (the latent model's confidence) and no anchor person matches them (the world
recogniser at the separation threshold), then accepted greedily while distinct from every accepted one, as identity
selection does; the first --n accepted faces (one image each) are scored against --n renderer people of the cell
(the coverage reference range, 8,000,000+) in the audit recogniser's and the audit attribute net's spaces, as a
ratio to the renderer's own figure. Also reported: the share of mixes the labeller puts in the other gender.

    python scripts/probe_anchor_mixes.py --cell group=group2,gender=female --n 100 \
        --anchors runs/anchors-female150.npz:100 runs/anchors-female150-label.npz:100 --out probe.json

FILE:K uses the first K anchors of the cell (the same renderer people in both files). A file of a tuned generator
(`synthface anchors --tune-steps`) is drawn with the generator it names; --sheet writes, per file, rows of anchor
people, their anchors as drawn, and accepted mixes.
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
from synthface.evaluation.coverage import attribute_features, prdc  # noqa: E402
from synthface.generator import load_generator  # noqa: E402
from synthface.generator.synthesis import synthesize  # noqa: E402
from synthface.identity import load_embedder  # noqa: E402
from synthface.labelling import load_labeller  # noqa: E402
from synthface.latent import DemographicLatentModel, parse_cells  # noqa: E402
from synthface.latent.anchors import MIX_HIGH, MIX_LOW  # noqa: E402
from synthface.latent.cells import label_cells, matches  # noqa: E402
from synthface.nets import load_backbone  # noqa: E402
from synthface.world.reference import renderer_anchor_faces, renderer_coverage_sets  # noqa: E402

SEPARATION = 0.774  # the world recogniser's FMR 1e-4 threshold on renderer faces (the datasets' separation)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default="group=group2,gender=female")
    ap.add_argument("--n", type=int, default=100, help="identities scored and renderer people they are scored on")
    ap.add_argument("--anchors", nargs="+", required=True, help="anchor files, FILE or FILE:K")
    ap.add_argument("--model", default="demo_out/model.synthface")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--sheet", type=Path, help="contact sheet (.png/.jpg): 12 anchor people, anchors, mixes per file")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    G = load_generator(generator_path())
    model = DemographicLatentModel.load(a.model)
    spec = parse_cells(a.cell, model.schema_, model.attributes_)[0]
    lab, rec, audit = load_labeller("world"), load_embedder("world"), load_embedder("world-audit")
    attr = load_backbone(asset("torch/audit_attributes.safetensors"))
    feats = {"audit recogniser": audit.embed_aligned, "audit attributes": lambda x: attribute_features(attr, x)}
    real = renderer_coverage_sets([a.cell], a.n, 1)[a.cell]
    R = {k: (f(real["real"]), f(real["real2"])) for k, f in feats.items()}
    self_cov = {k: prdc(*R[k])["coverage"] for k in R}
    gender = dict(p.split("=") for p in a.cell.split(","))["gender"]
    out = {"cell": a.cell, "n": a.n, "separation": SEPARATION, "files": {}}
    sheet_rows = []
    for spec_file in a.anchors:
        path, _, limit = spec_file.partition(":")
        A = np.load(path)
        tuned = str(A["tuned_network"]) if "tuned_network" in A.files else ""
        G = load_generator(tuned) if tuned else load_generator(generator_path())
        W = A["w"][A["cell"] == a.cell]
        W = W[:int(limit)] if limit else W
        faces, _ = renderer_anchor_faces([a.cell], len(W), G.img_resolution)
        E_anchor = rec.embed(faces)
        rng = np.random.default_rng(1)
        m = 8 * a.n
        i = rng.integers(0, len(W), m)
        j = (i + rng.integers(1, len(W), m)) % len(W)
        t = rng.uniform(MIX_LOW, MIX_HIGH, (m, 1)).astype(np.float32)
        imgs = synthesize(G, (W[i] * t + W[j] * (1 - t)).astype(np.float32))
        probs = lab.predict_proba(imgs)
        idx, conf = label_cells(probs, model.attributes_, model.confidence)
        ok = matches(idx, conf, spec, model.schema_, model.attributes_)
        E = rec.embed(imgs)
        leak = (E @ E_anchor.T).max(1) >= SEPARATION
        accepted = []
        for r in np.nonzero(ok & ~leak)[0]:
            if not accepted or (E[accepted] @ E[r]).max() < SEPARATION:
                accepted.append(r)
            if len(accepted) == a.n:
                break
        classes = model.schema_["gender"]
        res = {"anchors": int(len(W)), "mixes": m, "label_pass": round(float(ok.mean()), 3),
               "other_gender": round(float((probs["gender"].argmax(1) != classes.index(gender)).mean()), 3),
               "leak_of_passed": round(float((ok & leak).sum() / max(ok.sum(), 1)), 3), "accepted": len(accepted)}
        if len(accepted) == a.n:
            crops = arcface_crop112(imgs[accepted])
            res.update({k: round(prdc(R[k][0], f(crops))["coverage"] / self_cov[k], 3) for k, f in feats.items()})
        out["files"][spec_file] = res
        if a.sheet:
            sheet_rows += [faces[:12], synthesize(G, W[:12]), imgs[accepted[:12]]]
        print(f"[{time.time() - t0:4.0f}s] {spec_file}: {res}", flush=True)
    if a.sheet and sheet_rows:
        from PIL import Image
        grid = np.concatenate([np.concatenate(list(r) + [np.zeros_like(r[0])] * (12 - len(r)), 1) for r in sheet_rows])
        Image.fromarray(grid).save(a.sheet, quality=90)
    out["seconds"] = round(time.time() - t0, 1)
    if a.out:
        a.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
