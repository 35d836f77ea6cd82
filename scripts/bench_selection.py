#!/usr/bin/env python
"""Time identity selection's greedy acceptance on synthetic embeddings as the accepted set grows,
side by side in one run with the naive reference it replaces.

- current: synthface.identity.identities._Acceptance, driven through its public behaviour only
  (`_Acceptance(names, n_per_cell, separation, None, None).visit(order, pseeds, W, ok, emb, probs,
  attributes)`), whatever its storage is at the time;
- naive: the pre-rewrite algorithm, kept here as the reference: every batch is compared with all
  accepted embeddings in one product, and the accepted embeddings are np.concatenate'd after every
  batch (a full copy of the set per batch).

Both see the same candidate stream: 512-d unit vectors, most uniformly random (they never collide at
practical thresholds, cosine 0.3-0.4: random 512-d cosines have sd 0.044), a share drawn around a
few hundred cluster centres (pairwise cosine about 0.25-0.7, so clusters fill up and keep rejecting),
visited in selection's order (cells interleaved, batches of --batch). Both must accept exactly the same
candidates (checked). They run in lockstep, batch by batch, alternating which goes first. Reported: microseconds per candidate in windows of the accepted-set size,
for each implementation, and the naive/current ratio. The machine's load average goes into the JSON
(the machine may be shared; read the ratio, measured in one run, before the absolute times).

    python scripts/bench_selection.py                                  # 10k identities, both (< 2 min)
    python scripts/bench_selection.py --size 100000 --out bench_out/selection_100k.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from synthface.fileio import write_json_atomic  # noqa: E402
from synthface.identity.identities import _Acceptance, _visiting_order  # noqa: E402
from synthface.utils import keyed_rng  # noqa: E402


class NaiveAcceptance:
    """The pre-rewrite greedy acceptance (same decisions, same per-candidate bookkeeping): compares
    with np.concatenate'd accepted embeddings, copied in full after every batch."""

    def __init__(self, names, n_per_cell, separation):
        self.names, self.n, self.separation = names, n_per_cell, separation
        self.accepted = [[] for _ in names]
        self.embeddings = np.zeros((0, 0), np.float32)
        self.stats = {n: {"candidates": 0, "rejected_label": 0, "rejected_separation": 0} for n in names}

    def full(self, c):
        return len(self.accepted[c]) >= self.n

    def visit(self, order, pseeds, W, ok, emb, probs, attributes):
        if self.embeddings.shape[1] == 0 and emb.shape[1]:
            self.embeddings = np.zeros((0, emb.shape[1]), np.float32)
        prev = (emb @ self.embeddings.T).max(1) if len(self.embeddings) else np.full(len(order), -1.0)
        new_rows = []
        for k, (c, j) in enumerate(order):
            if self.full(c):
                continue
            st = self.stats[self.names[c]]
            st["candidates"] += 1
            if not ok[k]:
                st["rejected_label"] += 1
                continue
            within = float((emb[new_rows] @ emb[k]).max()) if new_rows else -1.0
            m = max(float(prev[k]), within)
            if m >= self.separation:
                st["rejected_separation"] += 1
                continue
            new_rows.append(k)
            self.accepted[c].append({"candidate": j, "prior_seed": pseeds[k], "w": W[k], "embedding": emb[k],
                                     "max_similarity": m, "leakage_similarity": float("nan"),
                                     "probs": {a: probs[a][k] for a in attributes}})
        if new_rows:
            self.embeddings = np.concatenate([self.embeddings, emb[new_rows]])
        return len(new_rows)


class Stream:
    """Candidates: each batch a deterministic function of (seed, its first candidate, its size), so
    every implementation visited with the same --batch sees the same stream."""

    def __init__(self, dim, clusters, cluster_share, seed):
        self.dim, self.share, self.seed = dim, cluster_share, seed
        c = keyed_rng(seed, 0xC1).standard_normal((clusters, dim)).astype(np.float32)
        self.centres = c / np.linalg.norm(c, axis=1, keepdims=True)

    def batch(self, order):
        rng = keyed_rng(self.seed, 0xBA7C, int(order[0][1]), int(order[0][0]), len(order))
        x = rng.standard_normal((len(order), self.dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        clustered = rng.random(len(order)) < self.share
        centre = self.centres[rng.integers(0, len(self.centres), len(order))]
        cos = rng.uniform(0.5, 0.85, len(order)).astype(np.float32)[:, None]  # to the centre
        u = x - (x * centre).sum(1, keepdims=True) * centre
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        e = np.where(clustered[:, None], cos * centre + np.sqrt(1 - cos ** 2) * u, x)
        ok = rng.random(len(order)) < 0.8  # the label check's pass rate
        return ok, e.astype(np.float32)


def run(impls, stream, cells, n_per_cell, separation, batch, windows, log):
    """Visit the stream with every implementation in lockstep, batch by batch, alternating which goes
    first, so a change in the machine's load hits all of them alike."""
    names = [f"cell{c}" for c in range(cells)]
    states = {i: _Acceptance(names, n_per_cell, separation, None, None) if i == "current" else
              NaiveAcceptance(names, n_per_cell, separation) for i in impls}
    first = states[impls[0]]
    next_j = [0] * cells
    rows = {i: [] for i in impls}
    w_time, total_time = dict.fromkeys(impls, 0.0), dict.fromkeys(impls, 0.0)
    edges, total, w_cand, b = list(windows), 0, 0, 0
    while True:
        active = [c for c in range(cells) if not first.full(c)]
        if not active:
            break
        per = max(1, batch // len(active))
        order = _visiting_order(active, next_j, per, 10 ** 9)
        for c in active:
            next_j[c] += per
        ok, emb = stream.batch(order)
        got = set()
        for i in (impls if b % 2 == 0 else impls[::-1]):
            t0 = time.perf_counter()
            got.add(states[i].visit(order, [0] * len(order), np.zeros(len(order)), ok, emb, {}, []))
            dt = time.perf_counter() - t0
            w_time[i] += dt
            total_time[i] += dt
        if len(got) != 1:
            raise RuntimeError(f"the implementations accepted different numbers in batch {b}: {got}")
        total += got.pop()
        w_cand += len(order)
        b += 1
        if edges and total >= edges[0]:
            for i in impls:
                rows[i].append({"accepted": total, "candidates": w_cand, "seconds": w_time[i],
                                "us_per_candidate": 1e6 * w_time[i] / w_cand})
            log(f"{total:>7} accepted  " + "  ".join(f"{i} {1e6 * w_time[i] / w_cand:8.1f}" for i in impls)
                + " us/candidate")
            edges.pop(0)
            w_cand, w_time = 0, dict.fromkeys(impls, 0.0)
    results = {i: {"windows": rows[i], "accepted": total, "candidates": sum(next_j), "select_seconds": total_time[i]}
               for i in impls}
    picks = {i: [[r["candidate"] for r in a] for a in states[i].accepted] for i in impls}
    return results, picks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10_000, help="accepted identities in all (cells x per cell)")
    ap.add_argument("--cells", type=int, default=6)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--separation", type=float, default=0.4, help="cosine (Vec2Face: 0.4, DCFace: 0.3)")
    ap.add_argument("--batch", type=int, default=64, help="candidates per visit (selection's --batch)")
    ap.add_argument("--clusters", type=int, default=300)
    ap.add_argument("--cluster-share", type=float, default=0.2)
    ap.add_argument("--windows", type=int, default=10, help="timing windows over the set size")
    ap.add_argument("--impl", default="current,naive", help="comma-separated: current, naive")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON file (default: print)")
    a = ap.parse_args(argv)

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    per_cell = a.size // a.cells
    windows = np.linspace(a.size / a.windows, per_cell * a.cells, a.windows).round().astype(int).tolist()
    stream = Stream(a.dim, a.clusters, a.cluster_share, a.seed)
    load0 = os.getloadavg()
    impls = [s.strip() for s in a.impl.split(",") if s.strip()]
    if not impls or set(impls) - {"current", "naive"}:
        ap.error("--impl takes current and/or naive")
    results, picks = run(impls, stream, a.cells, per_cell, a.separation, a.batch, windows, log)
    same = len({repr(p) for p in picks.values()}) == 1
    out = {"benchmark": "greedy identity acceptance on synthetic embeddings",
           "size": per_cell * a.cells, "cells": a.cells, "dim": a.dim, "separation": a.separation,
           "batch": a.batch, "clusters": a.clusters, "cluster_share": a.cluster_share, "seed": a.seed,
           "results": results, "same_identities": same,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                       "numpy": np.__version__, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                       "loadavg_start": load0, "loadavg_end": os.getloadavg()}}
    if {"current", "naive"} <= results.keys():
        cur, nai = results["current"]["windows"], results["naive"]["windows"]
        out["ratio_naive_over_current"] = {
            "per_window": [{"accepted": c["accepted"], "ratio": n["us_per_candidate"] / c["us_per_candidate"]}
                           for c, n in zip(cur, nai)],
            "total": results["naive"]["select_seconds"] / results["current"]["select_seconds"]}
    if a.out:
        write_json_atomic(Path(a.out), out)
        log(f"wrote {a.out}")
    else:
        import json
        print(json.dumps(out, indent=2))
    if not same:
        log("error: the implementations accepted different identities")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
