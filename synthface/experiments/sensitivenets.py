"""The SensitiveNets experiment (issue 15, item 5): can a projection of the world recogniser's embeddings,
trained on synthface's balanced synthetic identities, hide gender and group from fresh classifiers on real
(renderer) faces while keeping verification?

Training: a synthface identity dataset from the demo generator (the demo's pipeline, equal identities per
group x gender cell; synthface.experiments.pretrain_data.build_balanced), embedded by the world recogniser.
SensitiveNets is fitted on those embeddings once per lam in `lams`.

Test: balanced renderer people whose identities nothing here (or any model of the world) was trained on
(pretrain_data.build_benchmark: identities 4,000,000 + 100,000 x cell + i), embedded by the same recogniser
and projected by each fitted model:

* leakage: fresh SVM, MLP and RF probes per attribute on identity-disjoint folds
  (synthface.evaluation.leakage), before and after;
* verification: every genuine pair and as many same-cell impostor pairs per cell, 10 identity-disjoint folds
  (synthface.evaluation.make_pairs / group_metrics): accuracy, TAR at FMR 1e-3, per-cell STD, SER, FDR.

The method's settings (METHOD) were chosen on a split of the training identities only (never on the test
people); see docs/experiments.md.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import SynthfaceError
from ..fileio import atomic_write, write_json_atomic
from .sensitivenets_variants import POOL_GRID, VARIANTS

# SensitiveNets settings of every fit (lam comes from the sweep); see the module docstring for their origin
METHOD = dict(hidden=(), margin=0.2, target="true_class", detectors="pool", pool_size=5, warmup_epochs=1,
              epochs=30, batch_size=64, lr=1e-3, per_identity=4, detector_hidden=0, detector_steps=150,
              detector_lr=1e-2)


@dataclass
class SensitiveNetsExperimentConfig:
    world_seed: int = 0
    render_size: int = 64             # renderer faces and the generator are 64x64 FFHQ-aligned
    ids_per_cell: int = 50            # training identities per group x gender cell
    images_per_id: int = 8
    bank_n: int = 8000                # latents labelled to fit the latent model (as `synthface demo`)
    variation_budget: int = 60        # attempts per variation (pretrain_data: 20 lets a hard identity stop all)
    variation_strength: float = 0.5
    refine_steps: int = 0             # the balanced set's variations refined through G (identity.refine; issue 25)
    bench_ids_per_cell: int = 100     # renderer test people per cell
    bench_images: int = 5
    recognizer: str = "world"
    lams: list = field(default_factory=lambda: [0.0, 0.1, 0.3, 1.0, 3.0])
    lam: float = 1.0                  # the model of the before/after tables (must be one of lams)
    method: dict = field(default_factory=dict)  # overrides of METHOD
    classifiers: list = field(default_factory=lambda: ["svm", "mlp", "rf", "knn"])
    folds: int = 5                    # identity-disjoint folds of the leakage probes
    n_boot: int = 200
    seed: int = 0
    threads: int = 1                  # torch threads (0: torch's default)
    # "synthetic": the synthface identity dataset (the experiment's question); "renderer": the same number of
    # balanced renderer people (identities RENDERER_TRAIN_FIRST+, disjoint from the test people), the control
    # that separates what the method can remove from what carries over from synthetic to real faces
    train_source: str = "synthetic"
    # issue 26 (synthface.experiments.sensitivenets_variants): SensitiveNets variants, the pool settings the
    # diverse ones choose from, the erasure baselines, and the selection on training identities
    variants: dict = field(default_factory=lambda: {k: dict(v) for k, v in VARIANTS.items()})
    pool_grid: list = field(default_factory=lambda: [dict(g) for g in POOL_GRID])
    baselines: list = field(default_factory=lambda: ["leace", "inlp"])
    inlp: dict = field(default_factory=lambda: {"n_iterations": 20})
    val_share: float = 0.2            # share of each cell's training identities held out for selection
    val_folds: int = 3                # identity-disjoint folds of the validation probes
    select_verif_drop: float = 0.03   # most validation verification a chosen setting may lose


RENDERER_TRAIN_FIRST = 6_000_000


QUICK = {"ids_per_cell": 12, "images_per_id": 5, "bank_n": 3000, "bench_ids_per_cell": 30, "bench_images": 4,
         "method": {"epochs": 15}}

DONE_WHEN = {"leak_gender_max": 0.60, "leak_group_max": 0.433, "raw_min": 0.90, "verif_drop_max": 0.03,
             "lam0_change_max": 0.005}


# ------------------------------------------------------------------------------ data

def _pretrain_config(cfg: SensitiveNetsExperimentConfig):
    """The pretrain experiment's data builders take its config; the fields they read are the same."""
    from .pretrain_data import PretrainConfig
    keep = {f.name for f in fields(PretrainConfig)} & {f.name for f in fields(cfg)}
    return PretrainConfig(**{k: getattr(cfg, k) for k in keep if k not in ("method", "threads")})


def attributes_of(cells) -> dict[str, np.ndarray]:
    """Gender and group of each cell name: "group=group1,gender=female" (datasets) or "group1/female"
    (the renderer benchmark)."""
    group, gender = [], []
    for c in cells:
        c = str(c)
        if "=" in c:
            d = dict(part.split("=", 1) for part in c.split(","))
            group.append(d["group"])
            gender.append(d["gender"])
        else:
            g, s = c.split("/")
            group.append(g)
            gender.append(s)
    return {"gender": np.array(gender), "group": np.array(group)}


def build_data(cfg: SensitiveNetsExperimentConfig, data: Path, log: Callable) -> tuple[Path, Path]:
    """(training dataset folder, renderer benchmark folder), each built once and reused by later runs with
    the same settings."""
    from ..assets import generator_path
    from ..generator import load_generator
    from .pretrain_data import build_balanced, build_benchmark

    pcfg = _pretrain_config(cfg)
    bench = build_benchmark(pcfg, data / "benchmark", log)
    if cfg.train_source == "renderer":
        return build_renderer_train(cfg, data / "renderer_train", log), bench
    if cfg.train_source != "synthetic":
        raise SynthfaceError(f"train_source {cfg.train_source!r}: use synthetic or renderer")
    G = load_generator(generator_path(), device="cpu")
    return build_balanced(pcfg, G, data / "balanced", log), bench


def build_renderer_train(cfg: SensitiveNetsExperimentConfig, path: Path, log: Callable) -> Path:
    """The control's training set: ids_per_cell balanced renderer people per cell x images_per_id, as a
    manifest (identities RENDERER_TRAIN_FIRST + cell stride + i: neither the test people nor any other
    experiment's)."""
    from .pretrain_data import build_renderer_set
    key = {"stage": "sensitivenets-renderer-train", "first": RENDERER_TRAIN_FIRST, **{k: getattr(cfg, k) for k in (
        "world_seed", "render_size", "ids_per_cell", "images_per_id")}}
    return build_renderer_set(path, key, cfg.world_seed, RENDERER_TRAIN_FIRST, cfg.ids_per_cell, cfg.images_per_id,
                              cfg.render_size, log, "renderer training set (control)")


def embed(cfg: SensitiveNetsExperimentConfig, folder: Path, cache: Path, log: Callable):
    """(X, identity, {gender, group}, items) of every image of a dataset folder (a manifest.jsonl, or the
    balanced set's rows.json), by the recogniser."""
    from ..evaluation import embeddings, load_items
    from ..evaluation.pairs import Items
    from ..identity import load_embedder

    if (folder / "rows.json").is_file():  # the balanced set: rows.json (path, identity, cell) beside its dataset
        rows = json.loads((folder / "rows.json").read_text())
        items = Items(folder, [r["path"] for r in rows], np.array([r["identity"] for r in rows]),
                      [r["cell"] for r in rows])
    else:
        items = load_items(folder)
    E = embeddings(load_embedder(cfg.recognizer), items, items.paths, cache, log=log)
    X = np.stack([E[p] for p in items.paths]).astype(np.float32)
    return X, np.asarray(items.identity), attributes_of(items.group), items


# ------------------------------------------------------------------------------ fitting and scoring

def method_settings(cfg: SensitiveNetsExperimentConfig) -> dict:
    from ..methods import SensitiveNets
    known = set(SensitiveNets().get_params())
    bad = sorted(set(cfg.method) - known)
    if bad:
        raise SynthfaceError(f"--set method=...: SensitiveNets has no setting {', '.join(bad)}")
    return {**METHOD, **cfg.method, "seed": cfg.seed}


def fit_lam(cfg: SensitiveNetsExperimentConfig, lam: float, X, ident, sens, path: Path, log: Callable):
    """SensitiveNets fitted at one lam, saved to `path`; a file written by an earlier run with the same
    settings and training embeddings is loaded instead."""
    import hashlib

    from ..methods import SensitiveNets

    params = {**method_settings(cfg), "lam": float(lam)}
    h = hashlib.sha256(np.ascontiguousarray(X).tobytes())
    h.update(json.dumps({"params": params, "ident": np.asarray(ident).tolist(),
                         "sens": {k: v.tolist() for k, v in sens.items()}}, sort_keys=True).encode())
    key = h.hexdigest()
    marker = path.with_suffix(".key")
    if path.is_file() and marker.is_file() and marker.read_text() == key:
        return SensitiveNets.load(path), True
    t0 = time.perf_counter()
    m = SensitiveNets(**params).fit(X, ident, sens, log=lambda s: log(f"  lam {lam:g}: {s}"))
    m.save(path)
    atomic_write(marker, lambda f: f.write(key.encode()))
    log(f"lam {lam:g}: fitted in {time.perf_counter() - t0:.0f}s")
    return m, False


def score(cfg: SensitiveNetsExperimentConfig, Z: np.ndarray, paths: list, ident, sens, pairs: list) -> dict:
    """Leakage (fresh probes) and verification/fairness (pair protocol) of test embeddings Z."""
    from ..evaluation import group_metrics, leakage, pair_scores
    from ..fairness import metrics as M

    leak = leakage(Z, sens, groups=ident, classifiers=tuple(cfg.classifiers), folds=cfg.folds, seed=cfg.seed,
                   n_boot=cfg.n_boot)
    s = pair_scores(dict(zip(paths, Z)), pairs)
    ver = verification_summary(group_metrics(s, pairs, target_fmr=1e-3, n_boot=cfg.n_boot, seed=cfg.seed))
    y = np.array([p["genuine"] for p in pairs], bool)
    ver["tar_at_fmr_1e-3_pooled"] = float(M.tar_at_fmr(s[y], s[~y], 1e-3))
    return {"leakage": leak, "verification": ver}


def verification_summary(r: dict) -> dict:
    """The figures of a group_metrics result the report uses (TAR and FDR at the global FMR 1e-3 threshold)."""
    gl = r["global"].get(f"{r['target_fmr']:g}") or {}
    tar = {k: 1 - v for k, v in gl.get("fnmr", {}).items()}
    return {"accuracy_mean": r["accuracy_mean"], "accuracy_std": r["accuracy_std"], "ser": r["ser"],
            "accuracy_per_cell": {k: v["accuracy"] for k, v in r["groups"].items()},
            "accuracy_ci95_per_cell": {k: v["accuracy_ci95"] for k, v in r["groups"].items()},
            "tar_at_fmr_1e-3_per_cell": tar, "fdr": gl.get("fdr"), "garbe": gl.get("garbe"),
            "threshold": gl.get("threshold")}


def max_leak(res: dict, attr: str) -> float:
    """The highest probe accuracy of an attribute (the criterion: every probe under the bar)."""
    return max(c["accuracy"] for c in res["leakage"]["attributes"][attr]["classifiers"].values())


def criteria(raw: dict, runs: dict, lam: float) -> dict:
    """The issue's done-when checks on the test set, each with its figures."""
    after = runs[lam]
    acc0 = raw["verification"]["accuracy_mean"]
    out = {
        "raw_leakage_above_90": {"gender": max_leak(raw, "gender"), "group": max_leak(raw, "group"),
                                 "min_over_probes": min(c["accuracy"] for a in raw["leakage"]["attributes"].values()
                                                        for c in a["classifiers"].values())},
        "gender_leakage_at_most_60": max_leak(after, "gender"),
        "group_leakage_at_most_43.3": max_leak(after, "group"),
        "verification_drop_at_most_3_points": acc0 - after["verification"]["accuracy_mean"],
        "lam0_change_at_most_0.5_points": (runs[0.0]["verification"]["accuracy_mean"] - acc0) if 0.0 in runs
        else None}
    out["met"] = {
        "raw_leakage_above_90": out["raw_leakage_above_90"]["min_over_probes"] > DONE_WHEN["raw_min"],
        "gender_leakage_at_most_60": out["gender_leakage_at_most_60"] <= DONE_WHEN["leak_gender_max"],
        "group_leakage_at_most_43.3": out["group_leakage_at_most_43.3"] <= DONE_WHEN["leak_group_max"],
        "verification_drop_at_most_3_points": out["verification_drop_at_most_3_points"] <= DONE_WHEN["verif_drop_max"],
        "lam0_change_at_most_0.5_points": (out["lam0_change_at_most_0.5_points"] is not None and
                                           abs(out["lam0_change_at_most_0.5_points"]) <= DONE_WHEN["lam0_change_max"])}
    return out


def _check_config(cfg: SensitiveNetsExperimentConfig) -> None:
    if cfg.train_source not in ("synthetic", "renderer"):
        raise SynthfaceError(f"train_source {cfg.train_source!r}: use synthetic (the synthface identity dataset) or "
                             "renderer (the control)")
    if cfg.ids_per_cell < cfg.folds or cfg.bench_ids_per_cell < max(cfg.folds, 4):
        raise SynthfaceError(f"ids_per_cell and bench_ids_per_cell need at least folds={cfg.folds} (and 4) "
                             "identities per cell")
    if cfg.images_per_id < 2 or cfg.bench_images < 2:
        raise SynthfaceError("images_per_id and bench_images need at least 2 (a triplet and a genuine pair)")
    if cfg.bench_ids_per_cell * cfg.bench_images * (cfg.bench_images - 1) // 2 < 20:
        raise SynthfaceError("the test set needs 20+ genuine pairs per cell for its verification figures: raise "
                             "bench_ids_per_cell or bench_images")
    if not cfg.lams or any(float(v) < 0 for v in cfg.lams):
        raise SynthfaceError(f"lams {cfg.lams}: give one or more weights >= 0")
    if float(cfg.lam) not in [float(v) for v in cfg.lams]:
        raise SynthfaceError(f"lam={cfg.lam} must be one of lams {cfg.lams}")
    method_settings(cfg)
    from ..methods import SensitiveNets
    from .sensitivenets_variants import check_variant_config
    check_variant_config(cfg, set(SensitiveNets().get_params()))


def make_config(quick: bool = False, overrides: Optional[dict] = None) -> SensitiveNetsExperimentConfig:
    cfg = SensitiveNetsExperimentConfig(**{k: v for k, v in QUICK.items()} if quick else {})
    names = {f.name for f in fields(SensitiveNetsExperimentConfig)}
    for k, v in (overrides or {}).items():
        if k not in names:
            raise SynthfaceError(f"--set {k}=...: the sensitivenets experiment has no setting {k!r}; it has "
                                 f"{', '.join(sorted(names))}")
        if k == "method" and quick:
            v = {**QUICK["method"], **v}
        setattr(cfg, k, v)
    _check_config(cfg)
    return cfg


def run(out, quick: bool = False, overrides: Optional[dict] = None, log: Callable = print) -> dict:
    import torch

    from ..evaluation import load_pairs, make_pairs, save_pairs

    cfg = make_config(quick, overrides)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out = Path(out)
    t0, started = time.perf_counter(), time.time()
    train_dir, bench_dir = build_data(cfg, out / "data", log)
    X, ident, sens, _ = embed(cfg, train_dir, out / "cache", log)
    Xb, ib, sb, items = embed(cfg, bench_dir, out / "cache", log)
    t_data = time.perf_counter() - t0
    log(f"training: {len(X)} embeddings of {len(np.unique(ident))} identities; test: {len(Xb)} of "
        f"{len(np.unique(ib))} renderer people")
    pairs_path = out / "pairs.csv"
    n_pairs = cfg.bench_ids_per_cell * cfg.bench_images * (cfg.bench_images - 1) // 2
    if not pairs_path.is_file():
        save_pairs(make_pairs(items, n_pairs, n_pairs, 10, cfg.seed), pairs_path)
    pairs = load_pairs(pairs_path)
    t1 = time.perf_counter()
    raw = score(cfg, Xb, items.paths, ib, sb, pairs)
    runs, fits, reused = {}, {}, []
    for lam in sorted({float(v) for v in cfg.lams}):
        m, was = fit_lam(cfg, lam, X, ident, sens, out / "models" / f"lam_{lam:g}.sensitivenets", log)
        if was:
            reused.append(f"models/lam_{lam:g}.sensitivenets")
        runs[lam] = score(cfg, m.transform(Xb), items.paths, ib, sb, pairs)
        fits[lam] = {"history": m.history_, "seconds": getattr(m, "fit_seconds_", None)}
        log(f"lam {lam:g}: gender {max_leak(runs[lam], 'gender'):.3f}, group {max_leak(runs[lam], 'group'):.3f} "
            f"(best probe), verification {runs[lam]['verification']['accuracy_mean']:.4f}")
    from .sensitivenets_variants import run_variants
    issue26 = run_variants(cfg, method_settings(cfg), (X, ident, sens, Xb, raw), runs,
                           lambda Z: score(cfg, Z, items.paths, ib, sb, pairs), out, log)
    info = {"seconds": time.perf_counter() - t0, "data_seconds": t_data, "fit_score_seconds": time.perf_counter() - t1,
            "reused": reused, "pairs": len(pairs), "train_images": int(len(X)),
            "train_identities": int(len(np.unique(ident))), "test_images": int(len(Xb)),
            "test_identities": int(len(np.unique(ib))), "embedding_dim": int(X.shape[1]),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (load average at the end "
                       f"{os.getloadavg()[0]:.1f}), torch {torch.__version__} with {torch.get_num_threads()} threads"}
    command = "synthface experiment sensitivenets --out " + str(out) + (" --quick" if quick else "") + "".join(
        f" --set {k}={json.dumps(v)}" for k, v in (overrides or {}).items())
    res = {"experiment": "sensitivenets", "command": command, "config": asdict(cfg),
           "method": method_settings(cfg), "info": info, "raw": raw,
           "runs": {f"{k:g}": v for k, v in runs.items()}, "fits": {f"{k:g}": v for k, v in fits.items()},
           "criteria": criteria(raw, runs, float(cfg.lam)), "issue26": issue26}
    write_report(res, out)
    res["summary"] = {"out": str(out), "seconds": round(info["seconds"], 1), "met": res["criteria"]["met"],
                      "group_leakage": res["criteria"]["group_leakage_at_most_43.3"],
                      "gender_leakage": res["criteria"]["gender_leakage_at_most_60"],
                      "verification_drop": res["criteria"]["verification_drop_at_most_3_points"]}
    log(f"wrote {out}/report.md, report.html and results.json in {info['seconds']:.0f}s")
    return res


# ------------------------------------------------------------------------------ report

def plot(res: dict) -> bytes:
    """Left: each probe's accuracy per attribute against lam (chance dotted, the bar dashed); right: the
    trade-off, verification accuracy and TAR against the highest group / gender leakage, one point per lam."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lams = list(res["runs"])
    x = np.arange(len(lams) + 1)
    labels = ["raw"] + [f"lam {v}" for v in lams]
    allruns = [res["raw"]] + [res["runs"][k] for k in lams]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12.5, 4.4))
    for a, colour in (("gender", "C0"), ("group", "C3")):
        r0 = res["raw"]["leakage"]["attributes"][a]
        for clf, mark in zip(r0["classifiers"], "os^v"):
            acc = [100 * r["leakage"]["attributes"][a]["classifiers"][clf]["accuracy"] for r in allruns]
            ax.plot(x, acc, marker=mark, color=colour, label=f"{a} {clf}", alpha=0.85)
        ax.axhline(100 * r0["chance_balanced"], color=colour, ls=":", lw=1)
        ax.axhline(100 * r0["chance_balanced"] + 10, color=colour, ls="--", lw=1)
    ax.set_xticks(x, labels)
    ax.set(ylabel="probe accuracy % (identity-disjoint folds)", ylim=(20, 102),
           title="leakage on the renderer test people (dotted: chance, dashed: +10)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    for r, lab in zip(allruns, labels):
        v = r["verification"]
        for a, colour in (("group", "C3"), ("gender", "C0")):
            lk = 100 * max(c["accuracy"] for c in r["leakage"]["attributes"][a]["classifiers"].values())
            ax2.scatter(lk, 100 * v["accuracy_mean"], color=colour, marker="o")
            ax2.annotate(lab, (lk, 100 * v["accuracy_mean"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax2.scatter(lk, 100 * v["tar_at_fmr_1e-3_pooled"], color=colour, marker="x")
    ax2.scatter([], [], color="C3", marker="o", label="group: verification accuracy")
    ax2.scatter([], [], color="C3", marker="x", label="group: TAR @ FMR 1e-3")
    ax2.scatter([], [], color="C0", marker="o", label="gender: verification accuracy")
    ax2.scatter([], [], color="C0", marker="x", label="gender: TAR @ FMR 1e-3")
    ax2.set(xlabel="highest probe accuracy % (privacy: lower is better)", ylabel="% (utility)",
            title="privacy-utility trade-off over lam")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _pct(v, d=1):
    return "-" if v is None else f"{100 * v:.{d}f}"


def _leak_rows(res: dict, lam: str) -> list[str]:
    rows = []
    for a, r0 in res["raw"]["leakage"]["attributes"].items():
        r1 = res["runs"][lam]["leakage"]["attributes"][a]
        for clf, c0 in r0["classifiers"].items():
            c1 = r1["classifiers"][clf]
            rows.append(f"| {a} | {clf} | {_pct(c0['accuracy'])} [{_pct(c0['accuracy_ci'][0])}, "
                        f"{_pct(c0['accuracy_ci'][1])}] | **{_pct(c1['accuracy'])}** [{_pct(c1['accuracy_ci'][0])}, "
                        f"{_pct(c1['accuracy_ci'][1])}] | {_pct(c1['balanced_accuracy'])} | "
                        f"{_pct(r0['chance_balanced'])} / {_pct(r0['chance_balanced'] + 0.1)} |")
    return rows


def _verif_row(name: str, v: dict) -> str:
    fdr = "-" if v["fdr"] is None else f"{v['fdr']:.3f}"
    # SER is undefined (nan) when a cell makes no error at all: say so instead of printing nan
    ser = "- (a cell at 100 %)" if v["ser"] != v["ser"] else f"{v['ser']:.3f}"
    return (f"| {name} | {_pct(v['accuracy_mean'], 2)} | {_pct(v['tar_at_fmr_1e-3_pooled'])} | "
            f"{_pct(v['accuracy_std'], 2)} | {ser} | {fdr} |")


def report_markdown(res: dict, png: Optional[str]) -> str:
    cfg, info, crit = res["config"], res["info"], res["criteria"]
    lam = f"{float(cfg['lam']):g}"
    L = ["# SensitiveNets on balanced synthetic identities (issue 15)", "",
         f"Command: `{res['command']}`  ", f"Machine: {info['machine']}  ",
         f"Time: {info['seconds']:.0f} s in all (data and embeddings {info['data_seconds']:.0f} s, fits and scoring "
         f"{info['fit_score_seconds']:.0f} s)" + (f"; models reused from an earlier run into this folder: "
                                                   f"{', '.join(info['reused'])}" if info["reused"] else ""), "",
         (f"Training: {info['train_identities']} synthface identities ({cfg['ids_per_cell']} per group x gender "
          "cell, demo generator, the demo's identity settings)" if cfg.get("train_source", "synthetic") == "synthetic"
          else f"Training (the renderer control, not the experiment's question): {info['train_identities']} balanced "
          f"renderer people ({cfg['ids_per_cell']} per cell, disjoint from the test people)")
         + f" x {cfg['images_per_id']} images = {info['train_images']} "
         f"embeddings of the `{cfg['recognizer']}` recogniser ({info['embedding_dim']}-d). Test: "
         f"{info['test_identities']} renderer people ({cfg['bench_ids_per_cell']} per cell, balanced, used for "
         f"nothing else) x {cfg['bench_images']} images; leakage probes fitted from scratch on "
         f"{cfg['folds']} identity-disjoint folds of the test people; {info['pairs']} verification pairs (every "
         "genuine pair and as many same-cell impostors per cell, 10 identity-disjoint folds). CIs: 95 % bootstrap "
         "over identities (leakage).", "",
         "SensitiveNets settings: " + ", ".join(f"{k}={v}" for k, v in res["method"].items()) + ".", "",
         f"## Leakage before and after (lam = {lam})", "",
         "| attribute | probe | raw accuracy % [CI] | projected accuracy % [CI] | projected balanced acc. % "
         "| chance / bar % |", "|---|---|---|---|---|---|", *_leak_rows(res, lam), "",
         "## Verification and per-cell fairness", "",
         "| embedding | mean accuracy % | TAR @ FMR 1e-3 % | STD | SER | FDR |", "|---|---|---|---|---|---|",
         _verif_row("raw", res["raw"]["verification"])]
    L += [_verif_row(f"lam {k}", r["verification"]) for k, r in res["runs"].items()]
    L += ["", "Mean accuracy: the six cells' 10-fold accuracies averaged; TAR at the threshold where all "
          "impostor pairs give FMR 1e-3; STD (points) and SER (highest cell error / lowest) of the cells' "
          "accuracies; FDR at the same global threshold (1 is fair).", "",
          "## Privacy over lam", "",
          "| lam | " + " | ".join(f"{a} {c}" for a, r in res["raw"]["leakage"]["attributes"].items()
                                  for c in r["classifiers"]) + " | verification % |",
          "|---|" + "---|" * (1 + sum(len(r["classifiers"]) for r in res["raw"]["leakage"]["attributes"].values()))]
    for name, r in [("raw", res["raw"])] + list(res["runs"].items()):
        cells = [_pct(c["accuracy"]) for a in r["leakage"]["attributes"].values() for c in a["classifiers"].values()]
        L.append(f"| {name} | " + " | ".join(cells) + f" | {_pct(r['verification']['accuracy_mean'], 2)} |")
    if png:
        L += ["", f"![leakage over lam and the privacy-utility trade-off]({png})"]
    m = crit["met"]
    L += ["", "## Done-when checks (issue 15)", "",
          f"- raw embeddings: every probe above 90 %: lowest {_pct(crit['raw_leakage_above_90']['min_over_probes'])} %"
          f" -> **{'met' if m['raw_leakage_above_90'] else 'not met'}**",
          f"- after (lam {lam}): gender, highest probe {_pct(crit['gender_leakage_at_most_60'])} % (<= 60) -> "
          f"**{'met' if m['gender_leakage_at_most_60'] else 'not met'}**",
          f"- after (lam {lam}): group, highest probe {_pct(crit['group_leakage_at_most_43.3'])} % (<= 43.3) -> "
          f"**{'met' if m['group_leakage_at_most_43.3'] else 'not met'}**",
          f"- verification drop {100 * crit['verification_drop_at_most_3_points']:.2f} points (<= 3) -> "
          f"**{'met' if m['verification_drop_at_most_3_points'] else 'not met'}**",
          "- lam 0 changes verification by " + ("-" if crit["lam0_change_at_most_0.5_points"] is None else
                                                f"{100 * crit['lam0_change_at_most_0.5_points']:+.2f}")
          + f" points (<= 0.5) -> **{'met' if m['lam0_change_at_most_0.5_points'] else 'not met'}**"]
    L += ["", "## Training (held-out training identities, per epoch)", "",
          "| lam | fit s | last epoch: triplet loss | removal | detector accuracy on held-out training ids |",
          "|---|---|---|---|---|"]
    for k, f in res["fits"].items():
        h = f["history"][-1] if f["history"] else {}
        acc = ", ".join(f"{a} {_pct(v)}" for a, v in h.get("detector_acc", {}).items())
        L.append(f"| {k} | {f['seconds'] or 0:.0f} | {h.get('triplet', 0):.4f} | {h.get('removal', 0):.4f} | "
                 f"{acc} |")
    return "\n".join(L) + "\n"


def write_report(res: dict, out: Path) -> None:
    from ..evaluation.report import to_html

    from .sensitivenets_variants import markdown, plot_curve

    png = plot(res)
    atomic_write(out / "tradeoff.png", lambda f: f.write(png))
    md = report_markdown(res, "tradeoff.png")
    if "issue26" in res:
        curve = plot_curve(res)
        atomic_write(out / "tradeoff_curve.png", lambda f: f.write(curve))
        md += "\n".join(markdown(res, "tradeoff_curve.png")) + "\n"
    page = to_html(md, out).replace("<title>synthface evaluation</title>",
                                    "<title>sensitivenets experiment</title>")
    atomic_write(out / "report.md", lambda f: f.write(md.encode()))
    atomic_write(out / "report.html", lambda f: f.write(page.encode()))
    write_json_atomic(out / "results.json", res)
