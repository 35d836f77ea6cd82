#!/usr/bin/env python
"""Time CIDWeights.fit (KDE, default settings) on n x d embeddings in 2 classes, side by side in
the same run with the obvious reference: scikit-learn's KernelDensity per class with the same
bandwidth, score_samples on the class's own points.

The reference is far too slow to score every point (it is exact, and in 512-d its tree prunes
nothing), so it scores a seeded random subset of each class and its full time is extrapolated:
fit time + (time per scored point) x (class size). On that subset the densities and weights of
both are compared: the reference's weight is its density^-gamma put through the clip and the
per-class scale of synthface's fit (both need every point of the class, which only synthface has).

The embeddings are identity-structured: people with 1 to --max-images images scattered around
a person centre, L2-normalised, as a recogniser's outputs are. Prints JSON.

    python scripts/bench_cid.py --n 100000 --dim 512 --ref-queries 200 --out bench_out/cid.json
"""

from __future__ import annotations

import argparse
import json
import math
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
from synthface.methods.cid import CIDWeights  # noqa: E402


def make_embeddings(n: int, dim: int, max_images: int, spread: float, seed: int):
    rng = np.random.default_rng(seed)
    counts = []
    while sum(counts) < n:
        counts.append(int(rng.integers(1, max_images + 1)))
    counts[-1] -= sum(counts) - n
    person = np.repeat(np.arange(len(counts)), counts)
    centres = rng.standard_normal((len(counts), dim)).astype(np.float32)
    X = centres[person] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = (person % 2).astype(np.int64)  # whole people in one class, 2 classes of about n/2
    return X, y


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--max-images", type=int, default=10)
    ap.add_argument("--spread", type=float, default=0.6, help="within-person noise (per coordinate, before norm)")
    ap.add_argument("--ref-queries", type=int, default=200, help="points per class the reference scores")
    ap.add_argument("--float32", action="store_true", help="also time dtype='float32' and compare it")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    import sklearn
    import torch
    from sklearn.neighbors import KernelDensity
    if a.threads:
        torch.set_num_threads(a.threads)

    X, y = make_embeddings(a.n, a.dim, a.max_images, a.spread, seed=0)
    load_start = os.getloadavg()[0]
    t = time.perf_counter()
    cid = CIDWeights().fit(X, y)
    ours_s = time.perf_counter() - t

    out = {"n": a.n, "dim": a.dim, "classes": [int(v) for v in np.bincount(y)], "max_images": a.max_images,
           "spread": a.spread, "bandwidth": [float(h) for h in cid.bandwidth_], "summary": cid.summary(),
           "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "sklearn": sklearn.__version__,
           "synthface_s": ours_s}
    if a.float32:
        t = time.perf_counter()
        w32 = CIDWeights(dtype="float32").fit_transform(X, y)
        out["synthface_float32_s"] = time.perf_counter() - t
        out["float32_max_rel_weight_diff"] = float(np.max(np.abs(w32 / cid.weights_ - 1)))

    rng = np.random.default_rng(1)
    ref_s, dens_diff, w_diff = 0.0, 0.0, 0.0
    for c, h in enumerate(cid.bandwidth_):
        rows = np.flatnonzero(y == c)
        Xc = X[rows].astype(np.float64)
        pick = np.sort(rng.choice(len(rows), min(a.ref_queries, len(rows)), replace=False))
        t = time.perf_counter()
        kde = KernelDensity(bandwidth=float(h), kernel="gaussian").fit(Xc)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        score = kde.score_samples(Xc[pick])
        per_query = (time.perf_counter() - t) / len(pick)
        ref_s += fit_s + per_query * len(rows)
        # score_samples = log((1/n) sum_j K) - (d/2) log(2 pi h^2): add the constant back
        log_p_ref = score + 0.5 * a.dim * math.log(2 * math.pi * h * h)
        log_p = cid.log_density_[rows[pick]]
        dens_diff = max(dens_diff, float(np.max(np.abs(np.expm1(log_p_ref - log_p)))))
        # the reference's weights through synthface's clip and class scale (same arithmetic as fit)
        lw_all = -cid.gamma * cid.log_density_[rows]
        cap = lw_all.min() + math.log(cid.max_ratio)
        lw_all = np.minimum(lw_all, cap)
        scale = np.exp(lw_all - lw_all.max()).mean()
        w_ref = np.exp(np.minimum(-cid.gamma * log_p_ref, cap) - lw_all.max()) / scale
        w_diff = max(w_diff, float(np.max(np.abs(w_ref - cid.weights_[rows[pick]]))))
        out[f"reference_class{c}_per_query_s"] = per_query
        out[f"reference_class{c}_fit_s"] = fit_s
    out.update({"reference_queries_per_class": a.ref_queries, "reference_s_extrapolated": ref_s,
                "ratio": ref_s / ours_s, "max_rel_density_diff": dens_diff, "max_abs_weight_diff": w_diff,
                "loadavg_start": load_start, "loadavg_end": os.getloadavg()[0]})
    print(json.dumps(out, indent=2))
    if a.out:
        write_json_atomic(a.out, out)


if __name__ == "__main__":
    main()
