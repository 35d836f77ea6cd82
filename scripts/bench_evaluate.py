#!/usr/bin/env python
"""Time the evaluation of 100k pairs once embeddings are cached: scores plus every per-group
metric (10-fold accuracy, EER, TAR@FMR, global-threshold FMR/FNMR, FDR/IR/GARBE; no bootstrap).

Side by side in the same run, the reference is the common hand-rolled formulation (as in
insightface's verification.py): a Python loop over pairs for the cosine scores and, per fold, a
grid of 400 thresholds scanned with a full pass each to pick the best one. Prints JSON.

    python scripts/bench_evaluate.py --pairs 100000 --out bench_out/evaluate.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from synthface.fileio import write_json_atomic  # noqa: E402
from synthface.evaluation import group_metrics, pair_scores  # noqa: E402


def reference(E, keys, pairs):
    scores = np.array([float(np.dot(E[keys[p["a"]]], E[keys[p["b"]]])) for p in pairs])
    y = np.array([p["genuine"] for p in pairs], bool)
    g = np.array([p["group"] for p in pairs])
    f = np.array([p["fold"] for p in pairs])
    grid = np.arange(-1, 1, 0.005)
    accs = {}
    for grp in np.unique(g):
        m = g == grp
        fold_acc = []
        for k in np.unique(f[m]):
            tr, te = m & (f != k), m & (f == k)
            best = max(grid, key=lambda t: np.mean((scores[tr] >= t) == y[tr]))
            fold_acc.append(np.mean((scores[te] >= best) == y[te]))
        accs[grp] = float(np.mean(fold_acc))
    return scores, accs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--groups", type=int, default=6)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    n_img = 20_000
    E = rng.standard_normal((n_img, a.dim)).astype(np.float32)
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    emb = {f"img{i}": E[i] for i in range(n_img)}
    keys = {f"img{i}": i for i in range(n_img)}
    pairs = []
    for k in range(a.pairs):
        gen = k % 2
        i = int(rng.integers(n_img))
        j = i if gen else int(rng.integers(n_img))
        pairs.append({"a": f"img{i}", "b": f"img{j}", "genuine": gen, "group": f"g{(k // 2) % a.groups}",
                      "fold": int(rng.integers(10))})
    # genuine pairs: a noisy copy of the first image, so the scores carry signal
    for k in range(0, a.pairs, 2):
        name = f"gen{k}"
        v = E[keys[pairs[k]["a"]]] + rng.normal(0, 0.05 + 0.01 * ((k // 2) % a.groups), a.dim).astype(np.float32)
        emb[name] = v / np.linalg.norm(v)
        keys[name] = len(keys)
        pairs[k]["b"] = name
    Eall = np.stack([emb[k] for k in keys])
    t = time.perf_counter()
    s = pair_scores(emb, pairs)
    res = group_metrics(s, pairs, n_boot=1)  # bootstrap CIs are not part of the comparison
    ours = time.perf_counter() - t
    t = time.perf_counter()
    s_ref, acc_ref = reference(Eall, keys, pairs)
    ref = time.perf_counter() - t
    out = {"pairs": a.pairs, "groups": a.groups, "dim": a.dim, "processor": platform.processor() or platform.machine(),
           "numpy": np.__version__, "synthface_s": ours, "reference_s": ref, "ratio": ref / ours,
           "max_score_diff": float(np.abs(s - s_ref).max()),
           "max_accuracy_diff": max(abs(res["groups"][k]["accuracy"] - acc_ref[k]) for k in acc_ref)}
    print(json.dumps(out, indent=2))
    if a.out:
        write_json_atomic(a.out, out)


if __name__ == "__main__":
    main()
