#!/usr/bin/env python
"""Score the models of a finished `synthface experiment cid` run on another test design, without
training: the run's saved models (RUN/models) on test people built with the run's settings changed
by --set (e.g. issue 16's design: --set 'test_smile_mix=[0.5]' --set test_lookalikes=0). The
models are the same, so the figures differ only by who is tested. Prints, per method and rho,
the mean ± seed std of accuracy, worst-10 % identity accuracy over all test people and over the
touched people, and writes them as JSON to --out if given.

    python scripts/rescore_cid.py runs/cid-full --set 'test_smile_mix=[0.5]' --set test_lookalikes=0

With --identity-dataset the models are scored instead on the experiment's second test set, a synthface
identity dataset against the smile labeller (experiments/cid_identity.py), built with the run's settings
changed by --set (e.g. --set idset_refine_steps=15 for refined variations) under --cache (default
RUN/cache; the dataset and labeller are reused there while their settings are the same):

    python scripts/rescore_cid.py runs/cid-full --identity-dataset --set idset_refine_steps=15
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from synthface.experiments import parse_overrides  # noqa: E402
from synthface.experiments.cid import _TEST_BASE, _LOOKALIKE_OFFSET, CIDExperimentConfig, _pool  # noqa: E402
from synthface.experiments.cid_data import ImageTensors, model_file, to_model_input  # noqa: E402
from synthface.experiments.cid_design import designed_people, score  # noqa: E402
from synthface.fileio import write_json_atomic  # noqa: E402
from synthface.train.attribute import build_attribute_model, predict_logits  # noqa: E402
from synthface.world import BALANCED, World  # noqa: E402

KEYS = ("accuracy", "worst_10pct_identity_accuracy", "touched_worst_10pct_identity_accuracy")
IDSET_KEYS = tuple(f"idset_{k}" for k in ("accuracy", "worst_10pct_identity_accuracy", "worst_group_accuracy"))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--identity-dataset", action="store_true", help="score on the synthface identity dataset")
    ap.add_argument("--cache", type=Path, help="where the identity dataset and labeller are built (default RUN/cache)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    res = json.loads((args.run / "results.json").read_text())
    cfg = CIDExperimentConfig(**{**res["config"], **parse_overrides(args.overrides)})
    world = World(seed=cfg.world_seed, distribution=BALANCED)
    dom = _pool(CIDExperimentConfig(**{**res["config"], "pool_people": 1}), world)["dominant_people"]
    test = designed_people(world, _TEST_BASE, cfg.test_people, cfg.test_images, list(cfg.test_smile_mix),
                           cfg.render_size, dominant=dom, n_lookalikes=cfg.test_lookalikes, blend=cfg.lookalike_blend,
                           lookalike_first=_TEST_BASE + _LOOKALIKE_OFFSET)
    data = ImageTensors(to_model_input(test["images"], cfg.model_size), test["smile"])
    per: dict = {}
    if args.identity_dataset:
        from synthface.experiments.cid_identity import identity_evaluation
        rows = [dict(r) for r in res["runs"]]
        info = identity_evaluation(cfg, {"test": test}, rows, args.run / "models", args.cache or args.run / "cache")
        for row in rows:
            per.setdefault(row["method"], {}).setdefault(str(row["rho"]), []).append([row[k] for k in IDSET_KEYS])
        return _finish(args, per, IDSET_KEYS, {"identity_dataset": info})
    for row in res["runs"]:
        net = build_attribute_model("small", 2, cfg.embedding_dim, cfg.width, cfg.model_size, cfg.region)
        net.load_state_dict(torch.load(args.run / "models" / model_file(row), weights_only=True))
        s = score(test, predict_logits(net.eval(), data).argmax(1))
        per.setdefault(row["method"], {}).setdefault(str(row["rho"]), []).append([s.get(k, np.nan) for k in KEYS])
    return _finish(args, per, KEYS, {"test_images": int(len(test["identity"]))})


def _finish(args, per: dict, keys, extra: dict) -> dict:
    """Mean ± seed std per method and rho: printed, and written to --out if given."""
    out = {"run": str(args.run), "overrides": args.overrides, **extra,
           "aggregate": {m: {r: {k: [float(np.mean(v[:, i])), float(np.std(v[:, i], ddof=1)) if len(v) > 1 else 0.0]
                                 for i, k in enumerate(keys)} for r, v in ((r, np.array(v)) for r, v in d.items())}
                         for m, d in per.items()}}
    for m, d in out["aggregate"].items():
        for r, v in d.items():
            print(f"{m:<8} rho {r:<5} " + "  ".join(f"{k} {a:.3f} ± {b:.3f}" for k, (a, b) in v.items()))
    if args.out:
        write_json_atomic(args.out, out)
    return out


if __name__ == "__main__":
    main()
