#!/usr/bin/env python
"""Time fitting the demographic latent model and sampling from it, on a bank of 100k latents.

The bank is synthetic but shaped like FFHQ's: w_dim 512, 6 ethnicities x 2 genders with a
web-scraped-like bias, anisotropic within-cell covariance, 10% unsure labels. Side by side in the
same run, the reference is FairGen's recipe (genforce/fairgen): one scikit-learn
GaussianMixture per cell fitted in the full W space, sampled with gmm.sample. Also timed:
mapping 100k prior z to w with an FFHQ-config mapping network (needed by both for sampling in
synthface, since the lift starts from prior samples).

    python scripts/bench_latent.py --out bench_out/latent.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from synthface.fileio import write_json_atomic  # noqa: E402
from synthface.generator.networks import MappingNetwork  # noqa: E402
from synthface.latent import DemographicLatentModel  # noqa: E402


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def synthetic_bank(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    eth = rng.choice(6, n, p=[0.6, 0.12, 0.08, 0.1, 0.06, 0.04])
    gen = rng.choice(2, n, p=[0.4, 0.6])
    mix = np.eye(d) + 0.1 * rng.standard_normal((d, d))
    dirs = rng.standard_normal((8, d)) * 0.15
    W = (rng.standard_normal((n, d)) @ mix + np.eye(6)[eth] @ dirs[:6] + np.eye(2)[gen] @ dirs[6:]).astype(np.float32)

    def probs(lbl, k):
        P = np.full((n, k), 0.02 / (k - 1), np.float32)
        P[np.arange(n), lbl] = 0.98
        return P
    P = {"ethnicity": probs(eth, 6), "gender": probs(gen, 2)}
    P["ethnicity"][rng.random(n) < 0.1] = 1 / 6
    schema = {"ethnicity": ["white", "black", "asian", "hispanic", "indian", "middleeastern"],
              "gender": ["female", "male"]}
    return W, P, schema, eth, gen


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--w-dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")
    W, P, schema, eth, gen = synthetic_bank(a.n, a.w_dim)
    log(f"bank {W.shape}, {len(schema['ethnicity']) * 2} cells")
    res = {"n": a.n, "w_dim": a.w_dim, "cells": 12, "repeats": a.repeats,
           "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version(),
                       "torch": torch.__version__, "threads": torch.get_num_threads(),
                       "numpy": np.__version__}}
    cells = [{"ethnicity": e, "gender": g} for e in schema["ethnicity"] for g in schema["gender"]]
    per = a.n // len(cells)

    # --- synthface
    t_fit, model = timed(lambda: DemographicLatentModel(holdout=0.0).fit(W, P, schema), a.repeats)
    t_fit_h, _ = timed(lambda: DemographicLatentModel(holdout=0.2).fit(W, P, schema), 1)
    mapping = MappingNetwork(z_dim=a.w_dim, c_dim=0, w_dim=a.w_dim, num_ws=None, num_layers=8).eval()
    z = torch.from_numpy(np.random.default_rng(1).standard_normal((a.n, a.w_dim)).astype(np.float32))

    def map_prior():
        with torch.no_grad():
            return torch.cat([mapping(z[i:i + 8192]) for i in range(0, a.n, 8192)]).numpy()
    t_map, prior = timed(map_prior, a.repeats)
    prior = W[np.random.default_rng(2).choice(a.n, a.n)]  # prior draws of the bank's own distribution

    def sample_ours():
        return [model.sample(c, per, prior[i * per:(i + 1) * per], seed=i) for i, c in enumerate(cells)]
    t_sample, out = timed(sample_ours, a.repeats)
    acc = float(np.mean([(model.predict_cell(w) == which).mean() for w, which in out]))
    res["synthface"] = {"fit_s": t_fit, "fit_with_holdout_check_s": t_fit_h, "sample_s": t_sample,
                        "prior_mapping_s": t_map, "latents_sampled": per * len(cells),
                        "projection_dims": int(model.A_.shape[1]),
                        "sampled_latents_in_requested_cell": acc}
    log(f"synthface: fit {t_fit:.2f} s (with held-out check {t_fit_h:.2f} s), sample {t_sample:.2f} s, "
        f"mapping {t_map:.2f} s")

    # --- FairGen's recipe: a GaussianMixture per cell in full W
    if not a.skip_reference:
        from sklearn.mixture import GaussianMixture
        idx = np.ravel_multi_index((eth, gen), (6, 2))
        conf = (P["ethnicity"].max(1) >= 0.9) & (P["gender"].max(1) >= 0.9)

        def fit_ref():
            return [GaussianMixture(1, covariance_type="full", random_state=0).fit(W[conf & (idx == c)])
                    for c in range(12)]
        t_ref_fit, gmms = timed(fit_ref, a.repeats)
        t_ref_sample, _ = timed(lambda: [g.sample(per) for g in gmms], a.repeats)
        res["fairgen_full_w_gmm"] = {"fit_s": t_ref_fit, "sample_s": t_ref_sample, "components": 1}
        res["ratio_fit"] = t_ref_fit / t_fit
        res["ratio_sample"] = t_ref_sample / t_sample
        log(f"reference: fit {t_ref_fit:.2f} s, sample {t_ref_sample:.2f} s; ratios fit {res['ratio_fit']:.2f}, "
            f"sample {res['ratio_sample']:.2f}")
    print(json.dumps(res, indent=2))
    if a.out:
        write_json_atomic(a.out, res)


if __name__ == "__main__":
    main()
