"""The pretraining experiment (issue 14, item 6): does a recogniser trained on balanced synthetic
identities do as well, and as fairly, as one trained on biased "real" faces?

Four training sets of the same size (identities x images per identity), on the demo world:

    a  real        renderer faces of a biased population (groups 25/15/60 %, genders 35/65 %,
                   exact quotas): the web-scraped set
    b  balanced    a synthface identity dataset from the demo generator: the latent model samples
                   every group x gender cell equally, identities kept distinct by the world
                   recogniser, variations verified (the demo's settings, synthface.demo.DEMO_IDENTITIES,
                   plus refine_steps=15: each labelled variation refined through the generator)
    c  prior       the same generator sampled from its prior (z ~ N(0, I), psi 1: as biased as its
                   training data); identities kept distinct with the same threshold and varied the
                   same way as b (same nuisance directions, strength, style mixing, consistency
                   threshold), but no cell is requested and no label is checked
    d  mixed       half of a's identities (the same biased quotas) plus half of b's (equal per cell)

Each is trained with the same backbone, loss, schedule, epochs, batch and augmentation (synthface.train's
train_recognition; strong augmentation by default), and scored with synthface.evaluation on a balanced benchmark of renderer
people whose identities are used for nothing else (no training, no threshold): per-cell
accuracy with bootstrap CIs, TAR at FMR 1e-3, STD, SER, FDR, GARBE. The world's own recogniser
(trained on 2,500 renderer people x 12 images) is scored on the same pairs as a reference.

Identity ranges of the world (seed 0) used here, disjoint from every range the world's models,
generator, calibration faces and the other experiments use: real training people from
REAL_FIRST, benchmark people from BENCH_FIRST (100,000 apart per cell).
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import SynthfaceError
from ..fileio import atomic_write, write_json_atomic

from .pretrain_data import (  # noqa: F401  (re-exported: the experiment's configuration and data)
    SETS, REAL_STRENGTH, REAL_FIRST, BENCH_FIRST, CELL_STRIDE, PRIOR_INDEX, PretrainConfig,
    QUICK, CELLS, cell_names, quotas, biased_quotas, _done,
    _finish, _fresh, _save_png, render_people, build_benchmark, build_real,
    _cell_of, _identity_settings, balanced_scale, build_balanced, select_prior_identities, build_prior)


def _rows(path: Path, prefix: str) -> list[dict]:
    return [{**r, "path": f"{prefix}/{r['path']}"} for r in json.loads((path / "rows.json").read_text())]


def first_per_cell(rows: list[dict], n: int) -> list[dict]:
    """Rows of the first n identities of each cell (in the order selection accepted them)."""
    names = cell_names()
    take = set()
    for c in names:
        ids = sorted({r["identity"] for r in rows if r["cell"] == c}, key=lambda v: int(v[3:]))
        take.update(ids[:n])
    return [r for r in rows if r["identity"] in take]


def training_sets(cfg: PretrainConfig, data: Path) -> dict[str, list[dict]]:
    """Rows (path relative to `data`, identity, cell) of every training set: b, b2, b5 are the first
    1x, 2x, 5x ids_per_cell identities per cell of the balanced dataset; d takes real people by the
    biased quotas of half the size and half of b's identities per cell; e1, e2, e5 are all of a plus
    b, b2, b5."""
    real, bal = _rows(data / "real", "real"), _rows(data / "balanced", "balanced")
    n = cfg.ids_per_cell
    sets = {"a": real, "b": first_per_cell(bal, n), "b2": first_per_cell(bal, 2 * n), "b5": first_per_cell(bal, 5 * n)}
    sets.update({"e1": real + sets["b"], "e2": real + sets["b2"], "e5": real + sets["b5"]})
    for k in ("a50", "a0"):
        if k in cfg.sets:
            sets[k] = _rows(data / real_folder(k), real_folder(k))
    if (data / "prior" / "rows.json").is_file():
        sets["c"] = _rows(data / "prior", "prior")
    half = len(CELLS) * n // 2
    names = cell_names()
    take = set()
    for c, q in zip(names, biased_quotas(half)):
        ids = sorted({r["identity"] for r in real if r["cell"] == c}, key=lambda v: int(v[4:]))
        take.update(ids[:q])
    sets["d"] = [r for r in real if r["identity"] in take] + first_per_cell(bal, n // 2)
    return {k: v for k, v in sets.items() if k in cfg.sets}


def augment_text(augment) -> str:
    from ..train.data import augment_level
    return {"none": "off", "basic": "flip + colour jitter",
            "strong": "flip + colour jitter + rotation, scale, shift and blur (strong)"}[augment_level(augment)]


def real_folder(key: str) -> str:
    """Folder of a renderer set under data/: real, real_s50, real_s0."""
    s = REAL_STRENGTH[key]
    return "real" if s == 1.0 else f"real_s{round(100 * s)}"


def set_label(key: str, name: str) -> str:
    """'(e5) real + b5' for the set e5 named e5_real_plus_b5."""
    return f"({key}) " + name.split("_", 1)[1].replace("_plus_", " + ").replace("_", " ")


def write_csv(rows: list[dict], path: Path) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "identity", "cell"])
    for r in rows:
        w.writerow([r["path"], r["identity"], r["cell"]])
    return atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def composition(rows: list[dict], key: str = "cell") -> dict:
    """Share of identities per cell."""
    by_id = {r["identity"]: r[key] for r in rows}
    names = cell_names()
    n = len(by_id)
    return {c: sum(v == c for v in by_id.values()) / n for c in names}


# ------------------------------------------------------------------------------ training and scoring

def train_set(cfg: PretrainConfig, name: str, csv_path: Path, run: Path, log: Callable) -> dict:
    from ..train.recognition import RecognitionConfig, train_recognition
    rc = RecognitionConfig(data=str(csv_path), out=str(run), backbone=cfg.backbone, loss=cfg.loss,
                           margin=cfg.margin, scale=cfg.scale, embedding_dim=cfg.embedding_dim, epochs=cfg.epochs,
                           batch=cfg.batch, lr=cfg.lr, weight_decay=cfg.weight_decay, held_out=cfg.held_out,
                           augment=cfg.augment, seed=cfg.seed, device="cpu")
    key = {"stage": "train", "config": asdict(rc), "data": csv_path.read_bytes().decode()}
    if _done(run, key) and (run / "results.json").is_file():
        return json.loads((run / "results.json").read_text())
    shutil.rmtree(run, ignore_errors=True)
    log(f"training {name} on {csv_path.name}")
    res = train_recognition(rc, log=log, progress=sys.stderr.isatty())
    write_json_atomic(run / ".done.json", key)
    return res


def paired_differences(scores: dict, pairs: list[dict], reference: str, n_boot: int, seed: int) -> dict:
    """Per recogniser: mean accuracy and accuracy STD minus the reference's on the same pairs, with
    a 95 % percentile CI from one bootstrap that resamples pairs within each group and applies the
    same draw to both recognisers (the paired difference, tighter than comparing two CIs)."""
    from ..fairness import metrics as M

    y = np.array([p["genuine"] for p in pairs], bool)
    g = np.array([p["group"] for p in pairs])
    f = np.array([p["fold"] for p in pairs])
    groups = sorted(set(g.tolist()))
    idx = {k: np.flatnonzero(g == k) for k in groups}

    def stats(s, take):
        accs = [100 * M.kfold_accuracy(s[take[k]], y[take[k]], f[take[k]])[0] for k in groups]
        return np.mean(accs) / 100, M.std_accuracy(accs) / 100

    rng = np.random.default_rng(seed)
    draws = [{k: v[rng.integers(0, len(v), len(v))] for k, v in idx.items()} for _ in range(n_boot)]
    ref = np.array([stats(scores[reference], d) for d in draws])
    ref0 = stats(scores[reference], idx)
    out = {}
    for name, s in scores.items():
        if name == reference:
            continue
        b = np.array([stats(s, d) for d in draws]) - ref
        d0 = np.array(stats(s, idx)) - np.array(ref0)
        out[name] = {"accuracy_mean": [float(d0[0]), *np.percentile(b[:, 0], [2.5, 97.5]).tolist()],
                     "accuracy_std": [float(d0[1]), *np.percentile(b[:, 1], [2.5, 97.5]).tolist()]}
    return out


def evaluate(cfg: PretrainConfig, bench: Path, runs: dict, out: Path, log: Callable) -> tuple[dict, dict]:
    from ..evaluation import load_items, load_pairs, pair_scores, run_evaluation
    from ..evaluation.evaluate import embeddings
    from ..identity import load_embedder

    recs = [("world", load_embedder("world"))]
    recs += [(SETS[k][0], load_embedder(f"torch:{run / 'backbone.safetensors'}")) for k, run in runs.items()]
    # balanced pairs: every genuine pair of a cell and as many impostors (RFW's protocol)
    n_pairs = cfg.bench_ids_per_cell * cfg.bench_images * (cfg.bench_images - 1) // 2
    rep = run_evaluation(bench, recs, out, genuine=n_pairs, impostor=n_pairs, seed=cfg.seed, target_fmr=1e-3,
                         n_boot=cfg.n_boot, log=log)
    items, pairs = load_items(bench), load_pairs(out / "pairs.csv")
    paths = [p["a"] for p in pairs] + [p["b"] for p in pairs]
    scores = {name: pair_scores(embeddings(e, items, paths, out / "cache", log=log), pairs) for name, e in recs}
    diffs = paired_differences(scores, pairs, SETS["a"][0], cfg.n_boot, cfg.seed) if "a" in runs else {}
    return rep, diffs


# ------------------------------------------------------------------------------ report

def summary_row(name: str, r: dict) -> dict:
    key = "0.001"
    gl = r["global"].get(key) or {}
    fnmr = gl.get("fnmr", {})
    tar = {k: 1 - v for k, v in fnmr.items()}
    return {"recogniser": name, "accuracy_mean": r["accuracy_mean"], "accuracy_std": r["accuracy_std"],
            "ser": r["ser"], "accuracy_per_cell": {k: v["accuracy"] for k, v in r["groups"].items()},
            "accuracy_ci95_per_cell": {k: v["accuracy_ci95"] for k, v in r["groups"].items()},
            "worst_cell_accuracy": min(v["accuracy"] for v in r["groups"].values()),
            "tar_at_fmr_1e-3_global_threshold": tar,
            "tar_at_fmr_1e-3_mean": float(np.mean(list(tar.values()))) if tar else None,
            "tar_at_fmr_1e-3_min": float(min(tar.values())) if tar else None,
            "tar_at_fmr_1e-3_per_cell_threshold": {k: v["tar_at_fmr"].get(key) for k, v in r["groups"].items()},
            "fdr": gl.get("fdr"), "garbe": gl.get("garbe"), "threshold": gl.get("threshold")}


def _colour(recogniser: str) -> str:
    """The same colour for a recogniser in every panel: world C0, then a-d C1-C4."""
    names = ["world"] + [n for n, _ in SETS.values()]
    return f"C{names.index(recogniser)}" if recogniser in names else "k"


def plot(res: dict) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["table"]
    names = cell_names()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.4), gridspec_kw={"width_ratios": [2.2, 1]})
    width = 0.8 / len(rows)
    for n, r in enumerate(rows):
        acc = np.array([r["accuracy_per_cell"][c] for c in names]) * 100
        ci = np.array([r["accuracy_ci95_per_cell"][c] for c in names]) * 100
        x = np.arange(len(names)) + (n - (len(rows) - 1) / 2) * width
        ax.bar(x, acc, width, label=r["label"], yerr=[acc - ci[:, 0], ci[:, 1] - acc], capsize=2,
               color=_colour(r["recogniser"]))
    ax.set_xticks(np.arange(len(names)), names, fontsize=8)
    lo = min(min(r["accuracy_per_cell"].values()) for r in rows) * 100
    ax.set(ylabel="verification accuracy % (95 % CI)", ylim=(max(0, lo - 8), 100),
           title="per-cell accuracy on the balanced renderer benchmark")
    ax.legend(fontsize=7, ncol=len(rows), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(axis="y", alpha=0.3)
    for name, t in res["training"].items():
        ax2.plot(range(1, len(t["val_accuracy_per_epoch"]) + 1), np.array(t["val_accuracy_per_epoch"]) * 100,
                 marker="o", ms=3, label=SETS[name][0], color=_colour(SETS[name][0]))
    ax2.set(xlabel="epoch", ylabel="held-out verification %", title="training (each set's own held-out people)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _pct(v, d=2):
    return "-" if v is None else f"{100 * v:.{d}f}"


def _num(v, d=3):
    return "-" if v is None else f"{v:.{d}f}"


def _training_sets_section(res: dict, names) -> list:
    L = []
    L += ["", "## Training sets", "",
          "| set | identities | images | composition (share of identities per cell, " + ", ".join(names) +
          ") | held-out verification % (last epoch) | training time s |", "|---|---|---|---|---|---|"]
    for k, t in res["training"].items():
        comp = " / ".join(f"{100 * t['composition'][c]:.0f}" for c in names)
        L.append(f"| {SETS[k][0]}: {SETS[k][1]} | {t['identities']} | {t['images']} | {comp} | "
                 f"{_pct(t['val_accuracy'])} | {t['train_seconds']:.0f} |")
    if "c" in res["training"] and res["training"]["c"].get("composition_audit"):
        comp = " / ".join(f"{100 * res['training']['c']['composition_audit'][c]:.0f}" for c in names)
        L += ["", f"(c)'s cells are what the world's attribute classifier says of each identity's first image (no cell "
              f"was requested); the independent audit classifier says {comp}."]
    return L


def _how_made_section(cfg: dict) -> list:
    L = []
    L += ["", "## How the sets were made", "",
          f"- (a) renderer people of world seed {cfg['world_seed']}, identities {REAL_FIRST:,}+ ({CELL_STRIDE:,} apart "
          "per "
          "cell), forced into the biased population's cells by exact quotas (groups 25/15/60 %, genders 35/65 %), "
          f"images 0-{cfg['images_per_id'] - 1} of each (the renderer's pose, light, expression and glasses draws).",
          f"- (b) `synthface.demo`'s pipeline: a bank of {cfg['bank_n']} generated faces labelled by the world's "
          "classifier, the demographic latent model fitted on it (confidence 0.95), then synthface's identity "
          "dataset writer with the demo's settings (labels verified at 0.99, identities distinct at the world "
          "recogniser's FMR 1e-4 threshold on renderer calibration faces, "
          + ("labelled variations (pose, expression, light and glasses directions in W read by the world's nuisance "
             "regressor, each image aimed at one renderer face's nuisance values"
             + (f", then refined by {cfg['refine_steps']} gradient steps through the generator toward those values"
                if cfg.get("refine_steps") else "") + ")" if cfg.get("variations") ==
             "labelled" else "variations along principal components of W")
          + f", strength {cfg['variation_strength'] if cfg['variation_strength'] is not None else 'default'}, "
          "consistency at the world recogniser's FMR 1e-3 threshold): "
          f"{cfg['ids_per_cell']} identities per cell; (b2) and (b5) are the first 2x and 5x as many identities "
          "per cell of the same selection (one greedy run wrote 5x).",
          "- (c) prior seeds of the same generator (z ~ N(0, I), psi 1), kept greedily when below the same separation "
          "threshold to every identity kept before, varied by the same function as (b) with the same nuisance "
          "directions, strength, style mixing and consistency threshold; no cell is requested and no label is checked, "
          "so its demographics are the generator's (which follow its biased training data).",
          "- (d) the first identities of (a) by the biased quotas of half the set, plus the first half of (b)'s "
          "identities in every cell: half real, half synthetic, the same total.",
          "- (e1), (e2), (e5): all of (a) plus all of (b), (b2), (b5): real data with 1x, 2x, 5x as many synthetic "
          "identities added.",
          "- (a50), (a0), diagnostics: (a)'s people and image numbers rendered with the renderer's pose, expression "
          "and light variation at half strength and not at all (backgrounds, shirts and habitual glasses vary as in "
          "(a)): what a recogniser loses when each identity varies less, the real-data counterpart of a generator's "
          "narrow variations."]
    return L


def report_markdown(res: dict, png: Optional[str]) -> str:
    cfg, info = res["config"], res["info"]
    names = cell_names()
    n_ids = len(CELLS) * cfg["ids_per_cell"]
    L = ["# Pretraining on synthetic faces (issue 14, item 6)", "",
         f"Command: `{res['command']}`  ", f"Machine: {info['machine']}  ",
         f"Time: {info['seconds']:.0f} s in all (data {info['data_seconds']:.0f} s, training "
         f"{info['train_seconds']:.0f} s, evaluation {info['eval_seconds']:.0f} s)"
         + (f"; reused from an earlier run into this folder, so not in these times: {', '.join(info['reused'])}"
            if info.get("reused") else ""), "",
         f"Every training set has {n_ids} identities x {cfg['images_per_id']} images "
         f"({n_ids * cfg['images_per_id']} images; {100 * cfg['held_out']:.0f} % of the identities held out for "
         f"per-epoch verification). Same backbone ({cfg['backbone']}, {cfg['embedding_dim']}-d), {cfg['loss']} loss "
         f"(scale {cfg['scale']}, margin {cfg['margin'] or 'default'}), SGD lr {cfg['lr']}, {cfg['epochs']} epochs, "
         f"batch {cfg['batch']}, augmentation {augment_text(cfg['augment'])}, seed {cfg['seed']}.", "",
         f"Benchmark: {len(CELLS) * cfg['bench_ids_per_cell']} renderer people ({cfg['bench_ids_per_cell']} per cell, "
         f"balanced; world seed {cfg['world_seed']}, identities {BENCH_FIRST:,} + {CELL_STRIDE:,} x cell + "
         f"0..{cfg['bench_ids_per_cell'] - 1}, used for nothing else) x {cfg['bench_images']} images, ArcFace 112x112 "
         f"crops; {info['pairs']} pairs: every genuine pair and as many impostor pairs (same cell, same "
         "identity-disjoint fold) per cell, 10-fold accuracy as RFW. CIs: 95 % bootstrap over pairs.", "",
         "## Results", "",
         "| recogniser | training data | mean accuracy % | worst cell % | STD | SER | TAR@FMR 1e-3 mean / min % "
         "| FDR | GARBE | mean acc. minus (a), 95 % CI | STD minus (a) |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["table"]:
        d = res["paired_differences"].get(r["recogniser"])
        dtxt = (f"{100 * d['accuracy_mean'][0]:+.2f} [{100 * d['accuracy_mean'][1]:+.2f}, "
                f"{100 * d['accuracy_mean'][2]:+.2f}]") if d else "-"
        stxt = (f"{100 * d['accuracy_std'][0]:+.2f} [{100 * d['accuracy_std'][1]:+.2f}, "
                f"{100 * d['accuracy_std'][2]:+.2f}]") if d else "-"
        L.append(f"| {r['label']} | {r['data']} | **{_pct(r['accuracy_mean'])}** | {_pct(r['worst_cell_accuracy'])} | "
                 f"{_pct(r['accuracy_std'])} | {r['ser']:.3f} | {_pct(r['tar_at_fmr_1e-3_mean'], 1)} / "
                 f"{_pct(r['tar_at_fmr_1e-3_min'], 1)} | {_num(r['fdr'])} | {_num(r['garbe'])} | {dtxt} | {stxt} |")
    L += ["", "STD: standard deviation of the six cells' accuracies (points); SER: the highest cell error over the "
          "lowest; TAR, FDR and GARBE at the global threshold where the benchmark's impostors give FMR 1e-3 "
          "(FDR: 1 is fair; GARBE: 0 is fair).", "",
          "Per-cell accuracy % (95 % CI):", "",
          "| recogniser | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in res["table"]:
        L.append(f"| {r['label']} | " + " | ".join(
            f"{_pct(r['accuracy_per_cell'][c], 1)} [{_pct(r['accuracy_ci95_per_cell'][c][0], 1)}, "
            f"{_pct(r['accuracy_ci95_per_cell'][c][1], 1)}]" for c in names) + " |")
    if png:
        L += ["", f"![per-cell accuracy and training curves]({png})"]
    L += ["", "Each recogniser's ROC per cell, score distributions and hardest pairs: "
          "`evaluation/report.html`; each training run's card and curves: "
          "`runs/<set>/README.md`."]
    L += _training_sets_section(res, names)
    L += _how_made_section(cfg)
    return "\n".join(L) + "\n"


# ------------------------------------------------------------------------------ entry point

def make_config(quick: bool = False, overrides: Optional[dict] = None) -> PretrainConfig:
    cfg = PretrainConfig(**(QUICK if quick else {}))
    names = {f.name for f in fields(PretrainConfig)}
    for k, v in (overrides or {}).items():
        if k not in names:
            raise SynthfaceError(f"--set {k}=...: the pretrain experiment has no setting {k!r}; it has "
                                 f"{', '.join(sorted(names))}")
        setattr(cfg, k, v)
    bad = [s for s in cfg.sets if s not in SETS]
    if bad or not cfg.sets:
        raise SynthfaceError(f"sets {cfg.sets}: choose from {', '.join(SETS)}")
    from ..train.data import augment_level
    augment_level(cfg.augment)
    if cfg.refine_steps and cfg.variations != "labelled":
        raise SynthfaceError(f"refine_steps={cfg.refine_steps} refines labelled variations: set variations=\"labelled\" "
                             "or refine_steps=0")
    if cfg.ids_per_cell < 2 or cfg.ids_per_cell % 2:
        raise SynthfaceError(f"ids_per_cell={cfg.ids_per_cell}: give an even number >= 2 (set d takes half of a and b)")
    if cfg.images_per_id < 2 or cfg.bench_images < 2 or cfg.bench_ids_per_cell < 4:
        raise SynthfaceError("images_per_id and bench_images need at least 2, bench_ids_per_cell at least 4")
    return cfg


def run(out, quick: bool = False, overrides: Optional[dict] = None, log: Callable = print) -> dict:
    import torch

    cfg = make_config(quick, overrides)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out = Path(out)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    t0, started = time.perf_counter(), time.time()
    bench = build_benchmark(cfg, data / "benchmark", log)
    build_real(cfg, data / "real", log)
    for k in set(cfg.sets) & {"a50", "a0"}:
        build_real(cfg, data / real_folder(k), log, strength=REAL_STRENGTH[k])
    if set(cfg.sets) - set(REAL_STRENGTH):
        from ..assets import generator_path
        from ..generator import load_generator
        G = load_generator(generator_path(), device="cpu")
        build_balanced(cfg, G, data / "balanced", log, scale=balanced_scale(cfg), reuse_larger=True)
        if "c" in cfg.sets:
            build_prior(cfg, G, data / "balanced", data / "prior", log)
    sets = (training_sets(cfg, data) if set(cfg.sets) - set(REAL_STRENGTH) else
            {k: _rows(data / real_folder(k), real_folder(k)) for k in cfg.sets})
    t_data = time.perf_counter() - t0
    runs, training = {}, {}
    t1 = time.perf_counter()
    for k in cfg.sets:
        csv_path = write_csv(sets[k], data / f"{SETS[k][0]}.csv")
        res = train_set(cfg, SETS[k][0], csv_path, out / "runs" / SETS[k][0], log)
        runs[k] = out / "runs" / SETS[k][0]
        training[k] = {"identities": len({r["identity"] for r in sets[k]}), "images": len(sets[k]),
                       "composition": composition(sets[k]), "val_accuracy": res["val_accuracy"],
                       "val_accuracy_per_epoch": res["val_accuracy_per_epoch"], "train_seconds": res["train_seconds"],
                       "steps": res["steps"]}
        if k == "c":
            training[k]["composition_audit"] = composition(sets[k], "cell_audit")
    t_train = time.perf_counter() - t1
    t2 = time.perf_counter()
    rep, diffs = evaluate(cfg, bench, runs, out / "evaluation", log)
    t_eval = time.perf_counter() - t2
    table = []
    for name, r in rep["recognisers"].items():
        row = summary_row(name, r)
        k = next((s for s, (n, _) in SETS.items() if n == name), None)
        row["label"] = set_label(k, name) if k else "world recogniser (reference)"
        row["data"] = (f"{training[k]['identities']} ids x {cfg.images_per_id}" if k else
                       "2,500 renderer people x 12 (world identities 100000+)")
        table.append(row)
    # stages finished by an earlier invocation into the same folder: their time is not in this one's
    stages = ([data / "benchmark", data / "balanced", data / "prior"] +
              [data / real_folder(k) for k in REAL_STRENGTH] + list(runs.values()))
    reused = [str(p.relative_to(out)) for p in stages
              if (p / ".done.json").is_file() and (p / ".done.json").stat().st_mtime < started]
    info = {"seconds": time.perf_counter() - t0, "data_seconds": t_data, "train_seconds": t_train, "reused": reused,
            "eval_seconds": t_eval, "pairs": rep["pairs"],
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (load average at the end "
                       f"{os.getloadavg()[0]:.1f}), torch {torch.__version__} with {torch.get_num_threads()} threads"}
    command = "synthface experiment pretrain --out " + str(out) + (" --quick" if quick else "") + "".join(
        f" --set {k}={json.dumps(v)}" for k, v in (overrides or {}).items())
    res = {"experiment": "pretrain", "command": command, "config": asdict(cfg), "info": info, "table": table,
           "paired_differences": diffs, "training": training,
           "evaluation": str(out / "evaluation" / "report.html")}
    png = plot(res)
    atomic_write(out / "accuracy.png", lambda f: f.write(png))
    md = report_markdown(res, "accuracy.png")
    from ..evaluation.report import to_html
    page = to_html(md, out).replace("<title>synthface evaluation</title>", "<title>pretrain experiment</title>")
    atomic_write(out / "report.md", lambda f: f.write(md.encode()))
    atomic_write(out / "report.html", lambda f: f.write(page.encode()))
    write_json_atomic(out / "results.json", res)
    res["summary"] = {"out": str(out), "seconds": round(info["seconds"], 1),
                      "accuracy_mean": {r["recogniser"]: round(r["accuracy_mean"], 4) for r in table},
                      "accuracy_std": {r["recogniser"]: round(r["accuracy_std"], 4) for r in table}}
    log(f"wrote {out}/report.md, report.html and results.json in {info['seconds']:.0f}s")
    return res
