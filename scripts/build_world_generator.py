#!/usr/bin/env python
"""Rebuild the demo world's StyleGAN2 from seeds: render the biased training set, train, assess.

    python scripts/build_world_generator.py --workdir build/world   # 720 + 40 kimg, as shipped

Stages: (1) render the biased population (World seed 0: groups 25/15/60 %, genders 35/65 %,
6000 identities x 6 images, 64x64) as an image folder; (2) train with
synthface.train.stylegan2 (resumable: rerun to continue), --kimg at lr 0.0025, then
--finetune-kimg more at --finetune-lr; (3) copy G_ema to
synthface/world/assets/generator.safetensors and assess it with the world's classifier
(confidence, cell frequencies against the training distribution, contact sheets).
The defaults are the shipped CPU build's schedule; on a GPU a larger --kimg does better.
"""

import json
import shutil
from pathlib import Path

import click

from safetensors import safe_open

from synthface.generator import load_generator
from synthface.labelling import OnnxClassifier
from synthface.train.stylegan2 import TrainConfig, train
from synthface.world import BIASED, World
from synthface.world.assess import assess_generator, world_reference
from synthface.world.dataset import write_image_folder

DATASET = dict(identities=6000, images_per_identity=6, size=64)
FINETUNE_KIMG = 40.0


def config(data: Path, run: Path, kimg: float, lr: float = 0.0025) -> TrainConfig:
    return TrainConfig(data=str(data), outdir=str(run), resolution=64, z_dim=128, w_dim=128, mapping_layers=4,
                       channel_base=1024, channel_max=128, batch=32, kimg=kimg, g_lr=lr, d_lr=lr, seed=0,
                       snapshot_kimg=10)


def describe_metadata(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


def card(cfg: TrainConfig, res: dict) -> str:
    ref = res["renderer_reference"]
    rows = "\n".join(f"| {c} | {100 * res['training_cell_frequency'][c]:.1f} | {100 * ref['cell_frequency'][c]:.1f} | "
                     f"{100 * res['cell_frequency'][c]:.1f} |" for c in res["cell_frequency"])
    return f"""# generator (demo-world StyleGAN2)

- **Network:** synthface's StyleGAN2 (`skip` generator, residual discriminator), {cfg.resolution}x{cfg.resolution},
  z/w {cfg.z_dim}/{cfg.w_dim}, {cfg.mapping_layers} mapping layers, channels base {cfg.channel_base} / max {cfg.channel_max}.
- **Data:** the biased demo-world population (world seed 0; groups 25/15/60 %, genders 35/65 %;
  {DATASET['identities']} identities x {DATASET['images_per_identity']} images at {DATASET['size']}x{DATASET['size']}),
  x-flips.
- **Training:** `scripts/build_world_generator.py` (seed {cfg.seed}, batch {cfg.batch}, lr {res['schedule']}, lazy R1 with
  NVIDIA's gamma heuristic, style mixing 0.9, G EMA), on CPU, snapshot at **{res['trained_kimg']} kimg**
  ({res['sec_per_kimg_last']} s/kimg on the 2-core build machine, shared with other jobs).
- **File:** `generator.safetensors`; `generator.json` holds the figures below.

## Measured

{res['images']} random samples (seeds 0-{res['images'] - 1}, psi 1), labelled by `attributes.onnx`:

- group and gender probability both >= 0.9: **{100 * res['confident_0.9_fraction']:.2f}%** of samples
  (renderer faces of the same population: {100 * ref['confident_0.9_fraction']:.2f}%)
- group probability >= 0.9: **{100 * res['group_confident_0.9_fraction']:.2f}%**
  (renderer: {100 * ref['group_confident_0.9_fraction']:.2f}%); gender probability >= 0.9:
  **{100 * res['gender_confident_0.9_fraction']:.2f}%** (renderer: {100 * ref['gender_confident_0.9_fraction']:.2f}%)
- largest gap between a cell's sample frequency and the training distribution:
  **{res['max_abs_difference_points']:.1f} points**

| cell | training distribution % | renderer, labelled % | generator samples, labelled % |
|---|---|---|---|
{rows}

![samples](generator_seed_grid.png)
"""


@click.command()
@click.option("--workdir", default="build/world", show_default=True)
@click.option("--assets", default="synthface/world/assets", show_default=True)
@click.option("--kimg", default=720.0, show_default=True, help="main phase, at lr 0.0025")
@click.option("--finetune-kimg", default=FINETUNE_KIMG, show_default=True, help="then this many more at --finetune-lr")
@click.option("--finetune-lr", default=0.0005, show_default=True)
@click.option("--threads", default=0, show_default=True)
@click.option("--skip-training", is_flag=True, help="export and assess the run's latest snapshot as it is")
def main(workdir, assets, kimg, finetune_kimg, finetune_lr, threads, skip_training):
    workdir, assets = Path(workdir), Path(assets)
    data = write_image_folder(World(seed=0, distribution=BIASED), workdir / "biased64", DATASET["identities"],
                              DATASET["images_per_identity"], DATASET["size"])
    run = workdir / "stylegan2"
    # At the full rate the samples stopped improving (the CPU build plateaued from ~680 kimg);
    # going on at a lower rate lets G settle, which sharpens the cues the classifiers read.
    phases = [(kimg, 0.0025)] + ([(kimg + finetune_kimg, finetune_lr)] if finetune_kimg > 0 else [])
    snapshot = run / "network-snapshot.safetensors"
    for end, lr in phases:
        cfg = config(data, run, end, lr)
        cfg.threads = threads
        if not skip_training:
            snapshot = train(cfg)  # resumes; a phase already done returns at once
    assets.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(snapshot, assets / "generator.safetensors.tmp")
    (assets / "generator.safetensors.tmp").replace(assets / "generator.safetensors")
    G = load_generator(assets / "generator.safetensors")
    clf = OnnxClassifier(assets / "attributes.onnx")
    res = assess_generator(G, clf, workdir / "assessment", n=2000, distribution=BIASED)
    res["renderer_reference"] = world_reference(World(seed=0, distribution=BIASED), clf, n=2000)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    # the snapshot's own kimg: training may have run on a little past the last snapshot
    res["trained_kimg"] = float(describe_metadata(snapshot).get("kimg", log[-1]["kimg"]))
    res["sec_per_kimg_last"] = log[-1]["sec_per_kimg"]
    res["schedule"] = ", then ".join(f"{lr:g} to {end:g} kimg" for end, lr in phases)
    (assets / "generator.json").write_text(json.dumps(res, indent=2) + "\n")
    (assets / "cards").mkdir(exist_ok=True)
    shutil.copyfile(workdir / "assessment" / "seed_grid.png", assets / "cards" / "generator_seed_grid.png")
    (assets / "cards" / "generator.md").write_text(card(cfg, res))
    click.echo(json.dumps({k: v for k, v in res.items() if not isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
    main()
