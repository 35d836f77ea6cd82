"""`synthface merge`: validate a (sharded) dataset and write the manifest, exporters, metrics and card."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from ..errors import SynthfaceError
from ..fileio import (atomic_write, disk_full_message, image_grid, read_image_rgb, save_image_atomic,
                      write_json_atomic)
from ..locks import DirectoryLock
from ..utils import cell_file_name, log_stderr
from .common import load_reference_spec, sweep_dataset
from .recordio import write_rec


def load_records(out: Path) -> tuple[dict, list[dict]]:
    meta_path = out / "dataset.json"
    if not meta_path.is_file():
        raise SynthfaceError(f"{out} is not a synthface dataset (no dataset.json)")
    meta = json.loads(meta_path.read_text())
    ids = json.loads((out / "identities.json").read_text()) if (out / "identities.json").is_file() else None
    if ids is None:
        raise SynthfaceError(f"{out}: identity selection has not finished; run `synthface generate` first")
    with np.load(out / "identities.npz") as z:
        n_ids = len(z["cell"])
    k = meta["config"]["images_per_id"]
    records, missing, broken = [], [], []
    for i in range(n_ids):
        p = out / "records" / f"{i:06d}.json"
        if not p.is_file():
            missing.append(i)
            continue
        r = json.loads(p.read_text())
        files = [out / im["file"] for im in r["images"]]
        if len(files) != k or not all(f.is_file() for f in files):
            broken.append(i)
        records.append(r)
    if missing or broken:
        raise SynthfaceError(f"{out} is incomplete: {len(missing)} identities not written (e.g. "
                             f"{missing[:5]}), {len(broken)} with missing images (e.g. {broken[:5]}); rerun "
                             "`synthface generate` with the same arguments for every shard, then merge")
    extra = sorted(p.name for p in (out / "imagefolder").iterdir() if p.is_dir() and not p.name.isdigit()) \
        if (out / "imagefolder").is_dir() else []
    if extra:
        raise SynthfaceError(f"{out / 'imagefolder'} holds folders that are not identities: {extra[:5]}")
    return meta, records


def improved_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> float:
    """Kynkaanniemi et al.: fraction of real samples inside some fake sample's k-NN ball (cosine distance)."""
    if len(fake) < 2:
        return float("nan")
    k = min(k, len(fake) - 1)
    d_ff = 1 - fake @ fake.T
    radius = np.sort(d_ff, axis=1)[:, k]  # column 0 is the sample itself
    d_rf = 1 - real @ fake.T
    return float((d_rf <= radius[None]).any(1).mean())


def dataset_metrics(out: Path, records: list[dict], embedder, threshold: float, reference: Optional[dict] = None,
                    batch: int = 256) -> dict:
    """DCFace-style figures with `embedder` (ideally one not used to make the data) at `threshold`."""
    files = [out / im["file"] for r in records for im in r["images"]]
    imgs = np.stack([read_image_rgb(f) for f in files])
    e = np.concatenate([embedder.embed_aligned(imgs[s:s + batch]) for s in range(0, len(imgs), batch)])
    k = len(records[0]["images"])
    E = e.reshape(len(records), k, -1)
    centre = E.mean(1)
    centre /= np.linalg.norm(centre, axis=1, keepdims=True)
    S = centre @ centre.T
    iu = np.triu_indices(len(records), 1)
    cross = S[iu]
    accepted = []  # U_class: greedy unique class centres
    for i in range(len(records)):
        if not accepted or (centre[accepted] @ centre[i]).max() < threshold:
            accepted.append(i)
    to_centre = np.einsum("ikd,id->ik", E, centre)
    pair = np.einsum("ikd,ijd->ikj", E, E)
    off = ~np.eye(k, dtype=bool)
    intra = pair[:, off] if k > 1 else np.ones((len(records), 1))
    # image-level impostor pairs: every image against every image of the other identities
    ids = np.repeat(np.arange(len(records)), k)
    below, total = 0, 0
    for s in range(0, len(e), 1024):
        blk = e[s:s + 1024] @ e.T
        other = ids[s:s + 1024, None] != ids[None]
        below += int(((blk < threshold) & other).sum())
        total += int(other.sum())
    res = {"threshold": threshold, "identities": len(records), "images_per_identity": k,
           "cross_identity_image_pairs_below_threshold": below / total if total else 1.0,
           "cross_identity_pairs_below_threshold": float((cross < threshold).mean()) if len(cross) else 1.0,
           "cross_identity_max_similarity": float(cross.max()) if len(cross) else None,
           "U_class": len(accepted) / len(records),
           "C_intra": float((to_centre >= threshold).mean()),
           "within_identity_pairs_above_threshold": float((intra >= threshold).mean()),
           "intra_class_cosine_distance_mean": float((1 - intra).mean())}
    per_cell = {}
    cells = [r["cell"] for r in records]
    for c in sorted(set(cells)):
        rows = np.array([i for i, x in enumerate(cells) if x == c])
        per_cell[c] = {"C_intra": float((to_centre[rows] >= threshold).mean()),
                       "intra_class_cosine_distance_mean": float((1 - intra[rows]).mean())}
        if reference is not None and c in reference:
            real = np.concatenate([embedder.embed_aligned(reference[c][s:s + batch])
                                   for s in range(0, len(reference[c]), batch)])
            per_cell[c]["D_intra"] = improved_recall(real, e.reshape(len(records), k, -1)[rows].reshape(-1, e.shape[1]))
    res["per_cell"] = per_cell
    if reference is not None:
        res["D_intra"] = float(np.mean([v["D_intra"] for v in per_cell.values() if "D_intra" in v]))
    return res


def resolve_audit(out, audit: Optional[str], threshold: Optional[float] = None, quantile: Optional[float] = None,
                  network=None, device="auto", fmr: float = 1e-3, reference: Optional[str] = None):
    """(audit embedder, its threshold, where the threshold came from) for merging `out`, or None
    without an audit recogniser. The threshold is given; or the audit recogniser's at false-match
    rate `fmr` on the dataset's reference faces (the default; `reference` overrides the dataset's);
    or, as a fallback, the `quantile` of its impostor similarities on random generated faces."""
    if not audit:
        return None
    from ..generator import load_generator, resolve_device
    from ..identity import audit_threshold, load_embedder
    from ..identity.thresholds import reference_threshold

    dev = resolve_device(device)
    emb = load_embedder(audit, str(dev))
    if threshold is not None:
        return emb, threshold, {"kind": "given", "threshold": threshold}
    meta_path = Path(out) / "dataset.json"
    if not meta_path.is_file():
        raise SynthfaceError(f"{out} is not a synthface dataset (no dataset.json)")
    meta = json.loads(meta_path.read_text())
    if quantile is None:
        reference = reference or meta["config"].get("reference")
        if not reference:
            raise SynthfaceError(f"the audit threshold at FMR {fmr:g} is measured on reference faces, and the dataset "
                                 "names none: pass --reference-embeddings/--reference-images, --audit-threshold, or "
                                 "--audit-quantile with --network")
        src = reference_threshold(load_reference_spec(reference), emb, fmr)
        return emb, src["threshold"], src
    if network is None:
        raise SynthfaceError("--audit-quantile needs --network to draw the generated faces it is measured on")
    G = load_generator(network, device=dev) if isinstance(network, (str, Path)) else network
    thr = audit_threshold(G, emb, meta["model"]["truncation_psi"], quantile, dataset_seed=meta["config"]["seed"])
    return emb, thr, {"kind": "quantile", "quantile": quantile, "threshold": thr,
                      "source": "1000 random generated faces"}


def run_merge(out, audit: Optional[str] = None, audit_threshold: Optional[float] = None,
              audit_quantile: Optional[float] = None, network=None, device="auto", audit_fmr: float = 1e-3,
              reference: Optional[str] = None, rec_encoding: str = "jpeg444",
              log: Callable[[str], None] = log_stderr) -> dict:
    """`synthface merge`: the audit recogniser resolved from specs, then merge."""
    return merge(out, audit=resolve_audit(out, audit, audit_threshold, audit_quantile, network, device, audit_fmr,
                                          reference), rec_encoding=rec_encoding, log=log)


def merge(out, audit=None, reference: Optional[dict] = None, pairs_per_cell: int = 1000, jpeg_quality: int = 95,
          rec_encoding: str = "jpeg444", log: Callable[[str], None] = log_stderr, coverage: Optional[dict] = None) -> dict:
    """Validate a complete dataset and write its manifest, Hugging Face metadata, RecordIO, pairs,
    contact sheets, metrics (with `audit` = (embedder, threshold)), per-cell coverage against real
    faces (with `coverage`, e.g. world.reference.coverage_inputs) and card. Holds the dataset's
    writer lock (a running `generate` shard refuses it)."""
    out = Path(out)
    check_rec_encoding(rec_encoding)
    if not (out / "dataset.json").is_file():
        load_records(out)  # its message; no lock folder in a folder that is not a dataset

    with disk_full_message(out, "run `synthface merge` again"), DirectoryLock(out, "merge", log=log,
                                                                               sweep=sweep_dataset):
        return _merge(out, audit, reference, pairs_per_cell, jpeg_quality, rec_encoding, log, coverage)


def _merge(out: Path, audit, reference, pairs_per_cell: int, jpeg_quality: int, rec_encoding: str, log,
           coverage=None) -> dict:
    meta, records = load_records(out)
    ids_meta = json.loads((out / "identities.json").read_text())
    cells = ids_meta["cells"]
    k = meta["config"]["images_per_id"]
    log(f"{out}: {len(records)} identities x {k} images, complete")
    write_manifest(out, meta, records)
    write_recordio(out, records, k, jpeg_quality, rec_encoding)
    by_cell = {c: [r for r in records if r["cell"] == c] for c in cells}
    pairs = write_pairs(out, by_cell, k, pairs_per_cell, np.random.default_rng(meta["config"]["seed"]))
    sheets = write_sheets(out, by_cell, k)
    metrics = {"thresholds": ids_meta["thresholds"], "identity_selection": ids_meta["stats"],
               "rec_encoding": rec_encoding, "pairs": pairs}
    if audit is not None:
        emb, thr, src = audit if len(audit) == 3 else (*audit, {"kind": "given", "threshold": audit[1]})
        log("dataset metrics with the audit recogniser")
        metrics["audit"] = {"embedder": emb.describe(), "threshold_source": src,
                            **dataset_metrics(out, records, emb, thr, reference)}
    if (out / "directions.json").is_file():
        metrics["variation_directions"] = json.loads((out / "directions.json").read_text())
    if coverage is not None:
        metrics["coverage"] = _coverage(out, records, coverage, log)
    write_json_atomic(out / "metrics.json", metrics)
    atomic_write(out / "README.md", lambda f: f.write(card(meta, ids_meta, records, metrics, sheets).encode()))
    return metrics


def write_manifest(out: Path, meta: dict, records: list[dict]) -> None:
    """manifest.jsonl (one line per image) and imagefolder/metadata.jsonl (Hugging Face imagefolder)."""
    lines, hf = [], []
    for r in records:
        for k, im in enumerate(r["images"]):
            row = {"path": im["file"], "identity": r["identity"], "image_index": k, "cell": r["cell"], **r["labels"],
                   "probs": im["probs"], "prior_seed": r["prior_seed"], "attempt": im["attempt"],
                   "noise_seed": im["noise_seed"], "mix_seed": im["mix_seed"], "w_ref": r["w_ref"], "psi": r["psi"],
                   "noise_mode": r["noise_mode"], "consistency": im["consistency"],
                   "separation_max_similarity": r["separation_max_similarity"],
                   "leakage_similarity": r["leakage_similarity"], "generator_hash": meta["generator_hash"],
                   "dataset_version": meta["version"]}
            lines.append(json.dumps(row))
            hf.append(json.dumps({"file_name": im["file"][len("imagefolder/"):], "identity": r["identity"],
                                  "cell": r["cell"], **r["labels"]}))
    atomic_write(out / "manifest.jsonl", lambda f: f.write(("\n".join(lines) + "\n").encode()))
    atomic_write(out / "imagefolder" / "metadata.jsonl", lambda f: f.write(("\n".join(hf) + "\n").encode()))


REC_ENCODINGS = {"jpeg444": "JPEG quality 95 without chroma subsampling (4:4:4)",
                 "jpeg420": "JPEG quality 95 with 4:2:0 chroma subsampling (smaller, colour edges blur)",
                 "png": "lossless PNG (exactly the crops' pixels; larger)"}


def check_rec_encoding(encoding: str) -> None:
    if encoding not in REC_ENCODINGS:
        raise SynthfaceError(f"--rec-encoding must be one of {', '.join(REC_ENCODINGS)}, got {encoding!r}")


def encode_record_image(path: Path, encoding: str = "jpeg444", jpeg_quality: int = 95) -> bytes:
    """One crop as the bytes of a .rec record. arcface_torch decodes records with mx.image.imdecode
    (OpenCV), which reads JPEG and PNG alike."""
    buf = io.BytesIO()
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    if encoding == "png":
        rgb.save(buf, format="PNG")
    else:
        rgb.save(buf, format="JPEG", quality=jpeg_quality, subsampling=0 if encoding == "jpeg444" else 2)
    return buf.getvalue()


def write_recordio(out: Path, records: list[dict], k: int, jpeg_quality: int = 95, encoding: str = "jpeg444") -> None:
    """arcface_torch RecordIO: images in identity order, labels 0..I-1 (= sorted folder order)."""
    check_rec_encoding(encoding)
    (out / "rec").mkdir(exist_ok=True)
    ranges, key = [], 1

    def encoded():
        for r in records:
            for im in r["images"]:
                yield r["identity"], encode_record_image(out / im["file"], encoding, jpeg_quality)
    for r in records:
        ranges.append((key, key + k))
        key += k
    write_rec(out / "rec" / "train.rec", out / "rec" / "train.idx", encoded(), len(records) * k, ranges)
    write_json_atomic(out / "rec" / "property.json", {"num_classes": len(records), "num_image": len(records) * k,
                                                      "image_size": [112, 112], "encoding": encoding})


def _unordered_pair(index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The index-th pair (i < j) of range(n) in itertools.combinations order, without listing them."""
    i_all = np.arange(n, dtype=np.int64)
    first = i_all * (2 * n - i_all - 1) // 2  # index of (i, i + 1)
    i = np.searchsorted(first, index, side="right") - 1
    return i, index - first[i] + i + 1


def distinct_pairs(rng: np.random.Generator, n_ids: int, k: int, want: int, genuine: bool) -> list[tuple]:
    """Up to `want` distinct unordered image pairs, drawn without replacement: genuine pairs are two
    images of one identity (n_ids x C(k, 2) exist), impostor pairs one image each of two identities
    (C(n_ids, 2) x k^2 exist). Returns (identity a, image a, identity b, image b) rows."""
    per = k * (k - 1) // 2 if genuine else k * k
    groups = n_ids if genuine else n_ids * (n_ids - 1) // 2
    total = groups * per
    if total == 0 or want <= 0:
        return []
    pick = rng.choice(total, size=min(want, total), replace=False).astype(np.int64)
    g, w = np.divmod(pick, per)
    if genuine:
        a, b = _unordered_pair(w, k)
        return list(zip(g.tolist(), a.tolist(), g.tolist(), b.tolist()))
    i, j = _unordered_pair(g, n_ids)
    a, b = np.divmod(w, k)
    return list(zip(i.tolist(), a.tolist(), j.tolist(), b.tolist()))


def write_pairs(out: Path, by_cell: dict, k: int, pairs_per_cell: int, rng: np.random.Generator) -> dict:
    """Verification pairs per cell: genuine (same identity) and impostor (same cell), half each,
    seeded, every pair distinct (drawn without replacement; fewer when fewer exist).
    Returns the counts per cell."""
    counts = {}
    for c, rs in by_cell.items():
        rows = []
        for genuine in (True, False):
            for i, a, j, b in distinct_pairs(rng, len(rs), k, pairs_per_cell // 2, genuine):
                rows.append(f"{rs[i]['images'][a]['file']}\t{rs[j]['images'][b]['file']}\t{int(genuine)}")
        n_gen = sum(r.endswith("\t1") for r in rows)
        counts[c] = {"genuine": n_gen, "impostor": len(rows) - n_gen}
        atomic_write(out / "pairs" / f"{cell_file_name(c)}.txt",
                     lambda f, rows=rows: f.write(("\n".join(rows) + "\n").encode()))
    return {"requested_per_cell": pairs_per_cell, "per_cell": counts}


def write_sheets(out: Path, by_cell: dict, k: int) -> dict:
    """Contact sheets: one row per identity (first 8 identities of each cell)."""
    sheets = {}
    for c, rs in by_cell.items():
        tiles = [read_image_rgb(out / im["file"]) for r in rs[:8] for im in r["images"][:8]]
        name = cell_file_name(c)
        save_image_atomic(image_grid(tiles, cols=min(8, k)), out / "sheets" / f"{name}.png")
        sheets[c] = f"sheets/{name}.png"
    return sheets


def _f(v, pct=True):
    return "-" if v is None else (f"{100 * v:.1f}%" if pct else f"{v:.3f}")


def threshold_origin(src) -> str:
    """Where a threshold came from, in words, for the card."""
    if not src:
        return "(given)"
    if src.get("kind") == "fmr":
        return (f"(the recogniser at FMR {src['fmr']:g} on {src['source']}: {src['impostor_pairs']:,} impostor pairs "
                f"of {src['faces']:,} faces)")
    if src.get("kind") == "quantile" or "quantile" in src:
        return f"(the {src.get('quantile')} quantile of {src.get('faces', 1000)} random generated faces' impostor similarities)"
    if src.get("kind") == "separation":
        return "(the separation threshold)"
    return "(given)"


def pairs_text(pairs) -> str:
    """How many distinct verification pairs each cell got, in words, for the card."""
    if not pairs:
        return "none"
    counts = list(pairs["per_cell"].values())
    gen, imp = {c["genuine"] for c in counts}, {c["impostor"] for c in counts}
    fmt = lambda v: str(v.pop()) if len(v) == 1 else f"{min(v)}-{max(v)}"  # noqa: E731
    return (f"{fmt(gen)} genuine and {fmt(imp)} impostor pairs per cell, all distinct, drawn without replacement; "
            f"{pairs['requested_per_cell'] // 2} of each were asked for, fewer where fewer exist")


def _coverage(out: Path, records, coverage: dict, log) -> dict:
    from ..evaluation.coverage import coverage_figure, dataset_coverage
    log("per-cell coverage against real faces")
    res = dataset_coverage(out, records, coverage["real_sets"], coverage["features"], coverage.get("nuisance"))
    res["source"] = coverage.get("source", "reference faces")
    if res["per_cell"]:
        coverage_figure(res, out / "coverage.png")
        res["figure"] = "coverage.png"
    return res


def coverage_text(cov: Optional[dict]) -> str:
    if not cov or not cov.get("per_cell"):
        return "No real reference faces per cell were given, so coverage was not measured."
    spaces = sorted(cov["min_coverage_ratio"])
    head = "| cell | " + " | ".join(f"{s}: P / R / density / coverage (self coverage, ratio)" for s in spaces) + " |"
    rows = [head, "|---|" + "---|" * len(spaces)]
    for c, r in cov["per_cell"].items():
        cells = [f"{r[s]['synthetic']['precision']:.2f} / {r[s]['synthetic']['recall']:.2f} / "
                 f"{r[s]['synthetic']['density']:.2f} / **{r[s]['synthetic']['coverage']:.2f}** "
                 f"({r[s]['self']['coverage']:.2f}, {r[s]['coverage_ratio']:.2f})" for s in spaces]
        rows.append(f"| {c} | " + " | ".join(cells) + " |")
    text = "\n".join(rows)
    spread = [(c, r["intra_identity_spread"]) for c, r in cov["per_cell"].items() if "intra_identity_spread" in r]
    if spread:
        names = list(spread[0][1])
        text += ("\n\nIntra-identity spread (mean within-identity standard deviation of each nuisance, read by the "
                 "nuisance regressor), synthetic / real:\n\n| cell | " + " | ".join(names) + " |\n|---|" +
                 "---|" * len(names) + "\n" + "\n".join(
                     f"| {c} | " + " | ".join(f"{s[n]['synthetic']:.3f} / {s[n]['real']:.3f}" for n in names) + " |"
                     for c, s in spread))
    fig = f"\n\n![coverage per cell]({cov['figure']})" if cov.get("figure") else ""
    return (f"Improved precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem et al. 2020), k = "
            f"{cov['k']}, each cell's images against as many real faces of the cell ({cov['source']}); self = a second "
            f"real set of other people. Lowest coverage ratio (synthetic / self): " +
            ", ".join(f"{s} {v:.2f}" for s, v in cov["min_coverage_ratio"].items()) + ".\n\n" + text + fig)


def directions_text(d: Optional[dict]) -> str:
    if not d:
        return ""
    rows = "\n".join(f"| {n} | {v['r2_held_out']:.2f} | {'yes' if v['varied'] else 'no (R^2 too low)'} | "
                      f"{v['target_mean']:.3f} | {v['target_std']:.3f} |" for n, v in d["nuisances"].items())
    return f"""## Labelled variation directions

Each image moves its identity's w toward one real face's nuisance values along linear readouts in W
(fitted on generated faces read by the nuisance regressor), leaving the demographic projection unchanged.
Targets: {d['targets']} ({d['target_faces']} faces).

| nuisance | held-out R^2 in W | varied | target mean | target std |
|---|---|---|---|---|
{rows}

"""


def card(meta, ids_meta, records, metrics, sheets) -> str:
    cfg, thr = meta["config"], ids_meta["thresholds"]
    k = cfg["images_per_id"]
    rows = []
    for c in ids_meta["cells"]:
        st = ids_meta["stats"][c]
        n = sum(r["cell"] == c for r in records)
        a = metrics.get("audit", {}).get("per_cell", {}).get(c, {})
        rows.append(f"| {c} | {n} | {n * k} | {st['candidates']} | {st['rejected_label']} | "
                    f"{st['rejected_separation']} | {st['rejected_leakage']} | {_f(a.get('C_intra'))} | "
                    f"{_f(a.get('intra_class_cosine_distance_mean'), False)} | {_f(a.get('D_intra'))} |")
    au = metrics.get("audit")
    audit_text = "No audit recogniser was given to `synthface merge`." if au is None else f"""Judged by an audit recogniser
(`{au['embedder'].get('path', au['embedder'])}`) at its own threshold {au['threshold']:.3f}
{threshold_origin(au.get('threshold_source'))}:

- cross-identity image pairs below the threshold: **{_f(au['cross_identity_image_pairs_below_threshold'])}**;
  identity-centre pairs below it: {_f(au['cross_identity_pairs_below_threshold'])} (largest centre similarity
  {au['cross_identity_max_similarity']:.3f})
- U_class (greedy unique identities at the threshold, DCFace): **{au['U_class']:.3f}**
- C_intra (images within the threshold of their identity's centre, DCFace): **{au['C_intra']:.3f}**
- within-identity image pairs above the threshold: {_f(au['within_identity_pairs_above_threshold'])}
- diversity: mean within-identity cosine distance {au['intra_class_cosine_distance_mean']:.3f}"""
    if au is not None and "D_intra" in au:
        audit_text += f"\n- D_intra (improved recall of same-cell reference images, DCFace-style): **{au['D_intra']:.3f}**"
    src = thr.get("sources") or {}
    sheet_md = "\n".join(f"**{c}**\n\n![{c}]({p})\n" for c, p in sheets.items())
    return f"""# synthface dataset

{len(records)} identities x {k} images ({len(records) * k} images), {len(ids_meta['cells'])} cells, generator
`{meta['generator_hash']}`, seed {cfg['seed']}. Aligned 112x112 crops in `imagefolder/<identity>/` (arcface_torch
ImageFolder; Hugging Face `imagefolder` via `imagefolder/metadata.jsonl`), RecordIO in `rec/`, one manifest line
per image in `manifest.jsonl`, verification pairs per cell in `pairs/` ({pairs_text(metrics.get('pairs'))}).
RecordIO images: {REC_ENCODINGS.get(metrics.get('rec_encoding', 'jpeg420'), '')}.

## Thresholds

- separation: a new identity's cosine similarity to every accepted identity < **{thr['separation']:.3f}**
  {threshold_origin(src.get('separation') or thr.get('impostors'))}
- consistency: each variation's cosine similarity to its identity's reference >= **{thr['consistency']:.3f}**
  {threshold_origin(src.get('consistency'))}
- leakage gallery: {"none" if thr.get('leakage') is None else f"similarity < {thr['leakage']:.3f}"}{_anchor_text(cfg)}
- variations: {cfg.get('variations') or 'pca'} (strength {cfg['strength'] if cfg['strength'] is not None else 'default'}), style mixing from layer {cfg['mix_from'] if cfg['mix_from'] is not None else 'default'},
  labels re-checked at confidence {cfg['accept_confidence'] if cfg['accept_confidence'] is not None else 'of the model'}

## Cells

| cell | identities | images | candidates | rejected: label | rejected: too similar | rejected: leakage | C_intra | intra distance | D_intra |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

## Quality

{audit_text}

{directions_text(metrics.get("variation_directions"))}## Coverage of real faces, per cell

{coverage_text(metrics.get("coverage"))}

## Contact sheets (one row per identity)

{sheet_md}
"""


def _anchor_text(cfg: dict) -> str:
    """The card's words on anchored cells (latent.anchors), empty without anchors."""
    if not cfg.get("anchors"):
        return ""
    return (f" (it holds the anchor faces of `{cfg['anchors']}`: the anchored cells' identities are mixes of two "
            "inverted real faces of the cell, and none matches an anchor person at that threshold)")
