"""Issue 26 parts of the SensitiveNets experiment: concept-erasure baselines (LEACE, INLP), SensitiveNets
variants (the issue-15 pool, a diverse re-initialised detector pool, and that pool on top of a LEACE
pre-erasure), settings chosen on a validation split of the TRAINING identities, and the trade-off curve.

Selection (never on the renderer test people): the training identities are split per group x gender cell
into a fit part (1 - val_share) and a validation part (val_share). Every candidate (variant x lam x pool
setting) is fitted on the fit part and scored on the validation identities with the same fresh probes as
the test (on `val_folds` identity-disjoint folds) and a verification accuracy over all their genuine pairs
and as many impostor pairs (best-threshold, balanced). The chosen candidate of a variant is the one with
the lowest leakage score (the largest excess over chance of any probe on either attribute) among those
that lose at most `select_verif_drop` verification accuracy on validation; if none does, the one losing
the least. Its settings are then fitted on all training identities and scored on the test people.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import SynthfaceError
from ..fileio import atomic_write

# name -> SensitiveNets overrides on top of the experiment's METHOD (lam comes from the sweep)
VARIANTS = {"sn": {}, "sn_diverse": {"detectors": "diverse"},
            "sn_diverse_leace": {"detectors": "diverse", "pre_erasure": "leace"}}
POOL_GRID = [{"detector_widths": [0, 32, 128], "reinit_every": 3}, {"detector_widths": [0, 64], "reinit_every": 5}]
LABELS = {"sn": "SensitiveNets (issue-15 pool)", "sn_diverse": "SensitiveNets (diverse pool)",
          "sn_diverse_leace": "SensitiveNets (diverse pool) + LEACE", "leace": "LEACE", "inlp": "INLP"}
BAR_ABOVE_CHANCE = 0.15   # issue 26: every fresh probe <= chance + 15 points
VERIF_LOSS_MAX = 0.03     # at <= 3 points verification loss


def candidates(cfg, variant: str) -> list[dict]:
    """The settings one variant's selection tries: each lam, times the pool grid for a diverse pool."""
    base = dict(cfg.variants[variant])
    grid = cfg.pool_grid if base.get("detectors") == "diverse" else [{}]
    return [{**base, **g, "lam": float(lam)} for g in grid for lam in cfg.lams]


def fit_cached(cls, params: dict, X, ident, sens, path: Path, log: Callable, label: str):
    """cls(**params) fitted on (X, ident, sens) and saved to path; a file from an earlier run with the same
    settings and data is loaded instead. Returns (model, reused)."""
    h = hashlib.sha256(np.ascontiguousarray(X).tobytes())
    h.update(json.dumps({"cls": cls.__name__, "params": params, "ident": np.asarray(ident).tolist(),
                         "sens": {k: np.asarray(v).tolist() for k, v in sens.items()}}, sort_keys=True,
                        default=str).encode())
    key, marker = h.hexdigest(), path.with_suffix(".key")
    if path.is_file() and marker.is_file() and marker.read_text() == key:
        return cls.load(path), True
    t0 = time.perf_counter()
    m = cls(**params).fit(X, ident, sens)
    path.parent.mkdir(parents=True, exist_ok=True)
    m.save(path)
    atomic_write(marker, lambda f: f.write(key.encode()))
    log(f"{label}: fitted in {time.perf_counter() - t0:.1f}s")
    return m, False


def split_training(ident, sens, share: float, seed: int) -> np.ndarray:
    """Boolean mask of the validation rows: `share` of each cell's training identities (at least 1)."""
    rng = np.random.default_rng(seed + 26)
    cell = np.char.add(np.char.add(sens["gender"].astype(str), "/"), sens["group"].astype(str))
    val = np.zeros(len(ident), bool)
    for c in np.unique(cell):
        ids = np.unique(ident[cell == c])
        pick = rng.permutation(ids)[: max(1, int(round(share * len(ids))))]
        val |= np.isin(ident, pick)
    return val


def pair_verification(Z: np.ndarray, ident: np.ndarray, seed: int) -> float:
    """Best-threshold accuracy on all genuine pairs and as many random impostor pairs (balanced)."""
    Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    iu = np.triu_indices(len(Z), 1)
    same = (ident[:, None] == ident[None, :])[iu]
    s = (Z @ Z.T)[iu]
    gen, imp = s[same], s[~same]
    imp = np.random.default_rng(seed).choice(imp, size=min(len(imp), max(len(gen), 1)), replace=False)
    best = 0.0
    for t in np.quantile(np.r_[gen, imp], np.linspace(0, 1, 401)):
        best = max(best, 0.5 * ((gen >= t).mean() + (imp < t).mean()))
    return float(best)


def leak_score(leak: dict) -> float:
    """The largest excess over chance (1/#classes) of any probe on any attribute."""
    return max(c["accuracy"] - r["chance_balanced"] for r in leak["attributes"].values()
               for c in r["classifiers"].values())


def validation_score(cfg, Zv, iv, sv) -> dict:
    from ..evaluation import leakage
    leak = leakage(Zv, sv, groups=iv, classifiers=tuple(cfg.classifiers), folds=cfg.val_folds, seed=cfg.seed,
                   n_boot=10)
    return {"leak_above_chance": leak_score(leak), "verification": pair_verification(Zv, iv, cfg.seed),
            "max_probe": {a: max(c["accuracy"] for c in r["classifiers"].values())
                          for a, r in leak["attributes"].items()}}


def select(cfg, base_params: dict, X, ident, sens, out: Path, log: Callable) -> dict:
    """Per variant: every candidate's validation figures and the chosen settings (module docstring)."""
    from ..methods import SensitiveNets

    val = split_training(ident, sens, cfg.val_share, cfg.seed)
    fit_part = (X[~val], ident[~val], {k: v[~val] for k, v in sens.items()})
    Xv, iv, sv = X[val], ident[val], {k: v[val] for k, v in sens.items()}
    raw = validation_score(cfg, Xv, iv, sv)
    log(f"selection: {int((~val).sum())} fit / {int(val.sum())} validation embeddings of training identities; "
        f"raw validation verification {raw['verification']:.4f}, leakage {raw['leak_above_chance']:+.3f}")
    out_sel = {"raw": raw, "fit_identities": int(len(np.unique(fit_part[1]))),
               "validation_identities": int(len(np.unique(iv))), "variants": {}}
    for name in cfg.variants:
        rows = []
        for j, cand in enumerate(candidates(cfg, name)):
            params = {**base_params, **cand}
            m, _ = fit_cached(SensitiveNets, params, *fit_part, out / "selection" / f"{name}_{j}.sensitivenets", log,
                              f"selection {name} #{j} (lam {cand['lam']:g})")
            r = validation_score(cfg, m.transform(Xv), iv, sv)
            rows.append({"settings": cand, **r, "verification_drop": raw["verification"] - r["verification"]})
            log(f"  {name} #{j} lam {cand['lam']:g}: validation leakage {r['leak_above_chance']:+.3f}, "
                f"verification {r['verification']:.4f}")
        ok = [r for r in rows if r["verification_drop"] <= cfg.select_verif_drop]
        best = (min(ok, key=lambda r: (r["leak_above_chance"], r["verification_drop"])) if ok
                else min(rows, key=lambda r: r["verification_drop"]))
        out_sel["variants"][name] = {"candidates": rows, "chosen": best["settings"], "within_drop": bool(ok)}
    return out_sel


def fit_baselines(cfg, X, ident, sens, out: Path, log: Callable) -> dict:
    """LEACE and INLP fitted on all training identities."""
    from ..methods import INLP, LEACE
    models = {}
    for name in cfg.baselines:
        if name == "leace":
            models[name], _ = fit_cached(LEACE, {}, X, ident, sens, out / "models" / "leace.safetensors", log, "LEACE")
        elif name == "inlp":
            params = {"seed": cfg.seed, **cfg.inlp}
            models[name], _ = fit_cached(INLP, params, X, ident, sens, out / "models" / "inlp.safetensors", log, "INLP")
        else:
            raise SynthfaceError(f"baselines: unknown {name!r}; use leace and/or inlp")
    return models


def verification_loss(raw: dict, r: dict) -> float:
    return raw["verification"]["accuracy_mean"] - r["verification"]["accuracy_mean"]


def issue26_check(raw: dict, r: dict) -> dict:
    """Every fresh probe <= chance + 15 on every attribute, at <= 3 points verification loss."""
    worst = {a: max(c["accuracy"] for c in x["classifiers"].values()) - x["chance_balanced"]
             for a, x in r["leakage"]["attributes"].items()}
    loss = verification_loss(raw, r)
    return {"max_above_chance": worst, "verification_loss": loss,
            "met": bool(all(v <= BAR_ABOVE_CHANCE for v in worst.values()) and loss <= VERIF_LOSS_MAX)}


def check_variant_config(cfg, known: set) -> None:
    if not isinstance(cfg.variants, dict):
        raise SynthfaceError("--set variants=...: give a JSON object of name -> SensitiveNets settings")
    for name, over in cfg.variants.items():
        bad = sorted(set(over) - known) if isinstance(over, dict) else ["(not an object)"]
        if bad:
            raise SynthfaceError(f"--set variants: {name} has unknown SensitiveNets settings {', '.join(bad)}")
    for g in cfg.pool_grid:
        if not isinstance(g, dict) or set(g) - known:
            raise SynthfaceError(f"--set pool_grid: each entry must be SensitiveNets settings, got {g!r}")
    if not 0 < cfg.val_share < 1:
        raise SynthfaceError(f"val_share must be in (0, 1), got {cfg.val_share}")


def run_variants(cfg, base_params: dict, data: tuple, sn_runs: dict, score_fn: Callable, out: Path,
                 log: Callable) -> dict:
    """Selection, then each variant's lam sweep with its chosen pool settings (fitted on all training
    identities, scored on the test people) and the baselines. data = (X, ident, sens, Xb, raw_test).
    sn_runs: the issue-15 sweep (the "sn" variant with default settings), reused when the settings match."""
    from ..methods import SensitiveNets

    X, ident, sens, Xb, raw = data
    t0 = time.perf_counter()
    sel = select(cfg, base_params, X, ident, sens, out, log)
    t_sel = time.perf_counter() - t0
    variants = {}
    for name in cfg.variants:
        chosen = sel["variants"][name]["chosen"]
        fixed = {k: v for k, v in chosen.items() if k != "lam"}
        sweep = {}
        for lam in sorted({float(v) for v in cfg.lams}):
            if not fixed and lam in sn_runs:
                sweep[f"{lam:g}"] = sn_runs[lam]
                continue
            params = {**base_params, **fixed, "lam": lam}
            m, _ = fit_cached(SensitiveNets, params, X, ident, sens, out / "models" / f"{name}_lam_{lam:g}.sensitivenets",
                              log, f"{name} lam {lam:g}")
            sweep[f"{lam:g}"] = score_fn(m.transform(Xb))
        variants[name] = {"settings": chosen, "sweep": sweep, "chosen": sweep[f"{chosen['lam']:g}"]}
        variants[name]["check"] = issue26_check(raw, variants[name]["chosen"])
        log(f"{name}: chosen {chosen}; test {variants[name]['check']}")
    baselines = {}
    for name, m in fit_baselines(cfg, X, ident, sens, out, log).items():
        r = score_fn(m.transform(Xb))
        info = {"n_removed": int(m.n_removed_)} if name == "inlp" else {"rank": int(m.rank_)}
        baselines[name] = {**r, "model": info, "check": issue26_check(raw, r)}
        log(f"{name}: test {baselines[name]['check']}")
    return {"selection": sel, "variants": variants, "baselines": baselines, "selection_seconds": t_sel,
            "seconds": time.perf_counter() - t0}


def plot_curve(res: dict) -> bytes:
    """Per attribute: highest fresh-probe accuracy against verification loss; each variant's lam sweep as a
    line (its chosen lam circled), the baselines and the raw embedding as points, the issue's box dashed."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw, v26 = res["raw"], res["issue26"]
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.6))
    for ax, attr in zip(axes, ("gender", "group")):
        chance = raw["leakage"]["attributes"][attr]["chance_balanced"]

        def pt(r):
            lk = max(c["accuracy"] for c in r["leakage"]["attributes"][attr]["classifiers"].values())
            return 100 * verification_loss(raw, r), 100 * lk

        for (name, v), colour in zip(v26["variants"].items(), ("C0", "C2", "C3", "C4")):
            lams = list(v["sweep"])
            xy = np.array([pt(v["sweep"][k]) for k in lams])
            ax.plot(xy[:, 0], xy[:, 1], marker="o", color=colour, label=LABELS.get(name, name))
            for (x, y), k in zip(xy, lams):
                ax.annotate(k, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            cx, cy = pt(v["chosen"])
            ax.scatter([cx], [cy], s=160, facecolors="none", edgecolors=colour, linewidths=1.5)
        for (name, b), mark in zip(v26["baselines"].items(), ("s", "D", "^")):
            ax.scatter(*pt(b), marker=mark, color="k", s=50, label=LABELS.get(name, name))
        ax.scatter(*pt(raw), marker="*", color="C1", s=120, label="raw")
        ax.axhline(100 * (chance + BAR_ABOVE_CHANCE), color="grey", ls="--", lw=1)
        ax.axhline(100 * chance, color="grey", ls=":", lw=1)
        ax.axvline(100 * VERIF_LOSS_MAX, color="grey", ls="--", lw=1)
        ax.set(xlabel="verification loss, points (raw - method)", ylabel="highest fresh-probe accuracy %",
               title=f"{attr}: renderer test people (dashed: chance + 15, 3 points)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _probe_cells(r: dict) -> list[str]:
    return [f"{100 * c['accuracy']:.1f}" for a in r["leakage"]["attributes"].values() for c in a["classifiers"].values()]


def markdown(res: dict, png: str) -> list[str]:
    """The report's issue-26 section."""
    raw, v26 = res["raw"], res["issue26"]
    sel = v26["selection"]
    heads = [f"{a} {c}" for a, r in raw["leakage"]["attributes"].items() for c in r["classifiers"]]
    L = ["", "## Issue 26: erasure baselines and SensitiveNets against a diverse detector pool", "",
         f"Settings chosen on training identities only: {sel['fit_identities']} fit / "
         f"{sel['validation_identities']} validation identities (per cell); the candidate with the lowest "
         "validation leakage (largest excess over chance of any probe) among those losing <= "
         f"{100 * res['config']['select_verif_drop']:.0f} points of validation verification (else the one losing "
         "least), then refitted on all training identities. The renderer test people were not used to choose.", "",
         "| method | settings | " + " | ".join(heads) + " | verification % | loss (points) | issue-26 bar |",
         "|---|---|" + "---|" * len(heads) + "---|---|---|",
         f"| raw | - | " + " | ".join(_probe_cells(raw)) + f" | {100 * raw['verification']['accuracy_mean']:.2f} | 0 | - |"]
    rows = [(LABELS.get(k, k), json.dumps(b["model"]), b) for k, b in v26["baselines"].items()]
    rows += [(LABELS.get(k, k), json.dumps(v["settings"]), v["chosen"] | {"check": v["check"]})
             for k, v in v26["variants"].items()]
    for label, settings, r in rows:
        L.append(f"| {label} | `{settings}` | " + " | ".join(_probe_cells(r)) +
                 f" | {100 * r['verification']['accuracy_mean']:.2f} | {100 * r['check']['verification_loss']:.2f} | "
                 f"{'met' if r['check']['met'] else 'not met'} |")
    L += ["", "Bar: every fresh probe <= chance + 15 (gender 65 %, group 48.3 %) at <= 3 points verification loss.",
          "", "### lam sweeps on the test people (chosen pool settings)", "",
          "| variant | lam | " + " | ".join(heads) + " | verification % |", "|---|---|" + "---|" * (len(heads) + 1)]
    for k, v in v26["variants"].items():
        for lam, r in v["sweep"].items():
            L.append(f"| {LABELS.get(k, k)} | {lam} | " + " | ".join(_probe_cells(r)) +
                     f" | {100 * r['verification']['accuracy_mean']:.2f} |")
    L += ["", f"![fresh-probe leakage against verification loss]({png})", "",
          "### Validation (training identities) figures of every candidate", "",
          f"Raw: leakage {100 * sel['raw']['leak_above_chance']:+.1f} points above chance, verification "
          f"{100 * sel['raw']['verification']:.2f} %.", "",
          "| variant | settings | leakage above chance (points) | verification % | chosen |", "|---|---|---|---|---|"]
    for k, v in sel["variants"].items():
        for c in v["candidates"]:
            L.append(f"| {LABELS.get(k, k)} | `{json.dumps(c['settings'])}` | {100 * c['leak_above_chance']:+.1f} | "
                     f"{100 * c['verification']:.2f} | {'**yes**' if c['settings'] == v['chosen'] else ''} |")
    L.append(f"\nSelection {v26['selection_seconds']:.0f} s, issue-26 part in all {v26['seconds']:.0f} s.")
    return L
