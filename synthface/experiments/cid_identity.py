"""The CID experiment's second test set (issue 16 item 5): a synthface identity dataset.

The dataset is the demo world's synthetic identities, made as the pretrain experiment's balanced
set (b) is (`pretrain_data.build_balanced`: the demo generator, a labelled bank, the demographic
latent model, the identity dataset writer with the demo's settings; equal identities per
group x gender cell). Its images are 112x112 ArcFace crops of the generator's 64x64 FFHQ-aligned
faces; they are warped back into the FFHQ frame the attribute models were trained on (the crop
is a fixed similarity, so the region the models look at comes back whole).

The generated faces carry no smile label, so a smile labeller is trained here: the same network
and face region as the sweep's models, on renderer people of their own (in neither the pool, the
test set nor the calibration people), with the renderer's own smile labels and uniform weights.
Its accuracy on the sweep's renderer test set is reported; its predictions on the identity
dataset are the labels every swept model is scored against (agreement with the labeller, by
identity, with the dataset's group x gender cells as groups)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..evaluation.identity_robustness import identity_robustness
from ..fileio import write_json_atomic
from .cid_data import ImageTensors, mirrored, model_file, render_images, to_model_input

_LABELLER_BASE = 3_000_000  # the labeller's renderer people (pool < 1e6, test 1e6+, calibration 2e6+)
IDSET_KEYS = ("accuracy", "identity_accuracy_std", "worst_10pct_identity_accuracy", "worst_group_accuracy")


def load_identity_dataset(cfg, root: Path, log: Callable = print) -> dict:
    """{"crops": uint8 [N, 112, 112, 3], "identity": [N] str, "cell": [N] str, "path": folder}:
    built once under root/identity_dataset (reused while its settings are the same)."""
    from PIL import Image

    from .pretrain_data import PretrainConfig, build_balanced
    pc = PretrainConfig(ids_per_cell=cfg.idset_ids_per_cell, images_per_id=cfg.idset_images_per_id,
                        bank_n=cfg.idset_bank_n, refine_steps=cfg.idset_refine_steps, seed=cfg.idset_seed)
    path = root / "identity_dataset"
    marker = path / ".done.json"
    if not marker.is_file():
        log(f"building the synthface identity dataset ({6 * pc.ids_per_cell} identities x {pc.images_per_id}, "
            f"bank {pc.bank_n}) in {path}")
    from ..assets import generator_path
    from ..generator import load_generator
    build_balanced(pc, load_generator(generator_path(), device="cpu"), path, log)
    rows = json.loads((path / "rows.json").read_text())
    crops = np.stack([np.asarray(Image.open(path / r["path"]).convert("RGB")) for r in rows])
    return {"crops": crops, "identity": np.array([r["identity"] for r in rows]),
            "cell": np.array([r["cell"] for r in rows]), "path": str(path)}


def to_ffhq_frame(crops: np.ndarray, size: int) -> torch.Tensor:
    """uint8 ArcFace crops [N, 112, 112, 3] -> float [N, 3, size, size] in the FFHQ-aligned frame,
    normalised (x - 127.5) / 127.5 as the sweep's inputs; what lies outside the crop is black."""
    from ..align import arcface_matrix, to_float, warp_affine
    M = np.vstack([arcface_matrix(size, crops.shape[1]), [0, 0, 1]])
    x = warp_affine(to_float(crops), np.linalg.inv(M)[:2], size)
    return ((x - 127.5) / 127.5).contiguous()


def _labeller_key(cfg) -> dict:
    return {"world_seed": cfg.world_seed, "render_size": cfg.render_size, "model_size": cfg.model_size,
            "region": list(cfg.region), "people": cfg.labeller_people, "images": cfg.labeller_images,
            "epochs": cfg.labeller_epochs, "width": cfg.width, "embedding_dim": cfg.embedding_dim,
            "batch": cfg.batch, "lr": cfg.lr, "mirror": cfg.mirror}


def smile_labeller(cfg, root: Path, log: Callable = print):
    """The smile labeller (see the module docstring), trained once under root/smile_labeller."""
    from ..train.attribute import build_attribute_model, fit_attribute
    from ..world import BALANCED, World, take
    from ..world.dataset import image_labels

    key = _labeller_key(cfg)
    path = root / "smile_labeller"
    model = build_attribute_model("small", 2, cfg.embedding_dim, cfg.width, cfg.model_size, cfg.region)
    if (path / "key.json").is_file() and json.loads((path / "key.json").read_text()) == key:
        model.load_state_dict(torch.load(path / "weights.pt", weights_only=True))
        return model.eval()
    t0 = time.perf_counter()
    world = World(seed=cfg.world_seed, distribution=BALANCED)
    people = world.identities(range(_LABELLER_BASE, _LABELLER_BASE + cfg.labeller_people))
    rows = np.repeat(np.arange(cfg.labeller_people), cfg.labeller_images)
    j = np.tile(np.arange(cfg.labeller_images), cfg.labeller_people)
    y = image_labels(world, take(people, rows), j)["smile"]
    x = to_model_input(render_images(world, people, rows, j, cfg.render_size), cfg.model_size)
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="synthface-cid-labeller-"))
    try:
        trainer = fit_attribute(model, ImageTensors(*mirrored(cfg, x, y)), tmp, cfg.labeller_epochs, cfg.batch, lr=cfg.lr, seed=0,
                                device="cpu")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    model = trainer.model_.model.eval()
    path.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path / "weights.pt")
    write_json_atomic(path / "key.json", key)
    log(f"smile labeller: {len(y)} renderer images of {cfg.labeller_people} people, {cfg.labeller_epochs} epochs "
        f"in {time.perf_counter() - t0:.0f}s")
    return model


def _predict(model, x: torch.Tensor) -> np.ndarray:
    from ..train.attribute import predict_logits
    return predict_logits(model, ImageTensors(x, np.zeros(len(x), np.int64))).argmax(1)


def identity_evaluation(cfg, data: dict, rows: list, models_dir: Path, root: Path, log: Callable = print) -> dict:
    """Score every model saved by the sweep on the identity dataset against the smile labeller;
    adds `idset_<metric>` to each row of `rows` and returns what the report says about the set."""
    from ..train.attribute import build_attribute_model
    t0 = time.perf_counter()
    ids = load_identity_dataset(cfg, root, log)
    x = to_ffhq_frame(ids["crops"], cfg.model_size)
    labeller = smile_labeller(cfg, root, log)
    test = data["test"]
    lab_test = _predict(labeller, to_model_input(test["images"], cfg.model_size))
    y = _predict(labeller, x)
    per_id = [y[ids["identity"] == v].mean() for v in np.unique(ids["identity"])]
    for row in rows:
        model = build_attribute_model("small", 2, cfg.embedding_dim, cfg.width, cfg.model_size, cfg.region)
        model.load_state_dict(torch.load(models_dir / model_file(row), weights_only=True))
        m = identity_robustness(y, _predict(model.eval(), x), ids["identity"], groups=ids["cell"])
        row.update({f"idset_{k}": m[k] for k in IDSET_KEYS})
    info = {"path": ids["path"], "images": int(len(y)), "identities": int(len(per_id)),
            "cells": sorted(set(ids["cell"].tolist())),
            "labeller_test_accuracy": float((lab_test == test["smile"]).mean()),
            "labeller_smile_rate": float(y.mean()),
            "identities_with_both_labels": float(np.mean([0 < p < 1 for p in per_id])),
            "seconds": time.perf_counter() - t0}
    log(f"identity dataset: {info['images']} images of {info['identities']} identities; smile labeller "
        f"{info['labeller_test_accuracy']:.3f} on the renderer test set, labels {info['labeller_smile_rate']:.2f} "
        f"smiling, {info['identities_with_both_labels']:.2f} of identities with both labels")
    return info


def report_lines(res: dict) -> list[str]:
    """The report's section on the identity dataset (empty when it was not evaluated)."""
    info = res.get("identity_dataset")
    if not info:
        return []
    cfg_rhos = res["config"]["rhos"]
    lines = ["## On a synthface identity dataset", "",
             f"{info['identities']} synthetic identities x {info['images'] // max(info['identities'], 1)} images from "
             f"the demo generator through the identity dataset writer"
             + (f" (variations refined by {res['config']['idset_refine_steps']} steps through the generator)"
                if res["config"].get("idset_refine_steps") else "") + " (equal identities per cell: "
             f"{', '.join(info['cells'])}; `{info['path']}`), warped back into the FFHQ frame. Labels: a smile "
             f"labeller trained here on {res['config']['labeller_people']} renderer people x "
             f"{res['config']['labeller_images']} images (same network and region, uniform weights; "
             f"{info['labeller_test_accuracy']:.3f} accurate on the renderer test set). It calls "
             f"{info['labeller_smile_rate']:.2f} of the images smiling; {info['identities_with_both_labels']:.2f} of "
             "the identities get both labels. Figures are agreement with the labeller.", ""]
    head = "| method | " + " | ".join(f"rho {r}" for r in cfg_rhos) + " |"
    for k in IDSET_KEYS:
        lines += [f"**{k.replace('_', ' ')}** (identity dataset, mean ± std over seeds)", "", head,
                  "|---|" + "---|" * len(cfg_rhos)]
        for method, per in res["aggregate"].items():
            cells = [f"{per[str(r)]['idset_' + k][0]:.3f} ± {per[str(r)]['idset_' + k][1]:.3f}"
                     if 'idset_' + k in per.get(str(r), {}) else "" for r in cfg_rhos]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines
