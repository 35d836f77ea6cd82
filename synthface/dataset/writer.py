"""Balanced identity datasets: N identities x K images per cell, written where trainers read them.

    OUT/
      dataset.json             the arguments and the generator / model / embedder hashes
      identities.npz, .json    stage 1: the selected identities (w, seeds, reference embeddings)
      imagefolder/000000/000.png ...   aligned 112x112 crops, one folder per identity (arcface_torch)
      full/000000/000.png ...  full-resolution images (--full-res)
      records/000000.json      per identity: its images, seeds, scores and labels (completion marker)
      shards/                  per-shard completion records
    after `merge`:
      manifest.jsonl, imagefolder/metadata.jsonl (Hugging Face imagefolder), rec/train.rec + .idx,
      pairs/<cell>.txt, metrics.json, README.md (dataset card) + sheets/

Stage 1 (identity selection) is deterministic, so every shard can compute it; the first to finish
writes it and the others read it. Stage 2 gives identity i to shard i % num_shards. Every file is
written under a temporary name and renamed; an identity's folders are renamed into place before
its record is written, so after a crash or kill a rerun redoes exactly the unfinished identities.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..align import arcface_crop112 as crop112
from ..errors import SynthfaceError
from ..fileio import atomic_write, disk_full_message, save_image_atomic, write_json_atomic
from ..generator import base_network
from ..generator.synthesis import generator_hash
from ..identity.identities import STAGE_ATTEMPTS, IdentitySet, make_variations, nuisance_basis, select_identities
from ..identity.thresholds import impostor_threshold, reference_threshold
from ..latent.cells import parse_cells, spec_name
from ..latent.sampling import check_generator, check_labeller
from ..locks import DirectoryLock, job_identity
from ..utils import log_stderr, progress_bar
from .common import load_reference_spec, sweep_dataset

DATASET_VERSION = 1


@dataclass
class DatasetConfig:
    cells: str = "all"
    ids_per_cell: int = 10
    images_per_id: int = 5
    seed: int = 0
    separation: Optional[float] = None        # absolute cosine; else one of the two below
    separation_quantile: Optional[float] = None  # fallback: this quantile of generated faces' impostors
    separation_fmr: float = 1e-4              # default: the recogniser's threshold at this FMR on `reference`
    consistency: Optional[float] = None       # absolute cosine; else consistency_fmr, else the separation threshold
    consistency_fmr: Optional[float] = None   # default with reference faces: DEFAULT_CONSISTENCY_FMR
    reference: Optional[str] = None           # reference faces: "world" (renderer), an .npy or an image folder
    strength: Optional[float] = None          # step along the directions; None: 1.0 labelled, 0.5 pca
    mix_from: Optional[int] = None
    variations: Optional[str] = None          # labelled | pca; None: labelled when a nuisance regressor is known
    nuisance_regressor: Optional[str] = None  # world | onnx:PATH (labelled variations' nuisance reader)
    direction_samples: int = 4000             # generated faces the labelled directions are fitted on
    refine_steps: int = 0                     # labelled variations: gradient steps through G toward each image's
                                              # target nuisances (identity.refine); 0: the linear step only
    refine_identity_target: Optional[float] = None  # refinement's identity term stops pulling at this cosine to
                                                    # the identity's reference (None: 1, it always pulls)
    accept_confidence: Optional[float] = None
    truncation: float = 1.0
    identity_budget: float = 50.0
    variation_budget: int = 20
    variation_confidence: Optional[float] = None  # label check of variations; default: the model's threshold
    full_res: bool = False
    leakage_threshold: Optional[float] = None
    anchors: Optional[str] = None             # anchor file (latent.anchors): its cells' identities are mixes of
                                              # two anchors; the anchor faces join the leakage gallery
    batch_size: int = 64


# A variation keeps its identity when the recogniser matches it to the identity's reference image at
# the usual verification operating point (the separation threshold, at FMR 1e-4, would reject most
# changes of pose or expression a recogniser should survive).
DEFAULT_CONSISTENCY_FMR = 1e-3


def shard_from_env() -> tuple[int, int]:
    """(index, count) from torchrun (RANK/WORLD_SIZE) or a SLURM array, else (0, 1)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if "SLURM_ARRAY_TASK_ID" in os.environ:
        first = int(os.environ.get("SLURM_ARRAY_TASK_MIN", 0))
        count = int(os.environ.get("SLURM_ARRAY_TASK_COUNT", 1))
        return int(os.environ["SLURM_ARRAY_TASK_ID"]) - first, count
    return 0, 1


def id_name(i: int) -> str:
    return f"{i:06d}"


def _identity_meta(model, G, verifier, embedder, cfg: DatasetConfig, leakage_info) -> dict:
    return {"version": DATASET_VERSION, "config": asdict(cfg), "generator_hash": generator_hash(G),
            "model": {"generator_hash": model.generator_hash_, "attributes": model.attributes_,
                      "projection": model.projection, "truncation_psi": model.truncation_psi_},
            "verifier": verifier.describe(), "embedder": embedder.describe(), "leakage": leakage_info}


def generate_dataset(model, G, verifier, embedder, out, cfg: DatasetConfig, shard_index: int = 0,
                     num_shards: int = 1, leakage: Optional[np.ndarray] = None, progress: bool = True,
                     log: Callable[[str], None] = log_stderr, stop_after: Optional[int] = None,
                     capacity_candidates: int = 200) -> dict:
    """Run stage 1 if needed and this shard's part of stage 2. Returns a summary.
    `stop_after` stops after that many identities of stage 2 (a deterministic interruption).
    Before selecting CAPACITY_CHECK_FROM or more identities per cell, `capacity_candidates`
    candidates per cell estimate the capacity and a request clearly out of reach is refused (0: skip)."""
    out = Path(out)
    if not 0 <= shard_index < num_shards:
        raise SynthfaceError(f"shard index {shard_index} is outside 0..{num_shards - 1}")
    if cfg.ids_per_cell < 1 or cfg.images_per_id < 1:
        raise SynthfaceError("--ids-per-cell and --images-per-id must be at least 1")
    check_threshold_config(cfg)
    check_variation_config(cfg)
    cfg = replace(cfg, variations=variation_mode(cfg))
    check_generator(model, G)
    check_labeller(model, verifier, "verifying labeller")
    specs = parse_cells(cfg.cells, model.schema_, model.attributes_)
    anchors, leakage = _anchors(cfg, G, embedder, specs, leakage)
    meta = _identity_meta(model, G, verifier, embedder, cfg, _leakage_info(leakage))
    # Shards of one job (same settings and shard count) share `out`; any other writer is refused.
    with disk_full_message(out, "run the same `synthface generate` command again: finished identities are kept"), \
            generate_lock(out, shard_index, num_shards, job_identity(meta, num_shards), log):
        _check_or_write_meta(out, meta)
        t0 = time.perf_counter()
        idset, thr, stage1_ran = _stage1(out, model, G, verifier, embedder, cfg, specs, leakage, progress, log,
                                         capacity_candidates, anchors)
        t1 = time.perf_counter()
        done, mine, finished = _stage2(out, idset, thr, {spec_name(s): s for s in specs}, model, G, verifier,
                                       embedder, cfg, shard_index, num_shards, progress, log, stop_after)
        t2 = time.perf_counter()
    return {"identities": len(idset.cell), "this_shard": len(mine), "written_now": done, "finished": finished,
            "thresholds": thr, "stage1_s": (t1 - t0) if stage1_ran else None, "stage2_s": t2 - t1,
            "candidates": sum(st["candidates"] for st in idset.stats.values())}


def generate_lock(out: Path, shard_index: int, num_shards: int, job: Optional[str],
                  log: Callable[[str], None] = log_stderr) -> DirectoryLock:
    """The writer lock of one shard of a generate job; taken with no other writer alive, it sweeps
    what dead writers left."""
    return DirectoryLock(out, f"generate-{shard_index:05d}-of-{num_shards:05d}", job=job, shared=True, log=log,
                         sweep=sweep_dataset)


def _anchors(cfg: DatasetConfig, G, embedder, specs, leakage):
    """({cell name: anchor w} or None, the leakage gallery with the requested cells' anchor faces added)."""
    if not cfg.anchors:
        return None, leakage
    from ..latent.anchors import anchors_by_cell, load_anchors
    a = load_anchors(cfg.anchors, G)
    names = [spec_name(s) for s in specs]
    anchors = anchors_by_cell(a, names)
    if not anchors:
        raise SynthfaceError(f"--anchors {cfg.anchors}: it holds cells {', '.join(sorted(set(a['cell'].tolist())))}, "
                             f"none of the requested ones ({', '.join(names)}); build anchors for them or drop --anchors")
    faces = embedder.embed_aligned(a["crops"][np.isin(a["cell"], list(anchors))]).astype(np.float32)
    return anchors, faces if leakage is None else np.concatenate([np.asarray(leakage, np.float32), faces])


def _leakage_info(leakage) -> Optional[dict]:
    if leakage is None:
        return None
    return {"gallery_size": int(len(leakage)),
            "sha256": hashlib.sha256(np.ascontiguousarray(leakage, np.float32).tobytes()).hexdigest()[:16]}


GROWABLE = ("identity_budget", "variation_budget")  # settings a rerun may raise


def _check_or_write_meta(out: Path, meta: dict) -> None:
    """dataset.json records what makes the dataset; a rerun must match it to resume."""
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / "dataset.json"
    if not mpath.is_file():
        write_json_atomic(mpath, meta)
        return
    old = json.loads(mpath.read_text())
    if old.get("config", {}).get("extra") == {}:  # a field older versions wrote, always empty
        old = {**old, "config": {k: v for k, v in old["config"].items() if k != "extra"}}
    # A setting added since the dataset was made, asked for at its default, is what the older version did.
    defaults = {f.name: f.default for f in fields(DatasetConfig)}
    added = {k: v for k, v in meta["config"].items() if k not in old.get("config", {}) and v == defaults.get(k, ())}
    if added and "config" in old:
        old = {**old, "config": {**old["config"], **added}}
    # Budgets may grow on a rerun: a budget only caps the attempts, and attempts are numbered, so
    # everything written under the smaller one is exactly what the larger one gives.
    raised = {k for k in GROWABLE if meta["config"][k] > old.get("config", {}).get(k, meta["config"][k])}
    if raised:
        old = {**old, "config": {**old["config"], **{k: meta["config"][k] for k in raised}}}
    if old != meta:
        diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
        raise SynthfaceError(f"{out} holds a dataset made with different settings ({', '.join(diff)}); use a new "
                             "--out, or the same arguments to resume")
    if raised:
        write_json_atomic(mpath, meta)


# Below this many identities per cell, selection itself is quicker than estimating the capacity first.
CAPACITY_CHECK_FROM = 50


def _check_capacity(model, G, verifier, embedder, cfg: DatasetConfig, specs, separation: float, n_candidates: int,
                    progress, log, anchors=None) -> None:
    """Estimate the identity capacity from selection's first candidates; refuse, with the figures,
    a request that is clearly out of reach before hours go into it."""
    from ..identity.capacity import capacity_check, estimate_capacity

    est = estimate_capacity(model, G, verifier, embedder, specs, separation, n_candidates=n_candidates,
                            seed=cfg.seed, accept_confidence=cfg.accept_confidence, truncation=cfg.truncation,
                            batch_size=cfg.batch_size, n_per_cell=cfg.ids_per_cell, progress=progress, log=log,
                            anchors=anchors)
    ok, message = capacity_check(est, cfg.ids_per_cell, cfg.identity_budget)
    if not ok:
        raise SynthfaceError(message)
    log(message)


def _stage1(out: Path, model, G, verifier, embedder, cfg: DatasetConfig, specs, leakage, progress, log,
            capacity_candidates: int = 0, anchors=None):
    """Identity selection (deterministic, so every shard may run it; the first to finish writes it).
    Returns (identities, thresholds, whether it ran now)."""
    ids_path = out / "identities.npz"
    if ids_path.is_file():
        ids_json = json.loads((out / "identities.json").read_text())
        with np.load(ids_path) as z:
            idset = IdentitySet.from_arrays(dict(z), ids_json["stats"])
        return idset, ids_json["thresholds"], False
    thr = resolve_thresholds(cfg, model, G, embedder, leakage is not None, log)
    sep = thr["separation"]
    if capacity_candidates and cfg.ids_per_cell >= CAPACITY_CHECK_FROM:
        _check_capacity(model, G, verifier, embedder, cfg, specs, sep, capacity_candidates, progress, log, anchors)
    log(f"selecting {cfg.ids_per_cell} identities in each of {len(specs)} cells (separation < {sep:.3f})")
    idset = select_identities(model, G, verifier, embedder, specs, cfg.ids_per_cell, sep, seed=cfg.seed,
                              leakage=leakage, leakage_threshold=thr["leakage"],
                              accept_confidence=cfg.accept_confidence, truncation=cfg.truncation,
                              budget=cfg.identity_budget, batch_size=cfg.batch_size, progress=progress, log=log,
                              anchors=anchors)
    write_json_atomic(out / "identities.json", {"thresholds": thr, "stats": idset.stats, "cells": idset.cells})
    arrays = idset.arrays()
    atomic_write(ids_path, lambda f: np.savez(f, **arrays))
    return idset, thr, True


def check_threshold_config(cfg: DatasetConfig) -> None:
    """Threshold settings that cannot work, refused before anything is written."""
    for name in ("separation_fmr", "consistency_fmr"):
        v = getattr(cfg, name)
        if v is not None and not 0 < v < 1:
            raise SynthfaceError(f"--{name.replace('_', '-')} must be a false-match rate in (0, 1), got {v}")
    if cfg.separation_quantile is not None and not 0 < cfg.separation_quantile < 1:
        raise SynthfaceError(f"--separation-quantile must be in (0, 1), got {cfg.separation_quantile}")
    for name in ("separation", "consistency"):
        v = getattr(cfg, name)
        if v is not None and not -1 <= v <= 1:
            raise SynthfaceError(f"--{name} is a cosine similarity in [-1, 1], got {v}")
    if not cfg.reference:
        if cfg.separation is None and cfg.separation_quantile is None:
            raise _reference_needed("separation", cfg.separation_fmr)
        if cfg.consistency is None and cfg.consistency_fmr is not None:
            raise _reference_needed("consistency", cfg.consistency_fmr)


def _reference_needed(what: str, fmr: float) -> SynthfaceError:
    return SynthfaceError(f"the {what} threshold at FMR {fmr:g} is measured on reference faces, and none were given: "
                          "pass --reference-embeddings E.npy (real-face embeddings from the same recogniser) or "
                          "--reference-images DIR, or set it directly (--separation COSINE), or fall back to generated "
                          "faces with --separation-quantile Q")


def resolve_thresholds(cfg: DatasetConfig, model, G, embedder, with_leakage: bool = False,
                       log: Callable[[str], None] = log_stderr) -> dict:
    """Separation, consistency and leakage thresholds of a dataset, each with where it came from:
    given, at an FMR on reference faces (the default), or a quantile of generated faces (fallback)."""
    reference = None
    if cfg.separation is not None:
        sep_src = {"kind": "given", "threshold": cfg.separation}
    elif cfg.separation_quantile is not None:
        log(f"separation threshold: the {cfg.separation_quantile} quantile of impostor similarities of "
            "1000 random generated faces")
        sep_src = impostor_threshold(G, embedder, model.truncation_psi_, quantile=cfg.separation_quantile,
                                     seed=cfg.seed)
    else:
        if not cfg.reference:
            raise _reference_needed("separation", cfg.separation_fmr)
        reference = load_reference_spec(cfg.reference)
        sep_src = reference_threshold(reference, embedder, cfg.separation_fmr)
        log(f"separation threshold {sep_src['threshold']:.3f}: the recogniser at FMR {cfg.separation_fmr:g} on "
            f"{sep_src['source']} ({sep_src['impostor_pairs']:,} impostor pairs)")
    sep = sep_src["threshold"]
    if cfg.consistency is not None:
        con_src = {"kind": "given", "threshold": cfg.consistency}
    elif cfg.consistency_fmr is not None or cfg.reference:
        if not cfg.reference:
            raise _reference_needed("consistency", cfg.consistency_fmr)
        fmr = DEFAULT_CONSISTENCY_FMR if cfg.consistency_fmr is None else cfg.consistency_fmr
        reference = reference or load_reference_spec(cfg.reference)
        con_src = reference_threshold(reference, embedder, fmr)
    else:
        con_src = {"kind": "separation", "threshold": sep}
    return {"separation": sep, "consistency": con_src["threshold"],
            "impostors": sep_src if sep_src["kind"] == "quantile" else None,
            "sources": {"separation": sep_src, "consistency": con_src},
            "leakage": None if not with_leakage else (sep if cfg.leakage_threshold is None else cfg.leakage_threshold)}


def _stage2(out: Path, idset, thr, specs_by_name, model, G, verifier, embedder, cfg: DatasetConfig,
            shard_index: int, num_shards: int, progress, log, stop_after):
    """Variations and images of this shard's identities (identity i belongs to shard i % num_shards).
    Returns (identities written now, this shard's identities, whether the shard is complete)."""
    basis, scales, directions = variation_directions(out, model, G, cfg, log)
    from ..identity.refine import make_refiner
    refiner = make_refiner(cfg.refine_steps, cfg.nuisance_regressor, embedder, directions,
                           device=str(next(G.parameters()).device), id_target=cfg.refine_identity_target)
    mine = [i for i in range(len(idset.cell)) if i % num_shards == shard_index]
    todo = [i for i in mine if not (out / "records" / f"{id_name(i)}.json").is_file()]
    if len(todo) < len(mine):
        log(f"shard {shard_index}/{num_shards}: {len(mine) - len(todo)} of {len(mine)} identities already written")
    bar = progress_bar(len(mine), f"images (shard {shard_index})", unit="id", enabled=progress,
                       initial=len(mine) - len(todo))
    done = 0
    try:
        for i in todo:
            if stop_after is not None and done >= stop_after:
                break
            _write_identity(out, i, idset, specs_by_name, model, G, verifier, embedder, cfg, thr, basis, scales,
                            directions, refiner)
            done += 1
            bar.update(1)
    finally:
        bar.close()
        try:
            os.rmdir(out / ".partial")  # empty unless another shard is writing an identity
        except OSError:
            pass
    finished = all((out / "records" / f"{id_name(i)}.json").is_file() for i in mine)
    if finished:
        write_json_atomic(out / "shards" / f"{shard_index:05d}-of-{num_shards:05d}.json",
                          {"shard": shard_index, "num_shards": num_shards, "identities": len(mine)})
    return done, mine, finished


def _write_identity(out, i, idset, specs_by_name, model, G, verifier, embedder, cfg, thr, basis, scales,
                    directions=None, refiner=None):
    name = id_name(i)
    cell = idset.cells[int(idset.cell[i])]
    res = make_variations(model, G, verifier, embedder, specs_by_name[cell], idset.w[i], idset.embedding[i], i,
                          cfg.images_per_id, cfg.seed, basis, scales, variation_strength(cfg), cfg.mix_from,
                          thr["consistency"], cfg.variation_confidence, cfg.variation_budget, cfg.batch_size,
                          directions=directions, refiner=refiner)
    var = res["variations"]
    if len(var) < cfg.images_per_id:
        raise SynthfaceError(
            f"identity {name} ({cell}): only {len(var)} of {cfg.images_per_id} images kept their identity "
            f"(cosine >= {thr['consistency']:.3f} to the reference image) and label within {res['attempts']} attempts "
            f"(attempts after the first {3 * STAGE_ATTEMPTS} per image take 1/8 of the step and no style mixing); "
            "relax the consistency threshold "
            "(--consistency-fmr 1e-2, or --consistency COSINE lower), or raise --variation-budget; identities already "
            "written are kept, so rerun with the raised budget to resume")
    # Write into a partial folder, rename into place, then the record marks the identity done.
    part = out / ".partial" / name
    shutil.rmtree(part, ignore_errors=True)
    try:
        crops = crop112(np.stack([v["image"] for v in var]))
        for k, c in enumerate(crops):
            save_image_atomic(c, part / "crop" / f"{k:03d}.png")
            if cfg.full_res:
                save_image_atomic(var[k]["image"], part / "full" / f"{k:03d}.png")
        for sub, dest in [("crop", out / "imagefolder" / name), ("full", out / "full" / name)]:
            if (part / sub).is_dir():
                shutil.rmtree(dest, ignore_errors=True)  # left by a run killed between rename and record
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(part / sub, dest)
    finally:  # also on failure (e.g. disk full): no partial folder stays behind
        shutil.rmtree(part, ignore_errors=True)
    rec = {"identity": i, "folder": name, "cell": cell, "labels": specs_by_name[cell],
           "candidate": int(idset.candidate[i]), "prior_seed": int(idset.prior_seed[i]),
           "w_ref": f"identities.npz:w[{i}]", "psi": model.truncation_psi_, "noise_mode": "random",
           "separation_max_similarity": float(idset.max_similarity[i]),
           "leakage_similarity": None if np.isnan(idset.leakage_similarity[i]) else float(idset.leakage_similarity[i]),
           "reference_probs": {a: [round(float(x), 6) for x in p[i]] for a, p in idset.probs.items()},
           "attempts": res["attempts"],
           "images": [{"file": f"imagefolder/{name}/{k:03d}.png",
                       "full": f"full/{name}/{k:03d}.png" if cfg.full_res else None,
                       "attempt": v["attempt"], "noise_seed": v["noise_seed"], "mix_seed": v["mix_seed"],
                       "strength": v["strength"], "mixed": v["mixed"], "refined": v.get("refined", False),
                       "consistency": round(v["consistency"], 6),
                       "probs": {a: [round(float(x), 6) for x in p] for a, p in v["probs"].items()}}
                      for k, v in enumerate(var)]}
    write_json_atomic(out / "records" / f"{name}.json", rec)


def variation_mode(cfg: DatasetConfig) -> str:
    return cfg.variations or ("labelled" if cfg.nuisance_regressor else "pca")


def variation_strength(cfg: DatasetConfig) -> float:
    if cfg.strength is not None:
        return cfg.strength
    return 1.0 if variation_mode(cfg) == "labelled" else 0.5


def check_variation_config(cfg: DatasetConfig) -> None:
    if cfg.variations not in (None, "labelled", "pca"):
        raise SynthfaceError(f"--variations must be labelled or pca, got {cfg.variations!r}")
    if variation_mode(cfg) == "labelled" and not cfg.nuisance_regressor:
        raise SynthfaceError("--variations labelled needs a nuisance regressor: pass --nuisance-regressor onnx:PATH "
                             "(an ONNX pose/expression/light regressor with a JSON sidecar) or use --variations pca")
    if cfg.strength is not None and not (np.isfinite(cfg.strength) and cfg.strength >= 0):
        raise SynthfaceError(f"--strength must be a finite number >= 0, got {cfg.strength}")
    if cfg.direction_samples < 50:
        raise SynthfaceError(f"direction_samples must be at least 50, got {cfg.direction_samples}")


def _direction_targets(cfg: DatasetConfig):
    """Real faces whose nuisance values the labelled variations aim at: the reference images, if any."""
    if not cfg.reference:
        return None, "no reference"
    ref = load_reference_spec(cfg.reference)
    imgs = ref.get("images")
    return (None, "no reference images") if imgs is None or not len(imgs) else (np.asarray(imgs), ref["source"])


def variation_directions(out: Path, model, G, cfg: DatasetConfig, log=log_stderr):
    """(PCA basis, its scales, labelled directions or None) of a dataset's variations; the labelled
    directions are fitted once and kept in OUT/directions.npz (deterministic; shards share it)."""
    basis, scales = nuisance_basis(model, G, seed=cfg.seed)
    if variation_mode(cfg) != "labelled":
        return basis, scales, None
    from ..identity.directions import NuisanceDirections, fit_directions
    from ..labelling.nuisance import load_nuisance_regressor
    path = Path(out) / "directions.npz"
    if not path.is_file():
        regressor = load_nuisance_regressor(cfg.nuisance_regressor)
        images, source = _direction_targets(cfg)
        key = hashlib.sha256(json.dumps(["directions-v2", generator_hash(G), hashlib.sha256(np.ascontiguousarray(model.A_).tobytes())
                                         .hexdigest(), regressor.describe()["sha256"], cfg.direction_samples, cfg.seed,
                                         source]).encode()).hexdigest()[:16]
        from ..world.reference import cache_dir
        cached = cache_dir() / f"directions-{key}.npz"
        if cached.is_file():  # the same generator, model, regressor and targets: the same fit
            shutil.copyfile(cached, path.with_suffix(".npz.tmp"))
            os.replace(path.with_suffix(".npz.tmp"), path)
        else:
            d = fit_directions(model, G, regressor, n=cfg.direction_samples, seed=cfg.seed, reference_images=images,
                               reference_source=source, log=log)
            arrays = d.arrays()
            atomic_write(path, lambda f: np.savez(f, **arrays))
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(cached, lambda f: f.write(path.read_bytes()))
            except OSError:
                pass  # a read-only cache only costs time
    with np.load(path) as z:
        d = NuisanceDirections.from_arrays(dict(z))
    if not (Path(out) / "directions.json").is_file():
        write_json_atomic(Path(out) / "directions.json", d.summary())
    return basis, scales, d.prepare(model.A_)


def load_leakage_gallery(path) -> np.ndarray:
    """An .npy of embeddings [N, D] that identities must not match (e.g. a training set's)."""
    try:
        gallery = np.load(path)
    except (OSError, ValueError) as e:
        raise SynthfaceError(f"--leakage-gallery {path}: {e}") from None
    if gallery.ndim != 2 or not np.isfinite(gallery).all():
        raise SynthfaceError(f"--leakage-gallery {path}: expected a finite [N, D] array of embeddings, "
                             f"got shape {gallery.shape}")
    return gallery


def load_job(model_path, network, labellers, schema, recognizer, align: str = "fixed", device="auto"):
    """The latent model, generator, verifying labeller and recogniser of a generate job, by spec
    (what the CLI, the demo and the Ray workers share)."""
    from ..generator import load_generator, resolve_device
    from ..identity import load_embedder
    from ..labelling import load_labeller
    from ..latent import DemographicLatentModel

    dev = resolve_device(device)
    model = DemographicLatentModel.load(model_path)
    G = load_generator(network, device=dev)
    return model, G, load_labeller(labellers, schema, device=str(dev)), load_embedder(recognizer, str(dev), align)


def network_defaults(cfg: DatasetConfig, network) -> DatasetConfig:
    """The settings `generate` fills in for a network: on the demo world, its renderer's faces as
    reference and its nuisance regressor; the variation kind made explicit."""
    if cfg.reference is None and base_network(network) == "world":
        cfg = replace(cfg, reference="world")  # the demo world's real faces: its renderer's
    if cfg.nuisance_regressor is None and base_network(network) == "world":
        cfg = replace(cfg, nuisance_regressor="world")  # the demo world's pose/expression/light regressor
    return replace(cfg, variations=variation_mode(cfg))


def merge_coverage(out, network) -> Optional[dict]:
    """What merge's per-cell coverage needs for a dataset of `network`: on the demo world (real faces
    of every cell: its renderer's), renderer sets shaped like the dataset; elsewhere None."""
    if base_network(network) != "world":
        return None
    from ..world.reference import coverage_inputs
    cfg = json.loads((Path(out) / "dataset.json").read_text())["config"]
    cells = json.loads((Path(out) / "identities.json").read_text())["cells"]
    return coverage_inputs(cells, cfg["ids_per_cell"], cfg["images_per_id"])
