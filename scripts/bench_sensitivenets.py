#!/usr/bin/env python
"""Time SensitiveNets.fit on 100k x 512 embeddings of 10k identities (issue 15 item 6), on a given number of
CPU threads (default 2), and write a JSON with the phases, the per-epoch log and the machine's load average.

The embeddings are synthetic: identity centres on the 512-d sphere with a planted gender direction and a
3-group plane (as the unit tests' data), 10 images per identity around each centre; what is timed does not
depend on what the vectors mean. The fit uses the experiment's settings (synthface.experiments.sensitivenets
METHOD) unless --epochs / --batch-size / --detector-steps say otherwise; the removal term is on (lam 1) so the
detector pool is trained every epoch, as in real use.

    python scripts/bench_sensitivenets.py --out bench_out/sensitivenets.json
    python scripts/bench_sensitivenets.py --threads 2 --epochs 5            # the default
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


def embeddings(n_ids: int, per_id: int, dim: int, seed: int = 0):
    """Identity clusters with gender and group planted along fixed directions (float32, unnormalised)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, 3)))[0]
    gender = rng.integers(0, 2, n_ids)
    group = rng.integers(0, 3, n_ids)
    at = np.array([[1, 0], [-0.5, 0.866], [-0.5, -0.866]])
    centres = rng.normal(size=(n_ids, dim)) / np.sqrt(dim)
    centres += 0.4 * ((2 * gender - 1)[:, None] * basis[:, 0] + at[group] @ basis[:, 1:3].T)
    X = np.repeat(centres, per_id, axis=0) + 0.35 * rng.normal(size=(n_ids * per_id, dim)) / np.sqrt(dim)
    ident = np.repeat(np.arange(n_ids), per_id)
    return X.astype(np.float32), ident, {"gender": np.repeat(gender, per_id), "group": np.repeat(group, per_id)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--identities", type=int, default=10_000)
    ap.add_argument("--per-id", type=int, default=10)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--detector-steps", type=int, default=None)
    ap.add_argument("--out", default="bench_out/sensitivenets.json")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from synthface.experiments.sensitivenets import METHOD
    from synthface.methods import SensitiveNets

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    X, ident, sens = embeddings(args.identities, args.per_id, args.dim)
    t_data = time.perf_counter() - t0
    params = {**METHOD, "lam": 1.0, "epochs": args.epochs}
    if args.batch_size:
        params["batch_size"] = args.batch_size
    if args.detector_steps:
        params["detector_steps"] = args.detector_steps
    lines = []
    m = SensitiveNets(**params)
    c0, t1 = time.process_time(), time.perf_counter()
    m.fit(X, ident, sens, log=lambda s: (lines.append(s), print(s, flush=True)))
    fit_wall, fit_cpu = time.perf_counter() - t1, time.process_time() - c0
    t2 = time.perf_counter()
    Z = m.transform(X)
    t_transform = time.perf_counter() - t2
    res = {"benchmark": "SensitiveNets.fit", "n": int(len(X)), "dim": args.dim, "identities": args.identities,
           "images_per_identity": args.per_id, "params": params, "threads": torch.get_num_threads(),
           "fit_wall_s": round(fit_wall, 2), "fit_cpu_s": round(fit_cpu, 2),
           "fit_wall_s_per_epoch": round(fit_wall / args.epochs, 2), "transform_wall_s": round(t_transform, 2),
           "transform_finite": bool(np.isfinite(Z).all()), "data_s": round(t_data, 2),
           "epochs": [{k: h[k] for k in ("epoch", "seconds", "triplet", "removal", "detector_acc")}
                      for h in m.history_],
           "log": lines, "load_average_start": [round(v, 2) for v in load_start],
           "load_average_end": [round(v, 2) for v in os.getloadavg()],
           "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
                      f"python {platform.python_version()}"}
    write_json_atomic(Path(args.out), res)
    print(f"fit {fit_wall:.1f} s wall ({fit_cpu:.1f} s CPU) for {len(X)} x {args.dim} on {args.threads} threads, "
          f"{args.epochs} epochs; load average {res['load_average_start']} -> {res['load_average_end']}; "
          f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
