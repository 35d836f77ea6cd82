#!/usr/bin/env python
"""Would a nearest-neighbour index make identity selection's separation test flat in the set size?

Selection accepts a candidate only if its largest cosine similarity to every accepted identity is
below the threshold. This probe times that test per candidate, in one run, for

- exact: blocked matrix products of a batch of candidates against all accepted embeddings
  (what `synthface.identity.identities._Acceptance` does);
- hnsw: faiss's IndexHNSWFlat (inner product, M=32, efConstruction 64, efSearch 64), the usual
  sub-linear index, searched for the top-1 neighbour of each candidate;

on the accepted sets selection builds at 10k, 50k and 100k identities (512-d unit vectors: random
ones plus clusters, as scripts/bench_selection.py draws them), and counts how often the index's
answer would change a decision at the given threshold (a missed neighbour above it = a wrongly
accepted identity). faiss is not a synthface dependency; install faiss-cpu to run this.

    python scripts/probe_selection_index.py --out bench_out/selection_index.json
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


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def accepted_like(n: int, dim: int, rng) -> np.ndarray:
    """n vectors: 80 % random, 20 % around 300 centres (as selection's accepted sets look)."""
    centres = unit(rng.standard_normal((300, dim)))
    k = n // 5
    clustered = unit(centres[rng.integers(0, 300, k)] + 0.06 * rng.standard_normal((k, dim)))
    return np.concatenate([unit(rng.standard_normal((n - k, dim))), clustered])


def queries_like(acc: np.ndarray, n: int, rng) -> np.ndarray:
    """Half fresh random candidates, half near-duplicates of accepted identities (the ones the test
    must reject)."""
    half = n // 2
    near = unit(acc[rng.integers(0, len(acc), n - half)] + 0.03 * rng.standard_normal((n - half, acc.shape[1])))
    return np.concatenate([unit(rng.standard_normal((half, acc.shape[1]))), near])


def time_exact(acc, q, batch):
    t = time.perf_counter()
    best = np.concatenate([(q[s:s + batch] @ acc.T).max(1) for s in range(0, len(q), batch)])
    return (time.perf_counter() - t) / len(q), best


def time_hnsw(acc, q, faiss):
    index = faiss.IndexHNSWFlat(acc.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction, index.hnsw.efSearch = 64, 64
    t = time.perf_counter()
    index.add(acc)
    build = time.perf_counter() - t
    t = time.perf_counter()
    sims = np.concatenate([index.search(q[i:i + 1], 1)[0][:, 0] for i in range(len(q))])  # one at a time
    one = (time.perf_counter() - t) / len(q)
    t = time.perf_counter()
    index.search(q, 1)
    batched = (time.perf_counter() - t) / len(q)
    return build, one, batched, sims


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,50000,100000")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threshold", type=float, default=0.4)
    ap.add_argument("--out", type=Path, default=Path("bench_out/selection_index.json"))
    a = ap.parse_args()
    import faiss

    rng = np.random.default_rng(0)
    rows = []
    for n in [int(s) for s in a.sizes.split(",")]:
        acc = accepted_like(n, a.dim, rng)
        q = queries_like(acc, a.queries, rng)
        ex_s, ex = time_exact(acc, q, a.batch)
        build, one, batched, hn = time_hnsw(acc, q, faiss)
        wrong = int(((ex >= a.threshold) & (hn < a.threshold)).sum())
        row = {"accepted": n, "exact_us_per_candidate": ex_s * 1e6, "hnsw_build_s": build,
               "hnsw_us_per_candidate_one_by_one": one * 1e6, "hnsw_us_per_candidate_batched": batched * 1e6,
               "wrongly_accepted": wrong, "should_reject": int((ex >= a.threshold).sum())}
        rows.append(row)
        print({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    write_json_atomic(a.out, {"rows": rows, "dim": a.dim, "queries": a.queries, "batch": a.batch,
                              "threshold": a.threshold, "faiss": faiss.__version__,
                              "threads": os.cpu_count(), "machine": platform.machine(),
                              "load_average": os.getloadavg()})


if __name__ == "__main__":
    main()
