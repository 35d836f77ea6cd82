"""How many mutually distinct identities a generator can supply per cell, before generating.

`estimate_capacity` draws the first `n_candidates` candidates of every cell exactly as identity
selection does (`_draw_candidates`, `_screen`: same seeds, same order, same label check), runs the
same greedy acceptance on them (the observed accepted-vs-candidates curve), and fits a model of
greedy capacity that it extrapolates to budgets far beyond what was drawn.

The model (mean field, homogeneous within each pair of cells). A candidate of cell a passes the
label check with probability r_a; two label-passing candidates of cells a and b "collide"
(cosine >= threshold) with probability P_ab, independently of everything else. Selection
compares a candidate with every identity accepted so far in any cell, so with n_b identities
accepted in cell b, a passing candidate of cell a is accepted with probability
prod_b (1 - P_ab)^n_b = exp(-sum_b lam_ab n_b), lam = -ln(1 - P). Cells advance together (the
visiting order interleaves them, one candidate index j at a time), so in expectation

    dn_a/dj = r_a exp(-sum_b lam_ab n_b),     n_a(0) = 0,

integrated numerically (a cell stops at its requested count). For one cell this is
n(j) = ln(1 + lam r j) / lam, and N identities need about (exp(lam N) - 1) / (lam r) candidates:
capacity grows only logarithmically with the budget once lam N exceeds a few.

P_ab is the fraction of label-passing candidate pairs (within a cell: distinct pairs) at or above
the threshold. What the model leaves out: candidates are not exchangeable. Accepted identities are
spread apart (their collision regions overlap less than random ones': fewer acceptances than the
model), and real candidates cluster (sparse regions keep accepting: more). So the greedy run observed
on the drawn candidates calibrates it: per cell, kappa_a is the maximum-likelihood factor on row
lam_a. that explains the observed accept/reject sequence (kappa = 1: the pair rates alone explain
it), with its standard error from the Fisher information. The central estimate uses kappa * lam;
its ends take the wider of two intervals, the pair rates' bootstrap over candidates (which also
resamples the pass rate) and kappa +- 1.96 standard errors.

Checked against the greedy run itself: on the demo world (6 cells, thresholds 0.45 / 0.6 / 0.75),
fitted on the first 150 or 300 candidates per cell, selection's greedy on 800 stayed inside the
band for every cell; the central estimate was 6-16 % low over all cells (per cell -34 % to +10 %):
clustering, which the homogeneous model extrapolates only at the scale it was measured on. That is why `reachable`
calls a request clearly out of reach only when even the optimistic end falls short by a factor.

Every figure depends on (seed, cells, n_candidates, threshold) alone.
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from ..errors import SynthfaceError
from ..latent.cells import spec_name
from ..utils import keyed_rng, log_stderr, progress_bar
from .identities import _Acceptance, _draw_candidates, _screen, _visiting_order

ENDS = ("central", "optimistic", "pessimistic")  # "pairs" (uncalibrated) is also stored
DEFAULT_BUDGETS = (1_000, 10_000, 100_000, 1_000_000)
OUT_OF_REACH_FACTOR = 0.5  # clearly out of reach: the optimistic end gets less than this share of N
MAX_CANDIDATES = 1e15      # beyond this many candidates per cell, "needed" is reported as unreachable
_STEP = 0.05               # largest change of an acceptance exponent per (midpoint) integration step


# ------------------------------------------------------------------ drawing (as selection does)

def estimate_capacity(model, G, verifier, embedder, specs: Sequence[Mapping[str, str]], threshold: float,
                      n_candidates: int = 300, seed: int = 0, accept_confidence: Optional[float] = None,
                      truncation: float = 1.0, batch_size: int = 64, n_per_cell: Optional[int] = None,
                      budgets: Sequence[int] = DEFAULT_BUDGETS, n_boot: int = 200, progress: bool = True,
                      log: Callable[[str], None] = log_stderr, anchors: Optional[Mapping] = None) -> dict:
    """Per cell: label pass rate, collision probabilities (within the cell and to the other cells),
    the observed greedy accepted-vs-candidates curve on the first `n_candidates` candidates, and
    the model's expected identities at `budgets` candidates per cell (three ends), plus the
    candidates needed for `n_per_cell` identities when it is given. JSON-ready; see the module
    docstring for the model. Feed the result to `expected_identities`, `candidates_needed`,
    `reachable` or `capacity_check`."""
    if not -1 <= threshold <= 1:
        raise SynthfaceError(f"the separation threshold is a cosine in [-1, 1], got {threshold}")
    log(f"capacity: {n_candidates} candidates in each of {len(specs)} cells (separation < {threshold:.3f})")
    names, ok, emb = draw_candidates(model, G, verifier, embedder, specs, n_candidates, seed, accept_confidence,
                                     truncation, batch_size, progress, anchors)
    conf = model.confidence if accept_confidence is None else accept_confidence
    est = fit_capacity(names, ok, emb, threshold, n_per_cell=n_per_cell, budgets=budgets, n_boot=n_boot, seed=seed)
    est.update({"seed": seed, "accept_confidence": conf, "truncation": truncation})
    return est


def draw_candidates(model, G, verifier, embedder, specs: Sequence[Mapping[str, str]], n_candidates: int,
                    seed: int = 0, accept_confidence: Optional[float] = None, truncation: float = 1.0,
                    batch_size: int = 64, progress: bool = True,
                    anchors: Optional[Mapping] = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(cell names, ok [K, n], emb [K, n, D]) of the first n candidates of each cell: selection's own
    candidates (same seeds, batches, order and label check); rows of failed candidates are zero."""
    if n_candidates < 2:
        raise SynthfaceError(f"capacity needs at least 2 candidates per cell, got {n_candidates}")
    conf = model.confidence if accept_confidence is None else accept_confidence
    names = [spec_name(s) for s in specs]
    if len(set(names)) != len(names):
        raise SynthfaceError("the same cell is requested twice")
    for s in specs:
        model.matching_cells(s)
    K = len(specs)
    ok = np.zeros((K, n_candidates), bool)
    emb: Optional[np.ndarray] = None
    next_j = [0] * K
    bar = progress_bar(n_candidates * K, "candidates", unit="cand", enabled=progress)
    try:
        # The same batches and visiting order as select_identities, so these are its first candidates.
        while min(next_j) < n_candidates:
            active = [c for c in range(K) if next_j[c] < n_candidates]
            per = max(1, batch_size // len(active))
            order = _visiting_order(active, next_j, per, n_candidates)
            for c in active:
                next_j[c] = min(n_candidates, next_j[c] + per)
            _, _, imgs = _draw_candidates(model, G, specs, names, order, seed, truncation, batch_size, anchors)
            ok_b, emb_b, _ = _screen(model, verifier, embedder, specs, order, imgs, conf)
            if emb is None and emb_b.shape[1]:
                emb = np.zeros((K, n_candidates, emb_b.shape[1]), np.float32)
            for k, (c, j) in enumerate(order):
                ok[c, j] = ok_b[k]
                if ok_b[k]:
                    emb[c, j] = emb_b[k]
            bar.update(len(order))
    finally:
        bar.close()
    return names, ok, (np.zeros((K, n_candidates, 1), np.float32) if emb is None else emb)


# ------------------------------------------------------------------ fitting (pure, on candidates)

def greedy_curves(names: Sequence[str], ok: np.ndarray, emb: np.ndarray, threshold: float) -> np.ndarray:
    """[K, n] identities accepted in each cell after its first j+1 candidates, by selection's own
    greedy acceptance (`_Acceptance`) visiting the candidates in selection's order."""
    K, n = ok.shape
    state = _Acceptance(list(names), n, threshold, None, None)
    next_j, per = [0] * K, max(1, 64 // K)
    while next_j[0] < n:  # selection's batches (the result does not depend on them)
        order = _visiting_order(list(range(K)), next_j, per, n)
        next_j = [min(n, j + per) for j in next_j]
        cs, js = np.array([c for c, _ in order]), np.array([j for _, j in order])
        state.visit(order, [0] * len(order), np.zeros(len(order)), ok[cs, js], emb[cs, js], {}, [])
    curves = np.zeros((K, n), np.int64)
    for c in range(K):
        js_acc = np.array([r["candidate"] for r in state.accepted[c]], np.int64)
        curves[c] = np.searchsorted(np.sort(js_acc), np.arange(n), side="right")
    return curves


def _collisions(ok, emb, threshold) -> dict:
    """{(a, b): [passing of a, passing of b] float 0/1 matrix of pairs at or above the threshold}, a <= b."""
    K = ok.shape[0]
    E = [emb[a][ok[a]] for a in range(K)]
    return {(a, b): (E[a] @ E[b].T >= threshold).astype(np.float64) for a in range(K) for b in range(a, K)}


def _pair_rates(ok, C: dict, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """(pass rate [K], collision probability [K, K]) of candidates with multiplicities `weights`
    (None: the sample itself; multinomial counts: a bootstrap replicate)."""
    K, n = ok.shape
    w = np.ones((K, n)) if weights is None else weights
    r = (w * ok).sum(1) / w.sum(1)
    P = np.zeros((K, K))
    wp = [w[a][ok[a]] for a in range(K)]
    for (a, b), Cab in C.items():
        if not Cab.size:
            continue
        hits = wp[a] @ Cab @ wp[b]
        if a == b:  # distinct pairs only: drop each candidate's pairs with itself and its copies
            hits -= (wp[a] ** 2 * np.diag(Cab)).sum()
            pairs = wp[a].sum() ** 2 - (wp[a] ** 2).sum()
        else:
            pairs = wp[a].sum() * wp[b].sum()
        P[a, b] = P[b, a] = hits / pairs if pairs > 0 else 0.0
    return r, P


def _lam(P) -> np.ndarray:
    return -np.log1p(-np.clip(np.asarray(P, np.float64), 0.0, 1 - 1e-12))


def _curve_factor(ok, curves, lam) -> np.ndarray:
    """Per cell, the maximum-likelihood factor kappa on lam's row given the observed greedy run, and
    its standard error (Fisher information): passing candidate k of cell a is accepted with
    probability exp(-kappa_a x_k), x_k = sum_b lam_ab (identities of b accepted before it).
    [K, 2]; nan where the run cannot tell (no rejection, or no acceptance, after the first)."""
    K, n = ok.shape
    out = np.full((K, 2), np.nan)
    for a in range(K):
        xs, acc = [], []
        for j in np.flatnonzero(ok[a]):
            # accepted before (a, j) in the interleaved order: cells < a up to j, the others up to j - 1
            before = np.array([curves[b, j] if b < a else (curves[b, j - 1] if j else 0) for b in range(K)])
            xs.append(float(lam[a] @ before))
            acc.append(curves[a, j] > (curves[a, j - 1] if j else 0))
        x, acc = np.array(xs), np.array(acc, bool)
        sa, xr = x[acc].sum(), x[~acc & (x > 0)]
        if not len(xr) or sa == 0:
            continue

        def score(t):  # derivative of the log-likelihood in kappa, decreasing in kappa
            return -sa + (xr / np.expm1(t * xr)).sum()

        lo, hi = 0.0, 1.0
        while score(hi) > 0 and hi < 1e9:
            lo, hi = hi, 2 * hi
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if score(mid) > 0 else (lo, mid)
        k = 0.5 * (lo + hi)
        e = np.exp(-k * xr)
        info = (xr ** 2 * e / (1 - e) ** 2).sum()
        out[a] = k, 1 / np.sqrt(info)
    return out


def fit_capacity(names: Sequence[str], ok: np.ndarray, emb: np.ndarray, threshold: float,
                 n_per_cell: Optional[int] = None, budgets: Sequence[int] = DEFAULT_BUDGETS, n_boot: int = 200,
                 seed: int = 0, confidence: float = 0.95) -> dict:
    """The capacity estimate from candidates already drawn: ok [K, n] (label check passed), emb
    [K, n, D] (unit embeddings; rows of failed candidates are ignored)."""
    ok = np.asarray(ok, bool)
    emb = np.asarray(emb, np.float32)
    K, n = ok.shape
    curves = greedy_curves(names, ok, emb, threshold)
    C = _collisions(ok, emb, threshold)
    r, P = _pair_rates(ok, C)
    rng = keyed_rng(seed, 0xCA9AC17)
    boots = [_pair_rates(ok, C, np.stack([rng.multinomial(n, np.full(n, 1 / n)) for _ in range(K)]))
             for _ in range(n_boot)]
    q = (1 - confidence) / 2
    rb, Pb = np.array([b[0] for b in boots]), np.array([b[1] for b in boots])
    z = NormalDist().inv_cdf(1 - q)
    P_low, P_high = np.quantile(Pb, q, axis=0), np.quantile(Pb, 1 - q, axis=0)
    lam, lam_low, lam_high = _lam(P), _lam(P_low), _lam(P_high)
    kappa = _curve_factor(ok, curves, lam)
    fitted = np.isfinite(kappa[:, 0])
    # Central: the pair rates scaled per cell to the greedy run actually observed (what packing and
    # clustering do to acceptance at the measured scale); row a is cell a's effective rate, so the
    # scaled matrix need not be symmetric. The ends: the wider of the two intervals, pair bootstrap
    # and curve factor +- z standard errors.
    k_mid = np.where(fitted, kappa[:, 0], 1.0)
    k_low = np.where(fitted, np.maximum(kappa[:, 0] - z * kappa[:, 1], 0.0), 1.0)
    k_high = np.where(fitted, kappa[:, 0] + z * kappa[:, 1], 1.0)

    lam_mid = lam * k_mid[:, None]
    lam_opt = np.minimum(lam_low, lam * k_low[:, None])
    lam_pes = np.maximum(lam_high, lam * k_high[:, None])
    params = {
        "central": {"pass_rate": r.tolist(), "collision": (-np.expm1(-lam_mid)).tolist()},
        "optimistic": {"pass_rate": np.quantile(rb, 1 - q, axis=0).tolist(), "collision": (-np.expm1(-lam_opt)).tolist()},
        "pessimistic": {"pass_rate": np.quantile(rb, q, axis=0).tolist(), "collision": (-np.expm1(-lam_pes)).tolist()},
        "pairs": {"pass_rate": r.tolist(), "collision": P.tolist()},
    }
    est = {"threshold": float(threshold), "n_candidates": int(n), "cells": list(names), "n_boot": int(n_boot),
           "interval": confidence, "params": params, "model": "greedy mean field: dn_a/dj = r_a exp(-sum_b lam_ab n_b)"}
    pred = _integrate(lam_mid, r, [float(n)])[0][0]
    pred_pairs = _integrate(lam, r, [float(n)])[0][0]
    per_cell = {}
    for a, name in enumerate(names):
        others = [b for b in range(K) if b != a]
        per_cell[name] = {
            "pass_rate": float(r[a]), "passed": int(ok[a].sum()),
            "p_within": float(P[a, a]), "p_within_interval": [float(P_low[a, a]), float(P_high[a, a])],
            "p_cross_mean": float(P[a, others].mean()) if others else 0.0,
            "p_cross_max": float(P[a, others].max()) if others else 0.0,
            "observed_curve": curves[a].tolist(),
            "observed_accepted": int(curves[a, -1]),
            "model_accepted_at_n": float(pred[a]),
            "pair_model_accepted_at_n": float(pred_pairs[a]),
            "curve_factor": None if not fitted[a] else float(kappa[a, 0]),
            "curve_factor_se": None if not fitted[a] else float(kappa[a, 1]),
        }
    est["per_cell"] = per_cell
    got = {e: expected_identities(est, list(budgets), e) for e in ENDS}
    est["expected_identities"] = {str(int(B)): {e: dict(zip(names, got[e][i].tolist())) for e in ENDS}
                                  for i, B in enumerate(budgets)}
    if n_per_cell is not None:
        est["n_per_cell"] = int(n_per_cell)
        est["candidates_needed"] = {e: dict(zip(names, _none_inf(candidates_needed(est, n_per_cell, e))))
                                    for e in ENDS}
    return est


def _none_inf(x) -> list:
    return [None if not np.isfinite(v) else float(v) for v in x]


# ------------------------------------------------------------------ the model's figures

def _integrate(lam, r, record: Sequence[float], cap: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Expected identities per cell after each j in `record` (ascending) candidates per cell, and the
    j at which each cell reached `cap` (inf if not by the last record). Midpoint steps small enough
    that no acceptance exponent moves by more than _STEP (error well under 1 %)."""
    lam, r = np.asarray(lam, np.float64), np.asarray(r, np.float64)
    K = len(r)
    n, j = np.zeros(K), 0.0
    reached = np.full(K, np.inf)
    out = np.zeros((len(record), K))

    def rates(n):
        v = r * np.exp(-(lam @ n))
        v[n >= cap] = 0.0
        return v

    i = 0
    while i < len(record):
        rate = rates(n)
        if not rate.any():
            out[i:] = n
            break
        step = record[i] - j
        # Step control only by the cells still accepting noticeably: a cell a million times slower than
        # the fastest can err by at most a millionth of its identities, and its exponent may race.
        growth = (lam[rate >= 1e-6 * rate.max()] @ rate).max()
        if growth > 0:
            step = min(step, _STEP / growth)
        if np.isfinite(cap):  # rates only fall along the way, so this step cannot overshoot the cap
            room = rate > 0
            step = min(step, ((cap - n[room]) / rate[room]).min())
        n = n + rates(n + 0.5 * step * rate) * step  # midpoint rule
        j += step
        hit = (n >= cap - 1e-6) & ~np.isfinite(reached)
        n[hit] = cap
        reached[hit] = j
        while i < len(record) and j >= record[i] * (1 - 1e-12):
            out[i] = n
            i += 1
    return out, reached


def _end(estimate: dict, end: str):
    if end not in estimate["params"]:
        raise SynthfaceError(f"unknown end {end!r}; use one of {', '.join(estimate['params'])}")
    p = estimate["params"][end]
    return _lam(p["collision"]), np.asarray(p["pass_rate"], np.float64)


def expected_identities(estimate: dict, candidates_per_cell, end: str = "central",
                        n_per_cell: Optional[float] = None) -> np.ndarray:
    """Expected identities per cell ([K], or [len, K] for a sequence of budgets) after
    `candidates_per_cell` candidates of each cell (each cell stopping at `n_per_cell` when given,
    as selection does)."""
    lam, r = _end(estimate, end)
    js = np.atleast_1d(np.asarray(candidates_per_cell, np.float64))
    order = np.argsort(js)
    got = _integrate(lam, r, js[order].tolist(), np.inf if n_per_cell is None else float(n_per_cell))[0]
    res = np.empty_like(got)
    res[order] = got
    return res if np.ndim(candidates_per_cell) else res[0]


def candidates_needed(estimate: dict, n_per_cell: int, end: str = "central") -> np.ndarray:
    """Candidates per cell the model needs for `n_per_cell` identities in each cell (inf beyond
    MAX_CANDIDATES)."""
    lam, r = _end(estimate, end)
    return _integrate(lam, r, [MAX_CANDIDATES], float(n_per_cell))[1]


def reachable(estimate: dict, n_per_cell: int, candidates_per_cell: float,
              factor: float = OUT_OF_REACH_FACTOR) -> dict:
    """Verdict for `n_per_cell` identities within `candidates_per_cell` candidates per cell.
    Per cell: 'reachable' (even the pessimistic end gets there), 'likely' (the central estimate
    does), 'uncertain' (only the optimistic end does), 'unlikely', or 'out of reach' (the
    optimistic end gets less than `factor` of the request). The overall verdict is the worst."""
    got = {e: expected_identities(estimate, candidates_per_cell, e, n_per_cell) for e in ENDS}
    need = {e: candidates_needed(estimate, n_per_cell, e) for e in ENDS}
    full = n_per_cell * (1 - 1e-9)
    ranks = ["reachable", "likely", "uncertain", "unlikely", "out of reach"]
    cells = {}
    for a, name in enumerate(estimate["cells"]):
        if got["pessimistic"][a] >= full:
            v = "reachable"
        elif got["central"][a] >= full:
            v = "likely"
        elif got["optimistic"][a] >= full:
            v = "uncertain"
        elif got["optimistic"][a] >= factor * n_per_cell:
            v = "unlikely"
        else:
            v = "out of reach"
        cells[name] = {"verdict": v, **{f"expected_{e}": float(got[e][a]) for e in ENDS},
                       **{f"needed_{e}": None if not np.isfinite(need[e][a]) else float(need[e][a]) for e in ENDS}}
    worst = max((c["verdict"] for c in cells.values()), key=ranks.index)
    return {"verdict": worst, "clearly_out_of_reach": worst == "out of reach", "n_per_cell": int(n_per_cell),
            "candidates_per_cell": float(candidates_per_cell), "factor": factor, "cells": cells}


def _count(x: Optional[float]) -> str:
    if x is None or not np.isfinite(x):
        return f"more than {MAX_CANDIDATES:.0e}"
    return f"about {x:,.0f}" if x < 1e7 else f"about {x:.1e}"


def capacity_check(estimate: dict, n_per_cell: int, budget_per_identity: float) -> tuple[bool, str]:
    """(False, why) when `n_per_cell` identities per cell are clearly out of reach within selection's
    candidate limit ceil(budget_per_identity * n_per_cell) per cell; else (True, the estimate)."""
    limit = int(math.ceil(budget_per_identity * n_per_cell))
    v = reachable(estimate, n_per_cell, limit)
    lines = []
    for name, c in v["cells"].items():
        lines.append(f"  {name}: about {c['expected_central']:.0f} (optimistic {c['expected_optimistic']:.0f}) of "
                     f"{n_per_cell} within {limit:,} candidates; {n_per_cell} would take "
                     f"{_count(c['needed_central'])} candidates (optimistic {_count(c['needed_optimistic'])}) "
                     f"[{c['verdict']}]")
    head = (f"capacity estimate at separation {estimate['threshold']:.3f} (from {estimate['n_candidates']} "
            f"candidates per cell):")
    if not v["clearly_out_of_reach"]:
        return True, "\n".join([head, *lines])
    short = [n for n, c in v["cells"].items() if c["verdict"] == "out of reach"]
    opt = [v["cells"][n]["needed_optimistic"] for n in short]
    need = max(x if x is not None else np.inf for x in opt) / n_per_cell
    hint = f"optimistically --identity-budget {need:,.0f}" if need <= 1e4 else "no practical budget would do"
    return False, "\n".join([
        f"{n_per_cell} distinct identities per cell are clearly out of reach for {len(short)} cell(s) "
        f"({'; '.join(short)}): even the optimistic estimate finds fewer than "
        f"{OUT_OF_REACH_FACTOR:.0%} of them within --identity-budget {budget_per_identity:g} "
        f"({limit:,} candidates per cell). Ask for fewer identities, raise the separation threshold "
        f"(a higher --separation cosine, or a smaller --separation-fmr) or the budget "
        f"({hint}).", head, *lines])


# ------------------------------------------------------------------ report

def capacity_curves(estimate: dict, end: str = "central", points: int = 60,
                    max_candidates: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
    """(candidates [points], expected identities [points, K]) of the model, log-spaced from 1."""
    top = max_candidates or max(float(max(map(int, estimate.get("expected_identities", {"0": 0})))),
                                100.0 * estimate["n_candidates"])
    js = np.unique(np.geomspace(1, top, points))
    lam, r = _end(estimate, end)
    return js, _integrate(lam, r, js.tolist())[0]


def write_capacity_report(estimate: dict, out, log: Callable[[str], None] = log_stderr) -> dict:
    """OUT/capacity.json, capacity.png (observed and extrapolated accepted-vs-candidates, one colour
    per cell, the optimistic-pessimistic band shaded) and report.md. Returns the paths."""
    from ..fileio import atomic_write, write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "capacity.json", estimate)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = estimate["cells"]
    js, mid = capacity_curves(estimate, "central")
    _, lo = capacity_curves(estimate, "pessimistic", max_candidates=js[-1])
    _, hi = capacity_curves(estimate, "optimistic", max_candidates=js[-1])
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for a, name in enumerate(names):
        col = plt.cm.tab10(a % 10)
        obs = estimate["per_cell"][name]["observed_curve"]
        ax.plot(np.arange(1, len(obs) + 1), obs, color=col, lw=2, label=f"{name} (observed)")
        ax.plot(js, mid[:, a], color=col, ls="--", lw=1)
        ax.fill_between(js, lo[:, a], hi[:, a], color=col, alpha=0.12, lw=0)
    if "n_per_cell" in estimate:
        ax.axhline(estimate["n_per_cell"], color="k", lw=0.8, ls=":", label="requested per cell")
    ax.set_xscale("log")
    ax.set_xlabel("candidates per cell")
    ax.set_ylabel("distinct identities accepted")
    ax.set_title(f"Identity capacity at separation {estimate['threshold']:.3f} (dashed: model, band: "
                 f"{estimate['interval']:.0%} interval)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.axvline(estimate["n_candidates"], color="grey", lw=0.8, ls="-.", label="candidates drawn")
    ax.grid(alpha=0.3)
    atomic_write(out / "capacity.png", lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"),
                 suffix=".png")
    plt.close(fig)

    atomic_write(out / "report.md", lambda f: f.write(capacity_markdown(estimate).encode()))
    log(f"wrote {out / 'capacity.json'}, {out / 'capacity.png'} and {out / 'report.md'}")
    return {"json": str(out / "capacity.json"), "png": str(out / "capacity.png"), "md": str(out / "report.md")}


def capacity_markdown(estimate: dict) -> str:
    names = estimate["cells"]
    budgets = list(estimate["expected_identities"])
    L = ["# Identity capacity", "",
         f"Separation threshold {estimate['threshold']:.3f}; {estimate['n_candidates']} candidates drawn per cell "
         f"as identity selection draws them (seed {estimate.get('seed', 0)}).", "",
         "![accepted vs candidates](capacity.png)", "",
         "Solid: greedy acceptance observed on the drawn candidates; dashed: the model, "
         "dn/dj = r exp(-sum_b lam_ab n_b), from the pass rate r and the pair collision rates; band: "
         f"its {estimate['interval']:.0%} bootstrap interval (optimistic end also scaled by the observed curve's "
         "factor). Beyond the drawn candidates every figure is an extrapolation.", "",
         "| cell | pass rate | p within | p cross (mean) | observed / model at n | curve factor | "
         + " | ".join(f"ids @ {int(b):,}" for b in budgets) + " |",
         "|---" * (6 + len(budgets)) + "|"]
    for name in names:
        c = estimate["per_cell"][name]
        kap = "-" if c["curve_factor"] is None else f"{c['curve_factor']:.2f}"
        ids = [f"{estimate['expected_identities'][b]['central'][name]:.0f} "
               f"({estimate['expected_identities'][b]['pessimistic'][name]:.0f}-"
               f"{estimate['expected_identities'][b]['optimistic'][name]:.0f})" for b in budgets]
        L.append(f"| {name} | {c['pass_rate']:.2f} | {c['p_within']:.4f} | {c['p_cross_mean']:.4f} | "
                 f"{c['observed_accepted']} / {c['model_accepted_at_n']:.1f} | {kap} | " + " | ".join(ids) + " |")
    if "candidates_needed" in estimate:
        N = estimate["n_per_cell"]
        L += ["", f"Candidates per cell needed for {N} identities per cell (central; optimistic-pessimistic):", ""]
        for name in names:
            cn = estimate["candidates_needed"]
            L.append(f"- {name}: {_count(cn['central'][name])} ({_count(cn['optimistic'][name])} to "
                     f"{_count(cn['pessimistic'][name])})")
    if "verdict" in estimate:
        v = estimate["verdict"]
        L += ["", f"Verdict for {v['n_per_cell']} per cell within {v['candidates_per_cell']:,.0f} candidates per "
              f"cell: **{v['verdict']}**."]
    return "\n".join(L) + "\n"
