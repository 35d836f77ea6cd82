"""The pretrain experiment's data: its configuration, and the renderer and generator image sets it trains
and is judged on (split from pretrain.py so each file stays readable)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import SynthfaceError
from ..fileio import atomic_write, write_json_atomic

SETS = {"a": ("a_real", "real renderer faces, biased (25/15/60 %, 35/65 %)"),
        "b": ("b_balanced", "synthface balanced identities (demo generator, latent model)"),
        "c": ("c_prior", "generator prior samples (as biased as its training data)"),
        "d": ("d_mixed", "half real (a) + half balanced synthetic (b)"),
        "b2": ("b2_balanced_2x", "balanced synthetic, 2x as many identities as a"),
        "b5": ("b5_balanced_5x", "balanced synthetic, 5x as many identities as a"),
        "e1": ("e1_real_plus_b", "all of a + b (real : synthetic identities 1 : 1)"),
        "e2": ("e2_real_plus_b2", "all of a + b2 (1 : 2)"),
        "e5": ("e5_real_plus_b5", "all of a + b5 (1 : 5)"),
        # diagnostics: how much does the renderer's own intra-identity variation teach? (a)'s people and
        # images with pose, expression and light drawn at half strength or not at all (background, shirt and
        # habitual glasses still vary): the real-data counterpart of a generator that varies an identity less
        "a50": ("a50_real_half_variation", "a's people, pose / expression / light at half strength"),
        "a0": ("a0_real_no_variation", "a's people, no pose / expression / light variation")}
# nuisance strength of each renderer set drawn from a's people (1: the renderer's own variation)
REAL_STRENGTH = {"a": 1.0, "a50": 0.5, "a0": 0.0}
# synthetic identities of each set that draws on the balanced dataset, as a multiple of ids_per_cell
# (b2 and b5 extend b: the first 1x / 2x identities per cell of one greedy selection of 5x)
SCALE = {"b": 1, "d": 1, "e1": 1, "b2": 2, "e2": 2, "b5": 5, "e5": 5}
REAL_FIRST = 3_000_000
BENCH_FIRST = 4_000_000
CELL_STRIDE = 100_000
PRIOR_INDEX = 1_000_000  # variation streams of c's identities start here, apart from b's


@dataclass
class PretrainConfig:
    world_seed: int = 0
    render_size: int = 64             # renderer faces and the generator are 64x64 FFHQ-aligned
    ids_per_cell: int = 50            # b's identities per cell; every set has 6x this many identities
    images_per_id: int = 8
    bank_n: int = 8000                # latents labelled to fit the latent model (as `synthface demo`)
    # attempts per image for b's and c's variations (DatasetConfig's default 20 lets one hard identity in a
    # few hundred stop the whole dataset; more attempts change nothing for the identities that pass at 20)
    variation_budget: int = 60
    variations: str = "labelled"      # b's and c's variations: labelled nuisance directions, or pca (earlier sessions)
    variation_strength: Optional[float] = None  # None: the default of the variation kind (labelled 1.0, pca 0.5)
    # b's and c's labelled variations refined by gradient steps through G (identity.refine); with strong
    # augmentation below, what brought b from 77.8 to 85.7 % and b2 to 88.0 % (docs/experiments.md, issue 25)
    refine_steps: int = 15
    bench_ids_per_cell: int = 200     # benchmark people per cell
    bench_images: int = 5
    backbone: str = "world-recognizer"
    embedding_dim: int = 128
    loss: str = "arcface"
    margin: Optional[float] = None    # None: the loss's default (arcface 0.5)
    scale: float = 32.0
    epochs: int = 12
    batch: int = 64
    lr: float = 0.1
    weight_decay: float = 5e-4
    held_out: float = 0.1             # identities of each set kept for its per-epoch verification
    augment: str = "strong"           # none | basic (flip + colour jitter) | strong (+ rotation, scale, shift, blur)
    seed: int = 0
    n_boot: int = 200
    sets: list = field(default_factory=lambda: list(SETS))
    threads: int = 0                  # torch threads (0: torch's default)


# --quick is a plumbing check: no refinement (about 4x the CPU of the linear step)
QUICK = {"ids_per_cell": 30, "images_per_id": 6, "bank_n": 3000, "bench_ids_per_cell": 50, "epochs": 10, "refine_steps": 0}

CELLS = [(g, s) for g in range(3) for s in range(2)]


def cell_names() -> list[str]:
    from ..world import GENDERS, GROUPS
    return [f"{GROUPS[g]}/{GENDERS[s]}" for g, s in CELLS]


def quotas(n: int, probs) -> list[int]:
    """n split in proportion to probs, rounded by largest remainder (sums to n exactly)."""
    p = np.asarray(probs, float) / np.sum(probs)
    raw = n * p
    q = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - q), kind="stable")[:n - q.sum()]:
        q[k] += 1
    return q.tolist()


def biased_quotas(n: int) -> list[int]:
    """Identities per cell (CELLS order) of a set drawn from the world's BIASED population."""
    from ..world import BIASED, GENDERS, GROUPS
    p = [BIASED["group"][GROUPS[g]] * BIASED["gender"][GENDERS[s]] for g, s in CELLS]
    return quotas(n, p)


# ------------------------------------------------------------------------------ stages on disk

def _done(path: Path, key: dict) -> bool:
    """A stage is done when its marker holds the same key (settings); a stale one is redone."""
    m = path / ".done.json"
    return m.is_file() and json.loads(m.read_text()) == key


def _holds_more(path: Path, key: dict) -> bool:
    """A balanced set written with the same settings but more identities per cell serves a smaller request:
    every set takes the first identities of each cell in selection order (first_per_cell)."""
    m = path / ".done.json"
    if not m.is_file():
        return False
    have = json.loads(m.read_text())
    n = have.get("ids_per_cell_written", -1)
    return n >= key["ids_per_cell_written"] and {**have, "ids_per_cell_written": 0} == {**key, "ids_per_cell_written": 0}


def _finish(tmp: Path, path: Path, key: dict) -> Path:
    """Move a stage's finished temporary folder into place, then write its marker."""
    write_json_atomic(tmp / ".done.json", key)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def _fresh(path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _save_png(arr: np.ndarray, path: Path):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG")


def render_people(world, first: int, per_cell: list[int], images: int, size: int, batch: int = 32,
                  strength: float = 1.0):
    """Yield (cell index, identity index, [images] uint8 112x112 ArcFace crops) for per_cell[c]
    people forced into each cell c, identities first + c * CELL_STRIDE + i; `strength` scales the
    renderer's pose, expression and light variation."""
    from ..dataset.writer import crop112
    from ..world import take
    for c, (g, s) in enumerate(CELLS):
        idx = list(range(first + c * CELL_STRIDE, first + c * CELL_STRIDE + per_cell[c]))
        for b in range(0, len(idx), batch):
            chunk = idx[b:b + batch]
            ident = world.identities(chunk, group=g, gender=s)
            rows = np.repeat(np.arange(len(chunk)), images)
            crops = crop112(world.render(take(ident, rows), np.tile(np.arange(images), len(chunk)), size,
                                         strength=strength))
            for r, i in enumerate(chunk):
                yield c, i, crops[r * images:(r + 1) * images]


def build_renderer_set(path: Path, key: dict, world_seed: int, first: int, per_cell: int, images: int, size: int,
                       log: Callable, what: str, gender_column: bool = False) -> Path:
    """Balanced renderer people (per_cell in each cell, identities first + cell stride + i) x images as
    112x112 ArcFace crops in imagefolder/<identity>/<k>.png with a manifest (path, identity, cell[, gender]);
    built once per `key` and reused. Shared by the experiments' renderer test and training sets."""
    from ..world import BALANCED, World
    if _done(path, key):
        return path
    t0 = time.perf_counter()
    tmp = _fresh(path)
    names, rows = cell_names(), []
    for c, i, crops in render_people(World(seed=world_seed, distribution=BALANCED), first, [per_cell] * len(CELLS),
                                     images, size):
        for k, im in enumerate(crops):
            rel = f"imagefolder/{i}/{k:03d}.png"
            _save_png(im, tmp / rel)
            rows.append({"path": rel, "identity": i, "cell": names[c],
                         **({"gender": names[c].split("/")[1]} if gender_column else {})})
    atomic_write(tmp / "manifest.jsonl", lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows).encode()))
    log(f"{what}: {len(rows)} images of {len(CELLS) * per_cell} renderer people (identities {first}+, {per_cell} "
        f"per cell) in {time.perf_counter() - t0:.0f}s")
    return _finish(tmp, path, key)


def build_benchmark(cfg: PretrainConfig, path: Path, log: Callable) -> Path:
    """Balanced renderer people (bench_ids_per_cell per cell) as a synthface-style manifest."""
    key = {"stage": "benchmark", "first": BENCH_FIRST, **{k: getattr(cfg, k) for k in (
        "world_seed", "render_size", "bench_ids_per_cell", "bench_images")}}
    return build_renderer_set(path, key, cfg.world_seed, BENCH_FIRST, cfg.bench_ids_per_cell, cfg.bench_images,
                              cfg.render_size, log, "benchmark")


def build_real(cfg: PretrainConfig, path: Path, log: Callable, strength: float = 1.0) -> Path:
    """(a): renderer people in the biased population's exact cell quotas; with strength < 1 the same
    people and images with the renderer's pose, expression and light variation scaled down (a50, a0)."""
    from ..world import BIASED, World
    n = len(CELLS) * cfg.ids_per_cell
    key = {"stage": "real", "first": REAL_FIRST, "n": n, **{k: getattr(cfg, k) for k in (
        "world_seed", "render_size", "images_per_id")}, **({"strength": strength} if strength != 1.0 else {})}
    if _done(path, key):
        return path
    t0 = time.perf_counter()
    tmp = _fresh(path)
    names = cell_names()
    rows = []
    for c, i, crops in render_people(World(seed=cfg.world_seed, distribution=BIASED), REAL_FIRST,
                                     biased_quotas(n), cfg.images_per_id, cfg.render_size, strength=strength):
        for k, im in enumerate(crops):
            rel = f"{i}/{k:03d}.png"
            _save_png(im, tmp / rel)
            rows.append({"path": rel, "identity": f"real{i}", "cell": names[c], "rank": len(rows)})
    write_json_atomic(tmp / "rows.json", rows)
    log(f"(a) real{'' if strength == 1.0 else f' at variation strength {strength}'}: {len(rows)} images of {n} "
        f"renderer people in {time.perf_counter() - t0:.0f}s")
    return _finish(tmp, path, key)


def _cell_of(labels: dict) -> str:
    return f"{labels['group']}/{labels['gender']}"


def _identity_settings(cfg: PretrainConfig) -> dict:
    """The demo's identity-dataset settings with this experiment's variation kind and strength."""
    from ..demo import DEMO_IDENTITIES
    return {**DEMO_IDENTITIES, "strength": cfg.variation_strength, "variations": cfg.variations,
            "nuisance_regressor": "world" if cfg.variations == "labelled" else None,
            **({"refine_steps": cfg.refine_steps} if cfg.refine_steps else {})}  # absent at 0: earlier builds stay valid


def balanced_scale(cfg: PretrainConfig) -> int:
    """How many times ids_per_cell identities per cell the balanced dataset holds (the largest set's)."""
    return max([SCALE[s] for s in cfg.sets if s in SCALE] + [1])


def build_balanced(cfg: PretrainConfig, G, path: Path, log: Callable, scale: int = 1,
                   reuse_larger: bool = False) -> Path:
    """(b): the demo's pipeline (synthface.demo.balanced_set / identity_set): label a bank, fit the
    latent model, generate scale x ids_per_cell identities x images_per_id per cell. The pretrain
    experiment asks for balanced_scale(cfg) (its b2 / b5 sets are the first 2x / 5x identities); the
    other experiments that borrow set (b) take the default, ids_per_cell. reuse_larger: a set already
    written with more identities per cell is kept (for callers that take the first ids per cell only)."""
    import warnings

    from ..dataset import DatasetConfig, generate_dataset
    from ..demo import DEMO_FIT
    from ..identity import load_embedder
    from ..labelling import load_labeller
    from ..latent import DemographicLatentModel, build_bank

    n_cell = cfg.ids_per_cell * scale
    key = {"stage": "balanced", "ids_per_cell_written": n_cell,
           **{k: getattr(cfg, k) for k in ("bank_n", "ids_per_cell", "images_per_id", "seed", "variation_budget")},
           "fit": DEMO_FIT, "identities": _identity_settings(cfg)}
    if _done(path, key) or (reuse_larger and _holds_more(path, key)):
        return path
    t0 = time.perf_counter()
    # generate_dataset resumes within the partial folder, but only a run with the same settings may
    # (its own check does not see a refitted latent model)
    tmp = path.with_name(f".{path.name}.partial")
    if tmp.is_dir() and not (tmp / "key.json").is_file() or (
            (tmp / "key.json").is_file() and json.loads((tmp / "key.json").read_text()) != key):
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    write_json_atomic(tmp / "key.json", key)
    verifier, embedder = load_labeller("world"), load_embedder("world")
    progress = sys.stderr.isatty()
    bank = build_bank(G, verifier, tmp / "bank", cfg.bank_n, seed=cfg.seed, progress=progress, log=log)
    model = DemographicLatentModel(**DEMO_FIT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.fit_bank(bank)
    model.save(tmp / "model.synthface")
    log(f"(b) latent model fitted on {cfg.bank_n} labelled latents in {time.perf_counter() - t0:.0f}s")
    dcfg = DatasetConfig(ids_per_cell=n_cell, images_per_id=cfg.images_per_id, seed=cfg.seed,
                         **{**_identity_settings(cfg), "variation_budget": cfg.variation_budget})
    summary = generate_dataset(model, G, verifier, embedder, tmp / "dataset", dcfg, progress=progress, log=log)
    rows = []
    for rec in sorted((tmp / "dataset" / "records").glob("*.json")):
        r = json.loads(rec.read_text())
        for im in r["images"]:
            rows.append({"path": f"dataset/{im['file']}", "identity": f"bal{r['identity']}",
                         "cell": _cell_of(r["labels"]), "rank": int(r["identity"])})
    write_json_atomic(tmp / "rows.json", rows)
    write_json_atomic(tmp / "summary.json", {"thresholds": summary["thresholds"], "candidates": summary["candidates"],
                                             "seconds": time.perf_counter() - t0})
    log(f"(b) balanced: {len(rows)} images of {len(CELLS) * n_cell} identities "
        f"({summary['candidates']} candidates) in {time.perf_counter() - t0:.0f}s")
    return _finish(tmp, path, key)


def select_prior_identities(G, embedder, n: int, separation: float, seed: int, psi: float, noise_mode: str,
                            batch: int = 64, budget: float = 50.0):
    """n identities drawn from the generator's prior, each kept when its cosine similarity to every
    identity kept before it is below `separation` (the same greedy rule as b's selection, without
    a cell). Candidate j's seed comes from (seed, "prior", j) alone. Returns (prior seeds, w,
    reference images, reference embeddings, candidates visited)."""
    from ..generator.synthesis import prior_latents, synthesize
    from ..utils import keyed_rng, name_key

    seeds, ws, imgs, embs = [], [], [], []
    j, limit = 0, int(np.ceil(budget * n))
    while len(seeds) < n and j < limit:
        cand = [int(keyed_rng(seed, name_key("prior"), k).integers(0, 2**32 - 1))
                for k in range(j, min(j + batch, limit))]
        j += len(cand)
        W = prior_latents(G, cand, psi)
        im = synthesize(G, W, noise_mode, batch)
        e = embedder.embed(im)
        for r in range(len(cand)):
            if len(seeds) >= n:
                break
            if embs and float((np.stack(embs) @ e[r]).max()) >= separation:
                continue
            seeds.append(cand[r])
            ws.append(W[r])
            imgs.append(im[r])
            embs.append(e[r])
    if len(seeds) < n:
        raise SynthfaceError(f"only {len(seeds)} of {n} distinct prior identities within {limit} candidates; "
                             "ask for fewer identities")
    return np.array(seeds), np.stack(ws), np.stack(imgs), np.stack(embs), j


def build_prior(cfg: PretrainConfig, G, balanced: Path, path: Path, log: Callable) -> Path:
    """(c): prior identities, distinct at b's separation threshold, varied as b's are (b's latent
    model supplies the nuisance directions; an empty cell spec means no label is checked)."""
    from ..dataset.writer import crop112
    from ..identity import load_embedder
    from ..identity.identities import make_variations, nuisance_basis
    from ..labelling import load_labeller
    from ..latent import DemographicLatentModel

    n = len(CELLS) * cfg.ids_per_cell
    key = {"stage": "prior", "n": n, **{k: getattr(cfg, k) for k in ("images_per_id", "seed", "bank_n",
                                                                     "variation_budget")},
           "identities": _identity_settings(cfg)}
    if _done(path, key):
        return path
    t0 = time.perf_counter()
    tmp = _fresh(path)
    model = DemographicLatentModel.load(balanced / "model.synthface")
    thr = json.loads((balanced / "summary.json").read_text())["thresholds"]
    verifier, embedder, audit = load_labeller("world"), load_embedder("world"), load_labeller("world-audit")
    # a few spare identities, for any whose variations fail the consistency check
    seeds, W, ref, emb, visited = select_prior_identities(
        G, embedder, n + max(2, n // 10), thr["separation"], cfg.seed, model.truncation_psi_, model.noise_mode_)
    basis, scales = nuisance_basis(model, G, seed=cfg.seed)
    directions = None
    if cfg.variations == "labelled":  # b's labelled directions, fitted when b was written
        from ..identity.directions import NuisanceDirections
        with np.load(balanced / "dataset" / "directions.npz") as z:
            directions = NuisanceDirections.from_arrays(dict(z)).prepare(model.A_)
    strength = cfg.variation_strength if cfg.variation_strength is not None else (
        1.0 if cfg.variations == "labelled" else 0.5)
    from ..identity.refine import make_refiner
    refiner = make_refiner(cfg.refine_steps, "world", embedder, directions)
    labels = {name: lab.predict_proba(ref) for name, lab in (("world", verifier), ("audit", audit))}
    schema = verifier.schema
    rows, kept, failed = [], [], 0
    for i in range(len(seeds)):
        if len(kept) == n:
            break
        res = make_variations(model, G, verifier, embedder, {}, W[i], emb[i], PRIOR_INDEX + i, cfg.images_per_id,
                              cfg.seed, basis, scales, strength, None, thr["consistency"], None, cfg.variation_budget,
                              32, directions=directions, refiner=refiner)
        if len(res["variations"]) < cfg.images_per_id:
            failed += 1
            continue
        crops = crop112(np.stack([v["image"] for v in res["variations"]]))
        cell = {name: "/".join(schema[a][int(np.argmax(p[a][i]))] for a in ("group", "gender"))
                for name, p in labels.items()}
        for k, im in enumerate(crops):
            rel = f"{i:06d}/{k:03d}.png"
            _save_png(im, tmp / rel)
            rows.append({"path": rel, "identity": f"prior{i}", "cell": cell["world"], "cell_audit": cell["audit"],
                         "prior_seed": int(seeds[i]), "rank": i})
        kept.append(i)
    if len(kept) < n:
        raise SynthfaceError(f"(c) only {len(kept)} of {n} prior identities kept {cfg.images_per_id} consistent "
                             "variations; ask for fewer images per identity")
    write_json_atomic(tmp / "rows.json", rows)
    write_json_atomic(tmp / "summary.json", {"candidates": visited, "variation_failures": failed,
                                             "separation": thr["separation"], "consistency": thr["consistency"],
                                             "seconds": time.perf_counter() - t0})
    log(f"(c) prior: {len(rows)} images of {n} identities ({visited} candidates, {failed} dropped for "
        f"inconsistent variations) in {time.perf_counter() - t0:.0f}s")
    return _finish(tmp, path, key)


