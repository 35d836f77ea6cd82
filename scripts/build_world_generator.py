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

    python scripts/build_world_generator.py --workdir runs/world-v2 --identities 12000 --images 2 \
        --extra-rare 1000 --threads 1 --no-ship --keep-snapshots     # issue 25: more people, more of the rare female cells

--extra-rare adds that many more people of group1/female and of group2/female each (identities
20,000,000+, a range no evaluation uses): the shipped generator's own faces cover those cells' renderer
people least (docs/benchmarks.md), and more of their variety to learn from is the lever left once the
sampling side is ruled out; the population stays biased (group3/male remains the largest cell).
--resume-from DIR seeds a new run directory with a committed training state (checkpoint.pt and log.jsonl, as
`--save-state DIR` writes them): the run directories under runs/ do not survive a fresh clone, and the
from-scratch build takes several sessions (issue 25; scripts/world_generator_v2/ holds its state).
--no-ship trains (and resumes) without touching the shipped assets; assess a snapshot with
`synthface world assess --network ...` and scripts/measure_generator_coverage.py --network ....
"""

import json
import shutil
from pathlib import Path

import click
import torch
from safetensors import safe_open

from synthface.generator import load_generator
from synthface.labelling import OnnxClassifier
from synthface.train.stylegan2 import TrainConfig, train
from synthface.world import BIASED, World
from synthface.world.assess import assess_generator, world_reference
from synthface.world.dataset import write_image_folder

DATASET = dict(identities=6000, images_per_identity=6, size=64)
FINETUNE_KIMG = 40.0
EXTRA_FIRST = 20_000_000
RARE_CELLS = (("group1", "female"), ("group2", "female"))


def write_training_set(workdir: Path, identities: int, images: int, extra_rare: int, workers: int = 1) -> Path:
    """The biased population as an image folder; with extra_rare, plus that many people of each rare
    female cell in sibling folders (the trainer reads every image under the returned folder)."""
    if extra_rare <= 0:
        return write_image_folder(World(seed=0, distribution=BIASED), workdir / "biased64", identities, images,
                                  DATASET["size"], workers=workers)
    root = workdir / "data"
    root.mkdir(parents=True, exist_ok=True)
    write_image_folder(World(seed=0, distribution=BIASED), root / "biased", identities, images, DATASET["size"],
                       workers=workers)
    for k, (group, gender) in enumerate(RARE_CELLS):
        # same seed, one cell: people drawn as the renderer draws that cell's people
        cell = World(seed=0, distribution={"group": {group: 1.0}, "gender": {gender: 1.0}})
        write_image_folder(cell, root / f"{group}_{gender}", extra_rare, images, DATASET["size"],
                           first_identity=EXTRA_FIRST + k * 1_000_000, workers=workers)
    return root


def copy_state(src: Path, dst: Path) -> None:
    """checkpoint.pt and log.jsonl from src to dst, each written whole (a temporary file, then a rename); the log
    is cut at the checkpoint (training runs on past the last checkpoint, and a resumed run logs those steps again).

    Adam's first moments are left out of the copy and restored as zeros: with beta1 = 0 (this build's betas
    (0, 0.99)) a step overwrites them with the gradient before reading them, so nothing is lost, and the saved
    state stays under 20 MB for git."""
    if not (src / "checkpoint.pt").is_file():
        raise click.ClickException(f"{src} holds no checkpoint.pt to copy")
    dst.mkdir(parents=True, exist_ok=True)
    st = torch.load(src / "checkpoint.pt", map_location="cpu", weights_only=True)
    for key in ("opt_G", "opt_D"):
        if any(g["betas"][0] != 0 for g in st[key]["param_groups"]):
            raise click.ClickException(f"{src}: {key} has beta1 != 0; its first moments cannot be dropped")
        for state in st[key]["state"].values():
            if "exp_avg" in state:
                del state["exp_avg"]
            else:
                state["exp_avg"] = torch.zeros_like(state["exp_avg_sq"])
    torch.save(st, dst / "checkpoint.pt.tmp")
    (dst / "checkpoint.pt.tmp").replace(dst / "checkpoint.pt")
    if (src / "log.jsonl").is_file():
        rows = [r for r in (src / "log.jsonl").read_text().splitlines() if r.strip()]
        kept = [r for r in rows if json.loads(r).get("nimg", 0) <= int(st["nimg"])]
        (dst / "log.jsonl.tmp").write_text("".join(r + "\n" for r in kept))
        (dst / "log.jsonl.tmp").replace(dst / "log.jsonl")
    click.echo(f"training state at {int(st['nimg']) / 1000:.1f} kimg copied from {src} to {dst}")


def config(data: Path, run: Path, kimg: float, lr: float = 0.0025) -> TrainConfig:
    return TrainConfig(data=str(data), outdir=str(run), resolution=64, z_dim=128, w_dim=128, mapping_layers=4,
                       channel_base=1024, channel_max=128, batch=32, kimg=kimg, g_lr=lr, d_lr=lr, seed=0,
                       snapshot_kimg=10)


def describe_metadata(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


def card(cfg: TrainConfig, res: dict, data: dict) -> str:
    ref = res["renderer_reference"]
    rows = "\n".join(f"| {c} | {100 * res['training_cell_frequency'][c]:.1f} | {100 * ref['cell_frequency'][c]:.1f} | "
                     f"{100 * res['cell_frequency'][c]:.1f} |" for c in res["cell_frequency"])
    return f"""# generator (demo-world StyleGAN2)

- **Network:** synthface's StyleGAN2 (`skip` generator, residual discriminator), {cfg.resolution}x{cfg.resolution},
  z/w {cfg.z_dim}/{cfg.w_dim}, {cfg.mapping_layers} mapping layers, channels base {cfg.channel_base} / max {cfg.channel_max}.
- **Data:** the biased demo-world population (world seed 0; groups 25/15/60 %, genders 35/65 %;
  {data['identities']} identities x {data['images']} images at {DATASET['size']}x{DATASET['size']}){extra_text(data)},
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


def extra_text(data: dict) -> str:
    if data["extra_rare"] <= 0:
        return ""
    return (f", plus {data['extra_rare']} more people x {data['images']} images of each of "
            + " and ".join(f"{g}/{s}" for g, s in RARE_CELLS))


@click.command()
@click.option("--workdir", default="build/world", show_default=True)
@click.option("--identities", default=DATASET["identities"], show_default=True, help="people of the biased population")
@click.option("--images", default=DATASET["images_per_identity"], show_default=True, help="images per person")
@click.option("--extra-rare", default=0, show_default=True,
              help="more people of group1/female and of group2/female each")
@click.option("--ship/--no-ship", default=True, show_default=True,
              help="copy the result into the assets and assess it (--no-ship: train only)")
@click.option("--assets", default="synthface/world/assets", show_default=True)
@click.option("--kimg", default=720.0, show_default=True, help="main phase, at lr 0.0025")
@click.option("--finetune-kimg", default=FINETUNE_KIMG, show_default=True, help="then this many more at --finetune-lr")
@click.option("--finetune-lr", default=0.0005, show_default=True)
@click.option("--threads", default=0, show_default=True)
@click.option("--render-workers", default=1, show_default=True, help="processes rendering the training set")
@click.option("--keep-snapshots", is_flag=True, help="keep every 10-kimg snapshot, to compare them afterwards")
@click.option("--skip-training", is_flag=True, help="export and assess the run's latest snapshot as it is")
@click.option("--resume-from", type=click.Path(file_okay=False), default=None,
              help="a saved training state (checkpoint.pt, log.jsonl) to start from when the run has none")
@click.option("--save-state", type=click.Path(file_okay=False), default=None,
              help="copy the run's training state there and stop (to commit it)")
def main(workdir, identities, images, extra_rare, ship, assets, kimg, finetune_kimg, finetune_lr, threads,
         render_workers, keep_snapshots, skip_training, resume_from, save_state):
    workdir, assets = Path(workdir), Path(assets)
    run = workdir / "stylegan2"
    if save_state:
        copy_state(run, Path(save_state))
        return
    data = write_training_set(workdir, identities, images, extra_rare, render_workers)
    if resume_from and not (run / "checkpoint.pt").exists():
        copy_state(Path(resume_from), run)
    # At the full rate the samples stopped improving (the CPU build plateaued from ~680 kimg);
    # going on at a lower rate lets G settle, which sharpens the cues the classifiers read.
    phases = [(kimg, 0.0025)] + ([(kimg + finetune_kimg, finetune_lr)] if finetune_kimg > 0 else [])
    snapshot = run / "network-snapshot.safetensors"
    for end, lr in phases:
        cfg = config(data, run, end, lr)
        cfg.threads, cfg.keep_snapshots = threads, keep_snapshots
        if not skip_training:
            snapshot = train(cfg)  # resumes; a phase already done returns at once
    if not ship:
        click.echo(f"G_ema -> {snapshot} (not shipped)")
        return
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
    (assets / "cards" / "generator.md").write_text(
        card(cfg, res, dict(identities=identities, images=images, extra_rare=extra_rare)))
    click.echo(json.dumps({k: v for k, v in res.items() if not isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
    main()
