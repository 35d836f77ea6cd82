#!/usr/bin/env python
"""Throughput of identity-dataset generation, by stage, on the demo world (or any network + model).

Stage 1 selects identities (candidates generated, re-labelled, embedded, separation-checked);
stage 2 makes the variations and writes the images; merge writes the manifest and exporters.
Prints JSON (and writes --out).

    python scripts/bench_dataset.py --ids-per-cell 10 --images-per-id 5 --out bench_out/dataset_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from synthface.fileio import write_json_atomic  # noqa: E402
from synthface.dataset import DatasetConfig, generate_dataset, merge  # noqa: E402
from synthface.demo import DEMO_IDENTITIES  # noqa: E402
from synthface.generator import load_generator, resolve_device  # noqa: E402
from synthface.identity import load_embedder  # noqa: E402
from synthface.labelling import load_labeller  # noqa: E402
from synthface.latent import DemographicLatentModel, build_bank  # noqa: E402
from synthface.world.assets import generator_path  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids-per-cell", type=int, default=10)
    ap.add_argument("--images-per-id", type=int, default=5)
    ap.add_argument("--bank-n", type=int, default=8000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    dev = resolve_device(a.device)
    G = load_generator(generator_path(), device=dev)
    lab, emb = load_labeller("world"), load_embedder("world", str(dev))
    work = Path(tempfile.mkdtemp(prefix="bench_dataset_"))
    try:
        bank = build_bank(G, lab, work / "bank", a.bank_n, progress=False, log=lambda s: None)
        model = DemographicLatentModel(confidence=0.95).fit_bank(bank)
        # make demo's settings, so the figures describe the job users run first
        cfg = DatasetConfig(ids_per_cell=a.ids_per_cell, images_per_id=a.images_per_id, **DEMO_IDENTITIES)
        t = time.perf_counter()
        res = generate_dataset(model, G, lab, emb, work / "ds", cfg, progress=False, log=lambda s: None)
        total = time.perf_counter() - t
        t = time.perf_counter()
        merge(work / "ds", log=lambda s: None)
        t_merge = time.perf_counter() - t
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n_ids, n_img = res["identities"], res["identities"] * a.images_per_id
    out = {"dataset_config": {k: getattr(cfg, k) for k in DEMO_IDENTITIES},
           "device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "processor": platform.processor() or platform.machine(), "resolution": G.img_resolution,
           "identities": n_ids, "images": n_img, "candidates": res["candidates"],
           "stage1_identity_selection_s": res["stage1_s"], "stage1_identities_per_s": n_ids / res["stage1_s"],
           "stage1_candidates_per_s": res["candidates"] / res["stage1_s"],
           "stage2_variations_and_writing_s": res["stage2_s"], "stage2_images_per_s": n_img / res["stage2_s"],
           "merge_s": t_merge, "total_s": total + t_merge, "overall_images_per_s": n_img / (total + t_merge)}
    print(json.dumps(out, indent=2))
    if a.out:
        write_json_atomic(a.out, out)


if __name__ == "__main__":
    main()
