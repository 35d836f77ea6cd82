"""Write a rendered population as an image folder (one sub-folder per identity) with labels."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..errors import SynthfaceError
from ..fileio import atomic_write, disk_full_message, sweep_temporaries, temp_path
from ..locks import LOCK_DIR, DirectoryLock
from .renderer import GENDERS, GROUPS
from .world import World, take

# a smile above this counts as smiling: the mean of the renderer's smile draw, so about half the
# images smile (draw_nuisance: N(0.3, 0.45), clipped to [-0.5, 1.2])
SMILE_THRESHOLD = 0.3


def image_labels(world: World, identity: dict, image_indices) -> dict:
    """What the renderer knows about image j of each identity row besides who it is: `smile`
    (1 when the drawn smile exceeds SMILE_THRESHOLD), `smile_score` (the drawn value) and `glasses`
    (1 when worn; people with the glasses habit wear them 80 % of the time, others 5 %, so glasses
    go with identity). The same draws render() makes, so the labels match the pixels."""
    q = world.nuisance(identity, image_indices)
    return {"smile": (q["smile"] > SMILE_THRESHOLD).astype(int), "smile_score": np.round(q["smile"], 4),
            "glasses": np.asarray(q["glasses"], bool).astype(int)}


def render_population(world: World, identity_indices, images_per_identity: int, size: int = 64,
                      batch: int = 256):
    """Yield (identity batch row, image index, uint8 image) for every image of every identity."""
    ids = list(identity_indices)
    for start in range(0, len(ids), max(1, batch // images_per_identity)):
        chunk = ids[start:start + max(1, batch // images_per_identity)]
        ident = world.identities(chunk)
        rows = np.repeat(np.arange(len(chunk)), images_per_identity)
        reps = take(ident, rows)
        j = np.tile(np.arange(images_per_identity), len(chunk))
        imgs = world.render(reps, j, size)
        for r, jj, im in zip(rows, j, imgs):
            yield {k: v[r] for k, v in ident.items()}, int(jj), im


def write_image_folder(world: World, outdir, n_identities: int, images_per_identity: int, size: int = 64,
                       first_identity: int = 0, log: Callable = print, per_image_labels: bool = False,
                       workers: int = 1) -> Path:
    """`outdir/<identity>/<image>.png` plus `labels.jsonl` (identity, group, gender, age per image;
    with per_image_labels also smile, smile_score and glasses, see image_labels: off by default so
    existing folders stay byte-identical). Rendered into a temporary folder inside `outdir`, moved
    into place at the end and labels.jsonl written last, so a folder without labels.jsonl is
    unfinished (a rerun redoes it). The folder is this process's alone while it writes; an existing
    folder keeps its mode. workers > 1 renders contiguous identity ranges in that many processes:
    the same files, byte for byte (every image depends only on the world, its identity and its index)."""
    outdir = Path(outdir)
    if (outdir / "labels.jsonl").exists():
        log(f"{outdir} exists, keeping it")
        return outdir
    with disk_full_message(outdir, "run the same `synthface world render` command again"), \
            DirectoryLock(outdir, "render", log=log, sweep=sweep_temporaries):
        foreign = sorted(p.name for p in outdir.iterdir()
                         if p.name != LOCK_DIR and not (p.is_dir() and p.name.isdigit()))
        if foreign:
            raise SynthfaceError(f"{outdir} already holds other files ({', '.join(foreign[:3])}); render into a new or "
                                 "empty folder")
        tmp = temp_path(outdir / "render", directory=True)
        try:
            ids = range(first_identity, first_identity + n_identities)
            if workers > 1 and n_identities > 1:
                lines = _render_parallel(tmp, world, ids, images_per_identity, size, log, per_image_labels, workers)
            else:
                lines = _render_into(tmp, world, ids, images_per_identity, size, log, per_image_labels)
            for d in sorted(tmp.iterdir()):
                shutil.rmtree(outdir / d.name, ignore_errors=True)  # left by a run that failed while moving
                os.replace(d, outdir / d.name)
            atomic_write(outdir / "labels.jsonl", lambda f: f.write(("\n".join(lines) + "\n").encode()))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return outdir


def _render_parallel(tmp: Path, world: World, ids: range, images_per_identity: int, size: int, log: Callable,
                     per_image_labels: bool, workers: int) -> list[str]:
    """_render_into over `workers` contiguous slices of ids in spawned processes (the renderer is
    numpy; spawn keeps the parent's threads out of the children); the lines come back in order."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = min(workers, len(ids))
    bounds = np.linspace(0, len(ids), workers + 1).astype(int)
    parts = [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    log(f"  rendering {len(ids)} identities in {workers} processes")
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_render_into, tmp, world, part, images_per_identity, size, _quiet, per_image_labels)
                   for part in parts]
        return [line for f in futures for line in f.result()]


def _quiet(message: str) -> None:
    """A picklable no-op log for the worker processes."""


def _render_into(tmp: Path, world: World, ids, images_per_identity: int, size: int, log: Callable,
                 per_image_labels: bool) -> list[str]:
    """Render every image into `tmp`/<identity>/<image>.png; returns the labels.jsonl lines."""
    lines = []
    for n, (ident, j, im) in enumerate(render_population(world, ids, images_per_identity, size)):
        rel = f"{int(ident['index']):06d}/{j:03d}.png"
        (tmp / rel).parent.mkdir(exist_ok=True)
        Image.fromarray(im).save(tmp / rel)
        row = {"file": rel, "identity": int(ident["index"]), "group": GROUPS[ident["group"]],
               "gender": GENDERS[ident["gender"]], "age": round(float(ident["age"]), 1)}
        if per_image_labels:
            extra = image_labels(world, {k: np.asarray([v]) for k, v in ident.items()}, [j])
            row.update({k: v[0].item() for k, v in extra.items()})
        lines.append(json.dumps(row))
        if (n + 1) % 5000 == 0:
            log(f"  {n + 1} images")
    return lines
