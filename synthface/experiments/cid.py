"""The CID bias-injection sweep (issue 16; fairness-methods.md sections 2.4 and 6).

Task: smiling, on the demo world's rendered faces, whose smile is drawn per image independently of
the person. Training sets of a fixed size and a fixed number of positives are drawn so that a
fraction rho of the positives come from a few over-represented people (chosen among those with
the glasses habit) who give no negatives: at high rho, "looks like one of these people" predicts
"smiling" in the training data, and so does "wears glasses" (their smiling images are those with
glasses on). The model sees the eyes region (where glasses are) and the mouth region (where the
smile is) stacked as channels, and trains on each image and its mirror image: on the whole 64x64
render, or on one crop from brows to chin, a small CNN stays near chance on smiling within this
budget (it memorises the training images instead). Each set is trained with the same budget and
seeds under

    erm          uniform weights
    cid          CID weights from the world recogniser's embeddings, bandwidth a factor times the
                 recogniser's median same-person distance on calibration people who are in neither
                 the training pool nor the test set: the factor chosen from bandwidth_grid on those
                 people's validation images, or fixed (bandwidth_factor); never tuned on the test set
    cid-default  CID with the issue's default bandwidth (per class, median 10th-neighbour distance)
    oracle       inverse identity frequency within the class (uses the true identities)

and evaluated on an identity-disjoint test set of renderer people (balanced demographics; issue 26's
design, cid_design.py: unbalanced label mixes per person and look-alikes of the dominant people, or
issue 16's, half of each person's images smiling): accuracy, per-identity accuracy std, worst 5 % / 10 %
of people, over all test people and over the people the bias touches. With `bandwidth_grid`, CID's
bandwidth factor is chosen per training set on calibration people's validation images.
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..errors import SynthfaceError
from ..evaluation.identity_robustness import identity_robustness
from ..fileio import atomic_write, write_json_atomic
from ..methods.cid import CIDWeights, oracle_identity_weights
from ..methods.weighting import bias_injected_indices
from ..train.attribute import build_attribute_model, fit_attribute, predict_logits
from .cid_data import ImageTensors, mirrored, model_file, render_images, to_model_input
from .cid_design import choose_factor, design_lines, designed_people, label_draws, score

METHODS = ("erm", "cid", "cid-default", "oracle")
# identity index ranges of the world: pool, test and calibration people never overlap
_TEST_BASE, _CALIB_BASE = 1_000_000, 2_000_000
# within those ranges: look-alikes' own indices (test and validation) and the validation people
_LOOKALIKE_OFFSET, _VAL_OFFSET = 500_000, 200_000


@dataclass
class CIDExperimentConfig:
    world_seed: int = 0
    render_size: int = 64            # rendered FFHQ-aligned faces (what the recogniser sees)
    model_size: int = 64             # the attribute model's input side
    # the parts of the face the model looks at (top, bottom, left, right fractions), stacked as channels:
    # eyes (rows 20-44, columns 14-50 of a 64x64 render) and mouth (rows 36-60). Chosen on validation
    # renderer people (ERM, rho 0, 2,400 images): mouth alone 0.72, one brows-to-chin crop 0.57, these
    # two stacked 0.65, stacked with mirror images 0.79 (a single crop or the whole render overfits)
    region: list = field(default_factory=lambda: [0.3125, 0.6875, 0.21875, 0.78125, 0.5625, 0.9375, 0.21875, 0.78125])
    mirror: bool = True              # train on each image and its mirror image (same label and weight)
    n_dominant: int = 5              # over-represented people (all with the glasses habit)
    dominant_glasses: bool = True    # their smiling images only where they wear glasses (80 % of the time)
    n_train: int = 2000              # training-set size at every rho (half positives)
    pool_people: int = 600           # other people in the training pool
    pool_images: int = 4             # images per other person
    test_people: int = 300           # identity-disjoint test people
    test_images: int = 8             # per test person
    # the test design (issue 26, cid_design.py): each person's fraction of smiling images, cycled over
    # the people ([0.5]: issue 16's, half of everyone's images smiling), and look-alikes of the dominant
    # people (their faces blended with a fresh person's, weight lookalike_blend on the fresh one)
    test_smile_mix: list = field(default_factory=lambda: [0.25, 0.75])
    test_lookalikes: int = 50
    lookalike_blend: float = 0.25
    calib_people: int = 100          # for the recogniser's same-person distance (CID bandwidth)
    calib_images: int = 4
    # the CID bandwidth factor is chosen from this grid per training set, by worst-10 % identity accuracy
    # on validation images of calibration people (val_people + val_lookalikes, in the test set's design,
    # in neither pool nor test set); []: bandwidth_factor, fixed (issue 16)
    bandwidth_grid: list = field(default_factory=lambda: [0.25, 0.5, 1.0])
    val_people: int = 100
    val_lookalikes: int = 20
    rhos: list = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 0.9])
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    methods: list = field(default_factory=lambda: list(METHODS))
    recognizer: str = "world"
    bandwidth_factor: float = 0.5    # CID bandwidth = this x the median same-person distance
    max_ratio: float = 10.0
    epochs: int = 25
    batch: int = 32
    lr: float = 3e-3
    width: int = 8
    embedding_dim: int = 32
    threads: int = 1                 # torch threads (0: torch default); 1 was 9x faster than 2 on a busy 2-core box
    # the second test set (cid_identity.py): a synthface identity dataset, scored against a smile labeller
    identity_eval: bool = True
    idset_ids_per_cell: int = 30     # the pretrain experiment's --quick balanced set
    idset_images_per_id: int = 6
    idset_bank_n: int = 3000
    idset_seed: int = 0
    idset_refine_steps: int = 0      # the identity dataset's variations refined through G (identity.refine; issue 25)
    labeller_people: int = 1000      # renderer people the smile labeller is trained on
    labeller_images: int = 4
    labeller_epochs: int = 25
    cache_dir: str = ""              # identity dataset and labeller (reused across runs); "": OUT/cache


QUICK = {"n_train": 2400, "pool_images": 8, "pool_people": 350, "test_people": 100, "calib_people": 40, "rhos": [0.0, 0.9],
         "methods": ["erm", "cid", "oracle"], "test_lookalikes": 20, "val_people": 40, "val_lookalikes": 10}


# ------------------------------------------------------------------------------ data

def _pool(cfg: CIDExperimentConfig, world) -> dict:
    """The training pool: the dominant people's smiling images and the other pool people's images."""
    from ..world import take
    from ..world.dataset import image_labels
    n_pos = int(round(cfg.n_train / 2))
    need = math.ceil(max(cfg.rhos) * n_pos / cfg.n_dominant)  # positives each dominant person must give
    # dominant people: the first pool people with the glasses habit
    cand = world.identities(range(200))
    dom_idx = [int(i) for i, h in zip(cand["index"], cand["glasses_habit"]) if h][:cfg.n_dominant]
    if len(dom_idx) < cfg.n_dominant:
        raise SynthfaceError(f"n_dominant={cfg.n_dominant}: fewer glasses wearers among 200 candidates")
    others = list(range(200, 200 + cfg.pool_people))
    dom = world.identities(dom_idx)
    draws = label_draws(world, dom, max(8 * need, 16))
    rows, js = [], []
    for r in range(cfg.n_dominant):
        pos_j = np.flatnonzero((draws["smile"][r] == 1) & ((draws["glasses"][r] == 1) | (not cfg.dominant_glasses)))
        pos_j = pos_j[:need]
        if len(pos_j) < need:
            raise SynthfaceError("a dominant person has too few smiling images drawn; raise the draw count")
        rows += [r] * len(pos_j)
        js += pos_j.tolist()
    dom_rows, dom_j = np.array(rows), np.array(js)
    oth = world.identities(others)
    oth_rows = np.repeat(np.arange(len(others)), cfg.pool_images)
    oth_j = np.tile(np.arange(cfg.pool_images), len(others))
    pool_imgs = np.concatenate([render_images(world, dom, dom_rows, dom_j, cfg.render_size),
                                render_images(world, oth, oth_rows, oth_j, cfg.render_size)])
    lab = [image_labels(world, take(dom, dom_rows), dom_j), image_labels(world, take(oth, oth_rows), oth_j)]
    return {"images": pool_imgs,
            "identity": np.r_[dom["index"][dom_rows], oth["index"][oth_rows]],
            "smile": np.r_[lab[0]["smile"], lab[1]["smile"]], "glasses": np.r_[lab[0]["glasses"], lab[1]["glasses"]],
            "dominant": np.asarray(dom_idx), "dominant_people": dom, "n_dominant_images": len(dom_rows)}


def build_data(cfg: CIDExperimentConfig, log: Callable = print) -> dict:
    """Pool (dominant + other people), test people, calibration people (for the recogniser's
    same-person distance) and, when a bandwidth grid is given, calibration people with validation
    images in the test set's design (cid_design.designed_people)."""
    from ..world import BALANCED, World
    world = World(seed=cfg.world_seed, distribution=BALANCED)
    t0 = time.perf_counter()
    pool = _pool(cfg, world)
    log(f"pool: {len(pool['images'])} images ({pool['n_dominant_images']} smiling images of {cfg.n_dominant} "
        f"dominant glasses wearers, {cfg.pool_people * cfg.pool_images} of {cfg.pool_people} others) in "
        f"{time.perf_counter() - t0:.0f}s")
    t0 = time.perf_counter()
    design = {"images": cfg.test_images, "mixes": list(cfg.test_smile_mix), "render_size": cfg.render_size,
              "dominant": pool["dominant_people"], "blend": cfg.lookalike_blend}
    test = designed_people(world, _TEST_BASE, cfg.test_people, n_lookalikes=cfg.test_lookalikes,
                           lookalike_first=_TEST_BASE + _LOOKALIKE_OFFSET, **design)
    log(f"test: {len(test['identity'])} images of {cfg.test_people} people and {cfg.test_lookalikes} look-alikes "
        f"({len(np.unique(test['identity'][test['touched'] == 1]))} touched: glasses habit or look-alike), "
        f"smiling mixes {cfg.test_smile_mix}, in {time.perf_counter() - t0:.0f}s")
    cp = world.identities(range(_CALIB_BASE, _CALIB_BASE + cfg.calib_people))
    crow = np.repeat(np.arange(cfg.calib_people), cfg.calib_images)
    calib = {"images": render_images(world, cp, crow, np.tile(np.arange(cfg.calib_images), cfg.calib_people),
                                     cfg.render_size), "identity": cp["index"][crow]}
    val = None
    if cfg.bandwidth_grid:
        val = designed_people(world, _CALIB_BASE + _VAL_OFFSET, cfg.val_people, n_lookalikes=cfg.val_lookalikes,
                              lookalike_first=_CALIB_BASE + _VAL_OFFSET + _LOOKALIKE_OFFSET, **design)
    return {"pool": pool, "test": test, "calib": calib, "val": val}


def same_person_bandwidth(emb: np.ndarray, identity: np.ndarray, factor: float) -> tuple[float, float]:
    """(factor x median same-person distance, that median) of unit embeddings."""
    d = []
    for v in np.unique(identity):
        e = emb[identity == v]
        g = np.sqrt(np.maximum(2 - 2 * e @ e.T, 0))
        d.extend(g[np.triu_indices(len(e), 1)].tolist())
    med = float(np.median(d))
    return factor * med, med


# ------------------------------------------------------------------------------ the sweep

def method_weights(method: str, y, identity, emb, bandwidth: float, max_ratio: float) -> tuple[np.ndarray, dict]:
    if method == "erm":
        return np.ones(len(y)), {}
    if method == "oracle":
        return oracle_identity_weights(identity, y, normalize="per_class"), {}
    est = CIDWeights(bandwidth=bandwidth if method == "cid" else None, max_ratio=max_ratio)
    w = est.fit_transform(emb, y)
    return w, {"bandwidth": [float(b) for b in est.bandwidth_]}


def _fit_predict(cfg: CIDExperimentConfig, x: torch.Tensor, y, w, seed: int, run_dir: Path, eval_x: list):
    """Train one model (the sweep's network, budget and seed) on (x, y, w); its predicted classes on
    every tensor of eval_x, and the network."""
    torch.manual_seed(seed)
    model = build_attribute_model("small", 2, cfg.embedding_dim, cfg.width, cfg.model_size, cfg.region)
    trainer = fit_attribute(model, ImageTensors(*mirrored(cfg, x, y, w)), run_dir, cfg.epochs, cfg.batch, lr=cfg.lr,
                            seed=seed, device="cpu")
    net = trainer.model_.model.eval()
    shutil.rmtree(run_dir, ignore_errors=True)
    return [predict_logits(net, ImageTensors(e, np.zeros(len(e), int))).argmax(1) for e in eval_x], net


def _train_method(cfg, method: str, data: dict, xs: dict, idx, emb, same: float, seed: int, tmp: Path):
    """One method on one training set: (its row's figures, the trained network). CID with a grid
    trains one model per factor and keeps the one the calibration people's validation images
    prefer; the others' test figures are kept as a diagnosis only (`grid_test`)."""
    pool = data["pool"]
    y, ident = pool["smile"][idx], pool["identity"][idx]
    pos, dom = y == 1, np.isin(ident, pool["dominant"])
    grid = cfg.bandwidth_grid if method == "cid" and cfg.bandwidth_grid else [cfg.bandwidth_factor]
    evals = [xs["test"]] + ([xs["val"]] if xs.get("val") is not None else [])
    tried = {}
    for f in grid:
        w, extra = method_weights(method, y, ident, emb[idx], f * same, cfg.max_ratio)
        preds, net = _fit_predict(cfg, xs["pool"][idx], y, w, seed, tmp / f"{method}-{f}-{seed}", evals)
        val = score(data["val"], preds[1]) if len(preds) > 1 else None
        tried[f] = (score(data["test"], preds[0]), val, w, extra, net)
    f = choose_factor({k: v[1] for k, v in tried.items()}) if len(grid) > 1 else grid[0]
    test_m, val_m, w, extra, net = tried[f]
    row = {**test_m, **({"val_" + k: v for k, v in val_m.items()} if val_m else {}), **extra,
           "dominant_weight_share": float(w[pos & dom].sum() / w[pos].sum()),
           "train_glasses_rate_positives": float(pool["glasses"][idx][pos].mean())}
    if method == "cid":
        row["bandwidth_factor"] = f
    if len(grid) > 1:
        row["grid_val"] = {str(k): {m: v[1][m] for m in ("accuracy", "worst_10pct_identity_accuracy")}
                           for k, v in tried.items()}
        row["grid_test"] = {str(k): {m: v[0].get(m) for m in ("accuracy", "worst_10pct_identity_accuracy",
                                                               "touched_worst_10pct_identity_accuracy")}
                            for k, v in tried.items()}
    return row, net


def run_sweep(cfg: CIDExperimentConfig, data: dict, emb: np.ndarray, same: float, log: Callable = print,
              models_dir: Optional[Path] = None) -> list:
    """Train every (seed, rho, method) and score it on the renderer test set; each trained model's
    weights go to models_dir (if given), named by model_file. `same`: the recogniser's median
    same-person distance on the calibration people (the CID bandwidth is a factor times it)."""
    pool = data["pool"]
    xs = {"pool": to_model_input(pool["images"], cfg.model_size),
          "test": to_model_input(data["test"]["images"], cfg.model_size),
          "val": None if data.get("val") is None else to_model_input(data["val"]["images"], cfg.model_size)}
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="synthface-cid-"))
    total = len(cfg.seeds) * len(cfg.rhos) * len(cfg.methods)
    t_start = time.perf_counter()
    try:
        for seed in cfg.seeds:
            for rho in cfg.rhos:
                idx = bias_injected_indices(pool["identity"], pool["smile"], rho, cfg.n_train,
                                            dominant=pool["dominant"], seed=seed).indices
                for method in cfg.methods:
                    t0 = time.perf_counter()
                    fig, net = _train_method(cfg, method, data, xs, idx, emb, same, seed, tmp)
                    row = {"method": method, "rho": rho, "seed": seed, "train_seconds": time.perf_counter() - t0,
                           **fig}
                    rows.append(row)
                    if models_dir is not None:
                        models_dir.mkdir(parents=True, exist_ok=True)
                        torch.save(net.state_dict(), models_dir / model_file(row))
                    done = len(rows)
                    eta = (time.perf_counter() - t_start) / done * (total - done)
                    log(f"[{done}/{total}] seed {seed} rho {rho:.2f} {method:<11} acc {row['accuracy']:.3f} "
                        f"worst10 {row['worst_10pct_identity_accuracy']:.3f} touched worst10 "
                        f"{row.get('touched_worst_10pct_identity_accuracy', float('nan')):.3f} dominant share "
                        f"{row['dominant_weight_share']:.2f}"
                        + (f" factor {row['bandwidth_factor']}" if "bandwidth_factor" in row else "")
                        + f" ({row['train_seconds']:.1f}s, ~{eta / 60:.1f} min left)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def weight_diagnostics(cfg: CIDExperimentConfig, data: dict, emb: np.ndarray, bandwidth: float) -> dict:
    """Without training: for every method (trained or not), rho and seed, the dominant people's share
    of the positive class's total weight and the Kish effective size of the positive class.
    {method: {rho: {"dominant_share": [mean, std], "effective_positives": [mean, std]}}}."""
    pool = data["pool"]
    acc: dict = {}
    for seed in cfg.seeds:
        for rho in cfg.rhos:
            idx = bias_injected_indices(pool["identity"], pool["smile"], rho, cfg.n_train,
                                        dominant=pool["dominant"], seed=seed).indices
            y, ident = pool["smile"][idx], pool["identity"][idx]
            pos, dom = y == 1, np.isin(ident, pool["dominant"])
            for method in METHODS:
                w, _ = method_weights(method, y, ident, emb[idx], bandwidth, cfg.max_ratio)
                wp = w[pos]
                acc.setdefault(method, {}).setdefault(str(rho), []).append(
                    (float(w[pos & dom].sum() / wp.sum()), float(wp.sum() ** 2 / (wp ** 2).sum())))
    return {m: {r: {"dominant_share": [float(np.mean([v[0] for v in vals])), float(np.std([v[0] for v in vals]))],
                    "effective_positives": [float(np.mean([v[1] for v in vals])), float(np.std([v[1] for v in vals]))]}
                for r, vals in per.items()} for m, per in acc.items()}


METRICS = [("accuracy", "accuracy"), ("identity_accuracy_std", "per-identity accuracy std"),
           ("worst_10pct_identity_accuracy", "worst-10 % identity accuracy"),
           ("touched_worst_10pct_identity_accuracy", "worst-10 % identity accuracy of the touched people "
            "(glasses habit or look-alike)"),
           ("touched_accuracy", "accuracy on the touched people"),
           ("lookalike_accuracy", "accuracy on the look-alikes"),
           ("worst_5pct_identity_accuracy", "worst-5 % identity accuracy"),
           ("accuracy_glasses_habit", "accuracy on glasses-habit people"),
           ("accuracy_no_habit", "accuracy on the other people"),
           ("dominant_weight_share", "dominant people's share of positive weight")]


def aggregate(rows: list, cfg: CIDExperimentConfig) -> dict:
    """{method: {rho: {metric: [mean, std over seeds]}}}."""
    out = {}
    for method in cfg.methods:
        out[method] = {}
        for rho in cfg.rhos:
            sel = [r for r in rows if r["method"] == method and r["rho"] == rho]
            if not sel:
                continue
            keys = [k for k, _ in METRICS] + ["identity_accuracy_mean", "false_smile_rate_glasses_habit",
                                              "bandwidth_factor", "val_worst_10pct_identity_accuracy"]
            keys += [k for k in sel[0] if k.startswith("idset_")]  # the identity dataset's, when evaluated
            out[method][str(rho)] = {
                k: [float(np.mean([r[k] for r in sel])), float(np.std([r[k] for r in sel], ddof=1))
                    if len(sel) > 1 else 0.0] for k in keys if all(k in r for r in sel)}
    return out


def _beyond_spread(agg: dict, rho, key: str) -> Optional[dict]:
    """CID's mean minus ERM's at one rho, and whether it exceeds the larger seed std of the two."""
    e, c = agg["erm"].get(str(rho), {}).get(key), agg["cid"].get(str(rho), {}).get(key)
    if e is None or c is None:
        return None
    margin = c[0] - e[0]
    return {"cid_minus_erm": margin, "seed_spread": max(e[1], c[1]), "beyond_spread": margin > max(e[1], c[1])}


def acceptance(agg: dict, cfg: CIDExperimentConfig) -> dict:
    """The issues' done-when criteria, read off the aggregate. Issue 16: at every rho >= 0.5, CID's
    mean worst-10 % accuracy beats ERM's by more than the larger seed std of the two, and CID's drop
    in worst-10 % accuracy from the smallest to the largest rho is smaller than ERM's. Issue 26: the
    same margin at rho 0.5, over all test people and over the touched people (where the design has
    them)."""
    key, tkey = "worst_10pct_identity_accuracy", "touched_worst_10pct_identity_accuracy"
    if "erm" not in agg or "cid" not in agg:
        return {}
    out = {"per_rho": {}, "touched_per_rho": {}}
    for rho in cfg.rhos:
        if rho < 0.5:
            continue
        out["per_rho"][str(rho)] = _beyond_spread(agg, rho, key)
        t = _beyond_spread(agg, rho, tkey)
        if t is not None:
            out["touched_per_rho"][str(rho)] = t
    lo, hi = str(min(cfg.rhos)), str(max(cfg.rhos))
    drops = {m: agg[m][lo][key][0] - agg[m][hi][key][0] for m in agg}
    out["drop_low_to_high_rho"] = drops
    out["cid_beats_erm_at_rho_ge_0.5"] = all(v["beyond_spread"] for v in out["per_rho"].values())
    out["cid_drop_smaller_than_erm"] = drops["cid"] < drops["erm"]
    if 0.5 in cfg.rhos:
        out["cid_beats_erm_at_rho_0.5"] = out["per_rho"]["0.5"]["beyond_spread"]
        if "0.5" in out["touched_per_rho"]:
            out["cid_beats_erm_touched_at_rho_0.5"] = out["touched_per_rho"]["0.5"]["beyond_spread"]
    return out


# ------------------------------------------------------------------------------ report

def plot(agg: dict, cfg: CIDExperimentConfig) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("accuracy", "accuracy"), ("identity_accuracy_std", "per-identity accuracy std"),
            ("worst_10pct_identity_accuracy", "worst-10 % identity accuracy"),
            ("dominant_weight_share", "dominant people's share of\nthe positive class's weight")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4))
    styles = {"erm": ("tab:red", "o"), "cid": ("tab:blue", "s"), "cid-default": ("tab:gray", "v"),
              "oracle": ("tab:green", "^")}
    for ax, (k, title) in zip(axes, keys):
        for method, per in agg.items():
            rhos = [float(r) for r in per]
            mean = np.array([per[r][k][0] for r in per])
            std = np.array([per[r][k][1] for r in per])
            colour, marker = styles.get(method, (None, "o"))
            ax.errorbar(rhos, mean, yerr=std, label=method, color=colour, marker=marker, capsize=3, lw=1.4, ms=4)
        ax.set(xlabel="rho (dominant people's share of the positives)", title=title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _table(agg: dict, cfg: CIDExperimentConfig) -> list[str]:
    head = "| method | " + " | ".join(f"rho {r}" for r in cfg.rhos) + " |"
    lines = []
    for k, title in METRICS:
        if not any(k in v for per in agg.values() for v in per.values()):
            continue
        lines += [f"**{title}** (mean ± std over seeds {cfg.seeds})", "", head,
                  "|---|" + "---|" * len(cfg.rhos)]
        for method, per in agg.items():
            lines.append(f"| {method} | " + " | ".join(
                f"{per[str(r)][k][0]:.3f} ± {per[str(r)][k][1]:.3f}" if k in per.get(str(r), {}) else ""
                for r in cfg.rhos)
                + " |")
        lines.append("")
    return lines


def report_markdown(res: dict, png_name: Optional[str] = None) -> str:
    cfg = CIDExperimentConfig(**res["config"])
    agg, acc, info = res["aggregate"], res["acceptance"], res["info"]
    lines = [
        "# CID bias-injection sweep (issues 16 and 26)", "",
        f"Command: `{res['command']}`  ", f"Machine: {info['machine']}  ",
        f"Time: {info['seconds']:.0f} s ({info['runs']} training runs, {info['run_seconds']:.0f} s of training)", "",
        "Smiling vs not on the demo world's rendered faces. Each training set has "
        f"{cfg.n_train} images (half smiling); a fraction rho of the smiling ones come from {cfg.n_dominant} people "
        "who all have the glasses habit and give no non-smiling images"
        f"{' (their smiling images with glasses on)' if cfg.dominant_glasses else ''}. "
        f"Model: a SmallCNN (width {cfg.width}) on the region(s) {cfg.region} (top, bottom, left, right; several "
        f"stacked as channels) of the {cfg.model_size}x{cfg.model_size} face"
        f"{', trained on each image and its mirror image' if cfg.mirror else ''}, {cfg.epochs} epochs, batch "
        f"{cfg.batch}, AdamW lr {cfg.lr}, the same seeds and data order for every method.", "",
        *design_lines(cfg, info), "",
    ]
    if png_name:
        lines += [f"![metrics versus rho]({png_name})", ""]
    lines += _table(agg, cfg)
    wd = res.get("weight_diagnostics")
    if wd:
        lines += ["**Weights alone** (no training; every method, mean over seeds; cid at the fixed bandwidth_factor "
                  f"{cfg.bandwidth_factor}): dominant people's share of the positive class's weight / Kish effective "
                  f"number of positives (of {cfg.n_train // 2})", "",
                  "| method | " + " | ".join(f"rho {r}" for r in cfg.rhos) + " |", "|---|" + "---|" * len(cfg.rhos)]
        for m, per in wd.items():
            lines.append(f"| {m} | " + " | ".join(
                f"{per[str(r)]['dominant_share'][0]:.3f} / {per[str(r)]['effective_positives'][0]:.0f}"
                for r in cfg.rhos) + " |")
        lines.append("")
    from .cid_identity import report_lines
    lines += report_lines(res)
    if acc:
        lines += ["## Done-when criteria", "",
                  "- CID's worst-10 % identity accuracy beats ERM's beyond the seed spread at every rho >= 0.5 "
                  f"(issue 16): **{'yes' if acc['cid_beats_erm_at_rho_ge_0.5'] else 'no'}** ("
                  + "; ".join(f"rho {r}: {v['cid_minus_erm']:+.3f} vs spread {v['seed_spread']:.3f}"
                              for r, v in acc["per_rho"].items()) + ")",
                  *[f"- at rho 0.5, {what}: CID {v['cid_minus_erm']:+.3f} against ERM, seed spread "
                    f"{v['seed_spread']:.3f}: **{'yes' if v['beyond_spread'] else 'no'}**"
                    for what, v in (("worst-10 % over all test people", acc["per_rho"].get("0.5")),
                                    ("worst-10 % over the touched people", acc["touched_per_rho"].get("0.5")))
                    if v],
                  f"- drop of worst-10 % accuracy from rho {min(cfg.rhos)} to {max(cfg.rhos)}: "
                  + ", ".join(f"{m} {d:+.3f}" for m, d in acc["drop_low_to_high_rho"].items())
                  + f"; CID's smaller than ERM's: **{'yes' if acc['cid_drop_smaller_than_erm'] else 'no'}**", ""]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ entry point

def make_config(quick: bool = False, overrides: Optional[dict] = None) -> CIDExperimentConfig:
    cfg = CIDExperimentConfig(**(QUICK if quick else {}))
    names = {f.name for f in fields(CIDExperimentConfig)}
    for k, v in (overrides or {}).items():
        if k not in names:
            raise SynthfaceError(f"--set {k}=...: the cid experiment has no setting {k!r}; it has "
                                 f"{', '.join(sorted(names))}")
        setattr(cfg, k, v)
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad:
        raise SynthfaceError(f"methods {bad}: choose from {', '.join(METHODS)}")
    if not cfg.rhos or any(not 0 <= r < 1 for r in cfg.rhos) or not cfg.seeds:
        raise SynthfaceError("give rhos in [0, 1) and at least one seed")
    return cfg


def run(out, quick: bool = False, overrides: Optional[dict] = None, log: Callable = print) -> dict:
    cfg = make_config(quick, overrides)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = build_data(cfg, log=log)
    from ..identity.embedders import load_embedder
    embedder = load_embedder(cfg.recognizer)
    te = time.perf_counter()
    emb = embedder.embed(data["pool"]["images"])
    bandwidth, same = same_person_bandwidth(embedder.embed(data["calib"]["images"]), data["calib"]["identity"],
                                            cfg.bandwidth_factor)
    log(f"embedded the pool and calibration people in {time.perf_counter() - te:.0f}s; recogniser same-person "
        f"distance {same:.3f}, CID bandwidth {bandwidth:.3f}")
    wdiag = weight_diagnostics(cfg, data, emb, bandwidth)
    rows = run_sweep(cfg, data, emb, same, log=log, models_dir=out / "models")
    idset = None
    if cfg.identity_eval:
        from .cid_identity import identity_evaluation
        idset = identity_evaluation(cfg, data, rows, out / "models", Path(cfg.cache_dir or out / "cache"), log)
    agg = aggregate(rows, cfg)
    acc = acceptance(agg, cfg)
    default_bw = sorted({round(b, 3) for r in rows if r["method"] == "cid-default" for b in r.get("bandwidth", [])})
    info = {"seconds": time.perf_counter() - t0, "runs": len(rows),
            "run_seconds": sum(r["train_seconds"] for r in rows),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (load average at the end "
                       f"{os.getloadavg()[0]:.1f}), torch {torch.__version__} with {torch.get_num_threads()} threads",
            "bandwidth": bandwidth, "same_person_distance": same,
            "default_bandwidth": f"{min(default_bw):.3f}-{max(default_bw):.3f}" if default_bw else "not run",
            "chosen_factors": chosen_factors(rows, cfg),
            "pool_images": int(len(data["pool"]["identity"])), "test_images": int(len(data["test"]["identity"]))}
    command = "synthface experiment cid --out " + str(out) + (" --quick" if quick else "") + "".join(
        f" --set {k}={json.dumps(v)}" for k, v in (overrides or {}).items())
    res = {"experiment": "cid", "command": command, "config": asdict(cfg), "info": info, "aggregate": agg,
           "acceptance": acc, "weight_diagnostics": wdiag, "identity_dataset": idset, "runs": rows}
    return _write(res, out, log)


def chosen_factors(rows: list, cfg: CIDExperimentConfig) -> dict:
    """{rho: the CID bandwidth factor chosen on the calibration people, per seed}."""
    return {str(rho): [r["bandwidth_factor"] for r in sorted(rows, key=lambda r: r["seed"])
                       if r["method"] == "cid" and r["rho"] == rho and "grid_val" in r] for rho in cfg.rhos}


def _write(res: dict, out: Path, log: Callable) -> dict:
    cfg = CIDExperimentConfig(**res["config"])
    agg, acc, info = res["aggregate"], res["acceptance"], res["info"]
    png = plot(agg, cfg)
    atomic_write(out / "metrics_vs_rho.png", lambda f: f.write(png))
    md = report_markdown(res, "metrics_vs_rho.png")
    atomic_write(out / "report.md", lambda f: f.write(md.encode()))
    from ..evaluation.report import to_html
    page = to_html(md, out).replace("<title>synthface evaluation</title>", "<title>CID experiment</title>")
    atomic_write(out / "report.html", lambda f: f.write(page.encode()))
    write_json_atomic(out / "results.json", res)
    key = "worst_10pct_identity_accuracy"
    res["summary"] = {"out": str(out), "seconds": round(info["seconds"], 1), "bandwidth": round(info["bandwidth"], 4),
                      "worst10_at_max_rho": {m: round(agg[m][str(max(cfg.rhos))][key][0], 4) for m in agg},
                      **{k: v for k, v in acc.items() if k != "per_rho"}}
    log(f"wrote {out}/report.md, report.html and results.json in {info['seconds']:.0f}s")
    return res


def combine(folders, out, log: Callable = print) -> dict:
    """One report from runs of the same configuration split over processes or machines (e.g. one
    seed each, `--set seeds=[1]`): their runs pooled, aggregated and written to `out`."""
    parts = [json.loads((Path(f) / "results.json").read_text()) for f in folders]
    base = dict(parts[0]["config"])
    for p in parts[1:]:
        diff = sorted(k for k in base if k not in ("seeds", "threads") and p["config"].get(k) != base[k])
        if diff:
            raise SynthfaceError(f"cannot combine runs whose settings differ in {', '.join(diff)}")
    base["seeds"] = sorted({s for p in parts for s in p["config"]["seeds"]})
    cfg = CIDExperimentConfig(**base)
    rows = [r for p in parts for r in p["runs"]]
    agg = aggregate(rows, cfg)
    info = dict(parts[0]["info"])
    info.update({"seconds": max(p["info"]["seconds"] for p in parts), "runs": len(rows),
                 "run_seconds": sum(r["train_seconds"] for r in rows),
                 "machine": "; ".join(sorted({p["info"]["machine"] for p in parts})),
                 "chosen_factors": chosen_factors(rows, cfg)})
    wd: dict = {}
    for p in parts:  # seeds pooled: means averaged over the parts
        for m, per in (p.get("weight_diagnostics") or {}).items():
            for r, v in per.items():
                wd.setdefault(m, {}).setdefault(r, []).append(v)
    wdiag = {m: {r: {k: [float(np.mean([x[k][0] for x in vals])), float(np.std([x[k][0] for x in vals]))]
                     for k in vals[0]} for r, vals in per.items()} for m, per in wd.items()}
    command = " && ".join(p["command"] for p in parts) + f" (combined into {out})"
    res = {"experiment": "cid", "command": command, "config": asdict(cfg), "info": info, "aggregate": agg,
           "acceptance": acceptance(agg, cfg), "weight_diagnostics": wdiag,
           "identity_dataset": parts[0].get("identity_dataset"), "runs": rows}
    return _write(res, Path(out), log)
