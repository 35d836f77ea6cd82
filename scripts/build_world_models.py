#!/usr/bin/env python
"""Rebuild the demo world's recognisers and attribute classifiers from seeds.

    python scripts/build_world_models.py --workdir build/world --assets synthface/world/assets

Stages are cached in --workdir (rendered pools, trained weights), so an interrupted build
resumes; delete the workdir to rebuild from scratch. Writes into --assets:
  pack/recognition.onnx, pack/genderage.onnx        (insightface formats; the pipeline's models)
  attributes.onnx + attributes.json                  (group + gender classifier, JSON sidecar)
  audit/recognition.onnx, audit/attributes.onnx/json (independent models for audits only)
  cards/<name>.md and metrics.json                   (how each was trained and how well it does)
"""

import json
import time
from dataclasses import asdict
from pathlib import Path

import click
import numpy as np
import torch

from synthface.world import BALANCED, World
from synthface.world.detector import TinySCRFD, evaluate_detector, export_detector, render_faces, train_detector
from synthface.world.models import (AttributeLogits, GenderAgeHead, ModelSpec, build, evaluate, export_onnx,
                                    render_pool, save_json, sidecar, train_model)

WORLD_SEED = 0
EVAL = dict(first=900_000, identities=600, images=4)
DETECTOR = dict(name="detector", seed=31, first_identity=300_000, identities=1500, images_per_identity=4, epochs=6)
SPECS = [
    ModelSpec("recogniser", "recognition", "resnet", "arcface", seed=11, first_identity=100_000, identities=2500,
              images_per_identity=12, epochs=8),
    # twice the identities and 16 epochs: at 2,500 x 6 it reached 98.2 % on group, and the demo labels
    # generated faces with it, so a face it hesitates on is a face the pipeline throws away
    ModelSpec("attributes", "attributes", "resnet", "attribute", seed=12, first_identity=100_000, identities=5000,
              images_per_identity=12, epochs=16),
    ModelSpec("audit_recogniser", "recognition", "mobile", "arcface", seed=21, first_identity=200_000,
              identities=2500, images_per_identity=12, epochs=3),
    # the judge must be about as well trained as the labeller it audits (at 2,500 x 3 it was the weakest of
    # them); this architecture at 112 px costs 1 s a step on 2 cores, hence 4 epochs
    ModelSpec("audit_attributes", "attributes", "plain", "arcface", seed=22, first_identity=200_000, identities=5000,
              images_per_identity=12, epochs=4),
]


def cached_pool(world, workdir: Path, first: int, n: int, k: int) -> dict:
    path = workdir / f"pool_{first}_{n}x{k}.npz"
    if path.exists():
        with np.load(path) as z:
            return dict(z)
    pool = render_pool(world, first, n, k)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **pool)
    tmp.replace(path)
    return pool


CARD = """# {name}

- **Task:** {task_text}
- **Architecture:** `{arch}` backbone from `synthface/world/models.py` ({params:,} parameters), input {size}x{size} RGB
  ({crop_text}), normalised (x - {mean}) / {std} outside the graph as insightface does.
- **Training data:** demo-world identities {first}..{last} (world seed {world_seed}, balanced groups and genders),
  {k} rendered 64x64 images each ({n_images:,} images), with jitter, blur, down-sampling, colour and noise
  augmentation. {loss_text}
- **Training:** seed {seed}, {epochs} epochs, batch {batch}, AdamW with a one-cycle schedule peaking at {lr}.
- **File:** `{files}`; rebuild with `python scripts/build_world_models.py`.
- **Used for:** {use}

## Measured on held-out identities

Identities {eval_first}..{eval_last} ({eval_n} identities x {eval_k} images, never seen in training).

{metrics_text}
"""


def card(spec: ModelSpec, metrics: dict, params: int, files: str, use: str) -> str:
    size = 112 if spec.crop == "arcface" else 96
    mean, std = (127.5, 127.5) if spec.task == "recognition" else (127.5, 128.0)
    if spec.task == "recognition":
        task_text = "face recognition: 128-d embedding, compared by cosine similarity"
        loss_text = "CosFace loss (s = 30, m = 0.35) over the training identities."
        rows = "\n".join(f"| {c} | {v:.4f} |" for c, v in metrics["verification_accuracy_per_cell"].items())
        metrics_text = (
            f"- 10-fold verification accuracy: **{metrics['verification_accuracy']:.4f}** on {metrics['pairs']} pairs "
            f"(half genuine, half impostors from the same group)\n"
            f"- mean cosine: genuine {metrics['genuine_mean']:.3f}, impostor {metrics['impostor_mean']:.3f}; "
            f"impostor 99th percentile {metrics['impostor_p99']:.3f}\n\n| cell | accuracy |\n|---|---|\n{rows}")
    else:
        task_text = "attribute classification: group (3 classes), gender (2) and age (regression, years / 100)"
        loss_text = "Cross-entropy on group and gender plus a smooth-L1 loss on age."
        rows = "\n".join(f"| {c} | {v['group']:.4f} | {v['gender']:.4f} |"
                         for c, v in metrics["accuracy_per_cell"].items())
        metrics_text = (
            f"- group accuracy **{metrics['group_accuracy']:.4f}**, gender accuracy **{metrics['gender_accuracy']:.4f}**, "
            f"age MAE {metrics['age_mae_years']:.1f} years\n"
            f"- images where both group and gender get probability >= 0.9: {metrics['confident_0.9_fraction']:.4f} "
            f"(group {metrics['group_confident_0.9_fraction']:.4f}, gender {metrics['gender_confident_0.9_fraction']:.4f})\n"
            f"- expected calibration error (15 bins): group {metrics['group_calibration_error']:.4f}, "
            f"gender {metrics['gender_calibration_error']:.4f}\n\n"
            f"| cell | group acc. | gender acc. |\n|---|---|---|\n{rows}")
    crop_text = "ArcFace 5-point template crop of the FFHQ-aligned image" if spec.crop == "arcface" else \
        "insightface's genderage crop: 1.5x the face box"
    return CARD.format(name=spec.name, task_text=task_text, arch=spec.arch, params=params, size=size,
                       crop_text=crop_text, mean=mean, std=std, first=spec.first_identity,
                       last=spec.first_identity + spec.identities - 1, world_seed=WORLD_SEED,
                       k=spec.images_per_identity, n_images=spec.identities * spec.images_per_identity,
                       loss_text=loss_text, seed=spec.seed, epochs=spec.epochs, batch=spec.batch, lr=spec.lr,
                       files=files, use=use, eval_first=EVAL["first"], eval_last=EVAL["first"] + EVAL["identities"] - 1,
                       eval_n=EVAL["identities"], eval_k=EVAL["images"], metrics_text=metrics_text)


@click.command()
@click.option("--workdir", default="build/world", show_default=True)
@click.option("--assets", default="synthface/world/assets", show_default=True)
@click.option("--only", multiple=True, help="model names to (re)build; default all")
@click.option("--threads", default=1, show_default=True)
def main(workdir, assets, only, threads):
    torch.set_num_threads(threads)
    workdir, assets = Path(workdir), Path(assets)
    workdir.mkdir(parents=True, exist_ok=True)
    world = World(seed=WORLD_SEED, distribution=BALANCED)
    eval_pool = cached_pool(world, workdir, EVAL["first"], EVAL["identities"], EVAL["images"])
    metrics_path = assets / "metrics.json"
    for spec in SPECS:
        if only and spec.name not in only:
            continue
        weights = workdir / f"{spec.name}.pt"
        # cached weights are reused only for the very spec that trained them
        trained_by = workdir / f"{spec.name}.spec.json"
        if weights.exists() and trained_by.exists() and json.loads(trained_by.read_text()) == asdict(spec):
            net = build(spec)
            net.load_state_dict(torch.load(weights, weights_only=True))
            net.eval()
        else:
            pool = cached_pool(world, workdir, spec.first_identity, spec.identities, spec.images_per_identity)
            t0 = time.time()
            net = train_model(spec, pool)
            click.echo(f"{spec.name}: trained in {time.time() - t0:.0f}s")
            torch.save(net.state_dict(), weights)
            save_json(asdict(spec), trained_by)
        metrics = evaluate(spec, net, eval_pool)
        click.echo(f"{spec.name}: {json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)})}")
        params = sum(p.numel() for p in net.parameters())
        audit = spec.name.startswith("audit_")
        sub = assets / ("audit" if audit else "pack")
        if spec.task == "recognition":
            files = [export_onnx(net, sub / "recognition.onnx", "input.1", "embedding", 112)]
            use = ("auditing identity separation and consistency; never used to build datasets" if audit else
                   "the demo pipeline's identity embedder (insightface `ArcFaceONNX`)")
        else:
            stem = (assets / "audit" / "attributes") if audit else (assets / "attributes")
            files = [export_onnx(AttributeLogits(net), stem.with_suffix(".onnx"), "data", "logits",
                                 112 if spec.crop == "arcface" else 96)]
            save_json(sidecar(spec, metrics), stem.with_suffix(".json"))
            files.append(stem.with_suffix(".json"))
            if not audit:
                files.append(export_onnx(GenderAgeHead(net), assets / "pack" / "genderage.onnx", "data", "fc1", 96))
            use = ("auditing demographic labels; never used to build datasets" if audit else
                   "the demo pipeline's attribute labeller (insightface `Attribute` genderage + group classifier)")
        rel = ", ".join(str(Path(f).relative_to(assets)) for f in files)
        (assets / "cards").mkdir(parents=True, exist_ok=True)
        (assets / "cards" / f"{spec.name}.md").write_text(card(spec, metrics, params, rel, use))
        update_metrics(metrics_path, spec.name, metrics)
    if not only or "detector" in only:
        update_metrics(metrics_path, "detector", build_detector(world, workdir, assets))


def update_metrics(path: Path, name: str, metrics: dict):
    """Read-modify-write right away, so separate builds (--only) can run side by side."""
    all_metrics = json.loads(path.read_text()) if path.exists() else {}
    all_metrics[name] = metrics
    tmp = path.with_suffix(".tmp")
    save_json(all_metrics, tmp)
    tmp.replace(path)


def build_detector(world, workdir: Path, assets: Path) -> dict:
    d = DETECTOR
    weights = workdir / "detector.pt"
    net = TinySCRFD()
    if weights.exists():
        net.load_state_dict(torch.load(weights, weights_only=True))
    else:
        t0 = time.time()
        net = train_detector(world, d["first_identity"], d["identities"], d["images_per_identity"], d["epochs"],
                             d["seed"])
        click.echo(f"detector: trained in {time.time() - t0:.0f}s")
        torch.save(net.state_dict(), weights)
    path = export_detector(net.eval(), assets / "pack" / "det.onnx")
    imgs, lms = render_faces(world, EVAL["first"], 300, 1)
    metrics = {"ffhq_aligned_64px": evaluate_detector(path, imgs, lms, (64, 64)),
               "ffhq_aligned_64px_in_128_canvas": evaluate_detector(path, imgs, lms, (128, 128)),
               "ffhq_aligned_64px_in_640_canvas": evaluate_detector(path, imgs, lms, (640, 640))}
    click.echo(f"detector: {json.dumps(metrics)}")
    (assets / "cards" / "detector.md").write_text(DETECTOR_CARD.format(
        params=sum(p.numel() for p in net.parameters()), last=d["first_identity"] + d["identities"] - 1, **d,
        n=d["identities"] * d["images_per_identity"], a=metrics["ffhq_aligned_64px"],
        b=metrics["ffhq_aligned_64px_in_128_canvas"], c=metrics["ffhq_aligned_64px_in_640_canvas"],
        eval_first=EVAL["first"]))
    return metrics


DETECTOR_CARD = """# detector

- **Task:** face detection with 5 key points, in insightface's SCRFD output layout (strides 8/16/32,
  2 anchors per cell, 9 outputs), so `insightface.app.FaceAnalysis` accepts the demo pack.
- **Architecture:** `TinySCRFD` in `synthface/world/detector.py` ({params:,} parameters), input RGB
  (x - 127.5) / 128, any size divisible by 32.
- **Training data:** demo-world identities {first_identity}..{last} ({n} faces), each pasted at a random
  scale (0.9-1.9x of 64 px) and place on a noisy 128x128 canvas; 10% of scenes have no face. Targets: the face
  box implied by the 5 landmarks and the landmarks themselves.
- **Training:** seed {seed}, {epochs} epochs, AdamW, one-cycle schedule; weighted logistic loss on anchors,
  smooth-L1 on box distances and key points.
- **File:** `pack/det.onnx`. Generator output is already aligned, so the pipeline itself uses the fixed
  FFHQ->ArcFace transform; the detector is for insightface's own `FaceAnalysis` path.

## Measured with insightface's SCRFD decoding (threshold 0.5), 300 held-out faces (identities {eval_first}..)

| input | faces found (IoU >= 0.5) | extra detections / image | key-point error / eye distance |
|---|---|---|---|
| 64x64 aligned face, det_size 64 | {a[detection_rate]:.3f} | {a[extra_detections_per_image]:.3f} | {a[landmark_error_eye_fraction]:.3f} |
| same, det_size 128 | {b[detection_rate]:.3f} | {b[extra_detections_per_image]:.3f} | {b[landmark_error_eye_fraction]:.3f} |
| same, det_size 640 (insightface's usual) | {c[detection_rate]:.3f} | {c[extra_detections_per_image]:.1f} | - |

## Which det_size

Use `det_size=(64, 64)`, the size of the demo world's images: `FaceAnalysis(name=..., root=...)`, then
`app.prepare(ctx_id=-1, det_size=(64, 64))`. insightface scales an image up to fill `det_size`, and this small
detector was trained only on 64-pixel face images scaled 0.9-1.9x, so at the usual `det_size=(640, 640)` a
64-pixel face becomes a 640-pixel one it has never seen: it finds no face and about a hundred false ones per
image. For larger images pick `det_size` so that a face image stays within 60-120 pixels.
"""


if __name__ == "__main__":
    main()
