"""Gender privacy and matching utility of perturbed faces (SAN's evaluation protocol, spec §3.6):

* for each gender classifier (meant to be one the perturbation never saw): its error on the original faces
  and on the perturbed ones, overall and per demographic cell, and the AUC of its P(male) (an AUC far below
  0.5 means the classifier is flipped, not merely confused);
* for each face matcher: the true match rate at FMR 1e-3 and 1e-2 of probes against a gallery of ORIGINAL
  faces, with original probes (the baseline) and with perturbed ones. Each identity's first image is its
  gallery face; its other images are probes; impostor scores are every probe against every other identity's
  gallery face, and the threshold is set on the impostor scores of the same condition. Per cell: the probes of
  that cell at the overall threshold.

Classifier specs: any labeller (world, world-audit, onnx:PATH, genderage:PACK, a `synthface train attribute`
run directory, ...), a demo-world torch net (world-attributes, world-audit-attributes, world-genderage), or
`sklearn:RECOGNISER`: a fresh logistic regression on that recogniser's embeddings of the original faces,
trained and scored in two identity-disjoint folds. The two datasets pair up by relative image path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ..align import arcface_matrix, warp_affine
from ..errors import SynthfaceError
from ..fairness import metrics as M
from ..evaluation.pairs import load_items

FMRS = (1e-3, 1e-2)


def face_table(dataset) -> dict:
    """{"root", "paths", "identity", "cell", "gender" (0 female / 1 male)} of a dataset with a manifest."""
    items = load_items(dataset)
    rows = {}
    man = Path(dataset) / "manifest.jsonl"
    for line in man.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows[r["path"]] = r
    genders = [gender_of(rows.get(p, {}), c) for p, c in zip(items.paths, items.group)]
    if any(g is None for g in genders):
        raise SynthfaceError(f"{dataset}: some images carry no gender (no gender column and no female/male in "
                             "their cell); SAN's evaluation needs each face's gender")
    return {"root": items.root, "paths": list(items.paths), "identity": np.asarray(items.identity),
            "cell": list(items.group), "gender": np.array(genders, np.int64)}


def gender_of(row: dict, cell: str) -> Optional[int]:
    g = str(row.get("gender", "")).lower()
    if g not in ("female", "male"):
        parts = [p.split("=")[-1].lower() for p in str(cell).replace(",", "/").split("/")]
        g = next((p for p in parts if p in ("female", "male")), "")
    return {"female": 0, "male": 1}.get(g)


def read_images(root: Path, paths: Sequence[str], size: Optional[int] = None) -> np.ndarray:
    out = []
    for p in paths:
        with Image.open(Path(root) / p) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            out.append(np.asarray(im))
    return np.stack(out)


def ffhq_canvas(crops: np.ndarray, side: Optional[int] = None) -> np.ndarray:
    """ArcFace crops back in their place in an FFHQ-aligned frame (black outside the crop), for labellers
    that cut their own crop from full aligned faces. The ArcFace crop covers ~80 % of the frame's side,
    insightface's attribute crop ~72 %, so the labellers see little of the black border."""
    s = crops.shape[1]
    side = side or int(round(s * 1.25))
    inv = np.linalg.inv(np.vstack([arcface_matrix(side, s), [0, 0, 1]]))[:2]
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
    y = warp_affine(x, inv, side)
    return y.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


class _Judge:
    """P(male) of uint8 faces in a given layout, from a labeller or a demo-world torch net."""

    def __init__(self, spec: str, layout: str, device: str = "cpu"):
        from ..evaluation.attribute import model_spec
        from .san_aux import WORLD_CLASSIFIERS, load_gender_classifier
        self.spec, self.layout = spec, layout
        if spec in WORLD_CLASSIFIERS:
            self.torch = load_gender_classifier(spec, layout)
            return
        from ..labelling.registry import load_one
        self.torch = None
        self.lab = load_one(model_spec(spec), device=device)
        classes = [str(c).lower() for c in self.lab.schema.get("gender", [])]
        if sorted(classes) != ["female", "male"]:
            raise SynthfaceError(f"gender classifier {spec!r} predicts {dict(self.lab.schema)}; it needs a gender "
                                 "attribute with the classes female and male")
        self.male = classes.index("male")

    def p_male(self, images: np.ndarray, batch: int = 128) -> np.ndarray:
        out = []
        for s in range(0, len(images), batch):
            x = images[s:s + batch]
            if self.torch is not None:
                with torch.no_grad():
                    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255
                    out.append(torch.softmax(self.torch(t), 1)[:, 1].numpy())
                continue
            if self.layout == "arcface" and getattr(self.lab, "crop", "ffhq") != "none":
                x = ffhq_canvas(x)
            out.append(np.asarray(self.lab.predict_proba(x)["gender"])[:, self.male])
        return np.concatenate(out)


def _embed(spec: str, images: np.ndarray, device: str = "cpu") -> np.ndarray:
    from ..identity import load_embedder
    emb = load_embedder(spec, device)
    x = images
    if x.shape[1] != 112:
        x = np.stack([np.asarray(Image.fromarray(im).resize((112, 112), Image.BILINEAR)) for im in x])
    return np.concatenate([emb.embed_aligned(x[s:s + 256]) for s in range(0, len(x), 256)])


def sklearn_p_male(E_orig: np.ndarray, E_pert: np.ndarray, codes: np.ndarray, identity: np.ndarray,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """P(male) of originals and perturbed faces from logistic regressions trained on the originals of the
    other half of the identities (two identity-disjoint folds)."""
    from sklearn.linear_model import LogisticRegression
    ids = np.unique(identity)
    half = set(np.random.default_rng(seed).permutation(ids)[: len(ids) // 2].tolist())
    fold = np.array([i in half for i in identity])
    po, pp = np.zeros(len(codes)), np.zeros(len(codes))
    for test in (fold, ~fold):
        if len(np.unique(codes[~test])) < 2:
            raise SynthfaceError("a fold of identities holds one gender only; use a larger, balanced dataset")
        clf = LogisticRegression(C=1.0, max_iter=2000).fit(E_orig[~test], codes[~test])
        po[test] = clf.predict_proba(E_orig[test])[:, 1]
        pp[test] = clf.predict_proba(E_pert[test])[:, 1]
    return po, pp


def gender_metrics(p_orig: np.ndarray, p_pert: np.ndarray, codes: np.ndarray, cells: Sequence[str]) -> dict:
    from sklearn.metrics import roc_auc_score
    cells = np.asarray(cells)

    def block(m):
        e_o = float(((p_orig[m] >= 0.5) != codes[m]).mean())
        e_p = float(((p_pert[m] >= 0.5) != codes[m]).mean())
        two = len(np.unique(codes[m])) == 2
        return {"n": int(m.sum()), "error_original": e_o, "error_perturbed": e_p, "error_increase": e_p - e_o,
                "auc_original": float(roc_auc_score(codes[m], p_orig[m])) if two else None,
                "auc_perturbed": float(roc_auc_score(codes[m], p_pert[m])) if two else None}
    res = block(np.ones(len(codes), bool))
    res["cells"] = {c: block(cells == c) for c in sorted(set(cells.tolist()))}
    return res


def matcher_metrics(E_orig: np.ndarray, E_pert: np.ndarray, identity: np.ndarray, cells: Sequence[str],
                    fmrs: Sequence[float] = FMRS) -> dict:
    cells = np.asarray(cells)
    ids, first = np.unique(identity, return_index=True)
    probe = np.setdiff1d(np.arange(len(identity)), first)
    if len(probe) == 0 or len(ids) < 2:
        raise SynthfaceError("matching needs at least two identities and two images of some identity")
    G = E_orig[first]
    col = np.searchsorted(ids, identity[probe])
    res = {"identities": int(len(ids)), "probes": int(len(probe)), "impostor_pairs": int(len(probe) * (len(ids) - 1))}
    for name, E in (("original", E_orig), ("perturbed", E_pert)):
        S = E[probe] @ G.T
        gen = S[np.arange(len(probe)), col]
        mask = np.ones_like(S, bool)
        mask[np.arange(len(probe)), col] = False
        imp = S[mask]
        block = {"genuine_mean": float(gen.mean()), "impostor_mean": float(imp.mean()), "cells": {}}
        for t in fmrs:
            thr = M.threshold_at_fmr(imp, t)
            block[f"tmr@{t:g}"] = float((gen > thr).mean()) if len(imp) * t >= 1 else None
            for c in sorted(set(cells.tolist())):
                m = cells[probe] == c
                block["cells"].setdefault(c, {})[f"tmr@{t:g}"] = float((gen[m] > thr).mean()) if m.any() else None
        res[name] = block
    res["self_similarity_mean"] = float((E_orig * E_pert).sum(1).mean())  # each perturbed face vs its original
    return res


def evaluate_privacy(original, perturbed, classifiers: Sequence[str], recognizers: Sequence[str],
                     layout: str = "arcface", device: str = "cpu", seed: int = 0,
                     log: Callable[[str], None] = lambda s: None) -> dict:
    """The results dict behind `synthface privacy` (see the module docstring)."""
    a, b = face_table(original), face_table(perturbed)
    common = sorted(set(a["paths"]) & set(b["paths"]))
    if not common:
        raise SynthfaceError(f"{original} and {perturbed} share no image path; give the dataset and its "
                             "`synthface perturb` output")
    ia = {p: i for i, p in enumerate(a["paths"])}
    sel = np.array([ia[p] for p in common])
    ident, codes, cells = a["identity"][sel], a["gender"][sel], [a["cell"][i] for i in sel]
    log(f"{len(common)} faces of {len(np.unique(ident))} identities in both datasets")
    X_o, X_p = read_images(a["root"], common), read_images(b["root"], common, None)
    if X_o.shape != X_p.shape:
        X_p = read_images(b["root"], common, X_o.shape[1])
    res = {"original": str(original), "perturbed": str(perturbed), "faces": len(common), "classifiers": {},
           "matchers": {}}
    emb_cache: dict = {}

    def embs(spec):
        if spec not in emb_cache:
            emb_cache[spec] = (_embed(spec, X_o, device), _embed(spec, X_p, device))
        return emb_cache[spec]
    for spec in classifiers:
        log(f"gender classifier {spec}")
        if spec.startswith("sklearn:"):
            E_o, E_p = embs(spec.partition(":")[2])
            p_o, p_p = sklearn_p_male(E_o, E_p, codes, ident, seed)
        else:
            judge = _Judge(spec, layout, device)
            p_o, p_p = judge.p_male(X_o), judge.p_male(X_p)
        res["classifiers"][spec] = gender_metrics(p_o, p_p, codes, cells)
    for spec in recognizers:
        log(f"matcher {spec}")
        E_o, E_p = embs(spec)
        res["matchers"][spec] = matcher_metrics(E_o, E_p, ident, cells)
    return res


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def privacy_markdown(res: dict, title: str = "Gender privacy and matching utility") -> str:
    md = [f"# {title}\n", f"Original faces `{res['original']}`, perturbed `{res['perturbed']}`: {res['faces']} faces.\n",
          "## Gender classifiers (error %, AUC of P(male))\n",
          "| classifier | cell | error original | error perturbed | increase (points) | AUC original | AUC perturbed |",
          "|---|---|---|---|---|---|---|"]
    for spec, r in res["classifiers"].items():
        for cell, b in [("all", r)] + list(r["cells"].items()):
            auc = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            md.append(f"| {spec} | {cell} | {_pct(b['error_original'])} | {_pct(b['error_perturbed'])} | "
                      f"{100 * b['error_increase']:+.1f} | {auc(b['auc_original'])} | {auc(b['auc_perturbed'])} |")
    md += ["", "## Matchers (TMR %, probes against a gallery of original faces)\n",
           "| matcher | cell | TMR@1e-3 original | TMR@1e-3 perturbed | TMR@1e-2 original | TMR@1e-2 perturbed |",
           "|---|---|---|---|---|---|"]
    for spec, r in res["matchers"].items():
        o, p = r["original"], r["perturbed"]
        md.append(f"| {spec} | all | {_pct(o['tmr@0.001'])} | {_pct(p['tmr@0.001'])} | {_pct(o['tmr@0.01'])} | "
                  f"{_pct(p['tmr@0.01'])} |")
        for cell in o["cells"]:
            oc, pc = o["cells"][cell], p["cells"][cell]
            md.append(f"| {spec} | {cell} | {_pct(oc['tmr@0.001'])} | {_pct(pc['tmr@0.001'])} | "
                      f"{_pct(oc['tmr@0.01'])} | {_pct(pc['tmr@0.01'])} |")
    md.append("")
    for spec, r in res["matchers"].items():
        md.append(f"{spec}: {r['identities']} identities, {r['probes']} probes, {r['impostor_pairs']} impostor pairs; "
                  f"mean cosine similarity of a perturbed face to its original {r['self_similarity_mean']:.3f}.")
    return "\n".join(md) + "\n"


def write_privacy_report(res: dict, out, extra_md: str = "") -> Path:
    from ..fileio import atomic_write, write_json_atomic
    from ..evaluation.report import to_html
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = privacy_markdown(res) + extra_md
    write_json_atomic(out / "results.json", res)
    atomic_write(out / "report.md", lambda f: f.write(md.encode()))
    atomic_write(out / "report.html", lambda f: f.write(to_html(md, out).encode()))
    return out / "report.md"


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1] == size:
        return images
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])


def contact_sheet(model, images: np.ndarray, codes: np.ndarray, path: Path, per_gender: int = 4) -> Path:
    """Columns of faces (per_gender of each gender); rows original / same / opposite / neutral for one SAN,
    original / each member's opposite output / the released one for an ensemble."""
    from ..fileio import image_grid, save_image_atomic
    pick = np.concatenate([np.flatnonzero(codes == k)[:per_gender] for k in (0, 1)])
    x, g = images[pick], codes[pick]
    size = x.shape[1]
    small = _resize(x, model_size(model))
    if hasattr(model, "members_"):
        released, info = model.choose(small, g)
        rows = [x] + [_resize(c, size) for c in info["candidates"]] + [_resize(released, size)]
    else:
        outs = model.outputs(small, g)
        rows = [x] + [_resize(outs[p], size) for p in ("same", "opposite", "neutral")]
    return save_image_atomic(image_grid([im for row in rows for im in row], cols=len(pick)), path)


def model_size(model) -> int:
    return int(model.members_[0].size if hasattr(model, "members_") else model.size)


def perturb_dataset(model, dataset, out, prototype: str = "opposite", batch: int = 64,
                    log: Callable[[str], None] = lambda s: None) -> dict:
    """Write `dataset`'s faces perturbed by a SAN (or the ensemble's released output) into `out` with the same
    layout: images at the same relative paths (resized to the model's side and back when they differ), the
    manifest (each row marked with the prototype), Hugging Face metadata and pair lists copied; and
    contact_sheet.png."""
    import shutil
    from ..fileio import atomic_write, save_image_atomic
    src, out = Path(dataset), Path(out)
    if out.resolve() == src.resolve():
        raise SynthfaceError("--out must differ from --dataset: perturb writes a new dataset")
    t = face_table(src)
    size = model_size(model)
    ensemble = hasattr(model, "members_")
    for s in range(0, len(t["paths"]), batch):
        paths = t["paths"][s:s + batch]
        x = read_images(t["root"], paths)
        g = t["gender"][s:s + batch]
        y = model.transform(_resize(x, size), g) if ensemble else model.transform(_resize(x, size), prototype, g)
        for p, im in zip(paths, _resize(y, x.shape[1])):
            save_image_atomic(im, out / p)
        log(f"perturbed {min(s + batch, len(t['paths']))}/{len(t['paths'])} faces")
    rows = [json.loads(line) for line in (src / "manifest.jsonl").read_text().splitlines() if line.strip()]
    mark = "ensemble" if ensemble else prototype
    atomic_write(out / "manifest.jsonl", lambda f: f.write(
        "".join(json.dumps({**r, "san_prototype": mark}) + "\n" for r in rows).encode()))
    for extra in ("imagefolder/metadata.jsonl", "labels.jsonl"):
        if (src / extra).is_file():
            shutil.copyfile(src / extra, out / extra)
    if (src / "pairs").is_dir():
        shutil.copytree(src / "pairs", out / "pairs", dirs_exist_ok=True)
    first = read_images(t["root"], t["paths"][: min(len(t["paths"]), 400)])
    sheet = contact_sheet(model, first, t["gender"][: len(first)], out / "contact_sheet.png")
    return {"out": str(out), "faces": len(t["paths"]), "prototype": mark, "contact_sheet": str(sheet)}


__all__ = ["evaluate_privacy", "privacy_markdown", "write_privacy_report", "face_table", "ffhq_canvas",
           "gender_metrics", "matcher_metrics", "sklearn_p_male", "read_images", "perturb_dataset", "contact_sheet"]
