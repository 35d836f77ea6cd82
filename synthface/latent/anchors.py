"""Anchor latents: real faces of each cell inverted into W, so that new identities can be drawn between them.

Why: in the rare cells the generator's prior seldom makes the variety real people of the cell have (the demo
generator's group2/female faces nearly all share one hairstyle), and no setting of the latent model's cell
Gaussian recovers it (docs/benchmarks.md). The generator can still approach many of those faces when asked for
them directly: each reference face of a cell is inverted into one w (Adam on pixel error plus the recogniser's
identity term, from the closest of a pool of prior faces), and identity selection draws candidates as convex
mixes of two anchors of the cell, w = t w_a + (1 - t) w_b with t in [MIX_LOW, MIX_HIGH]. A mix is a new face
between two real ones, never one of them: the anchor faces join the leakage gallery, so a candidate the
recogniser matches to any anchor person is rejected like any other too-similar face.

The file (.npz, loaded without pickle): w [N, w_dim] float32, cell [N] cell names ('group=g,gender=s'),
crops [N, 112, 112, 3] uint8 ArcFace crops of the anchor faces (embedded with the dataset's own recogniser at
generate time), generator_hash, source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..errors import SynthfaceError
from ..fileio import atomic_write

MIX_LOW, MIX_HIGH = 0.3, 0.7   # a mix stays away from both of its anchors
INIT_POOL_SEEDS = range(1000, 3000)  # prior faces an inversion may start from (the closest one)
STEPS, LR, BATCH = 150, 0.02, 100


def invert_images(G, images: np.ndarray, twin, steps: int = STEPS, lr: float = LR, batch: int = BATCH,
                  log: Optional[Callable[[str], None]] = None,
                  cell_loss: Optional[Callable[[torch.Tensor, slice], torch.Tensor]] = None) -> np.ndarray:
    """uint8 faces [N, H, W, 3] at the generator's resolution and alignment -> w [N, w_dim] (one w for all
    layers), by `steps` Adam steps on 10 x pixel MSE + (1 - cos) of `twin`'s embeddings (a differentiable
    recogniser, identity.refine.differentiable_twin), plus `cell_loss(images 0..255, rows)` (per face, e.g.
    LabelTerm: keeps each inversion in its face's cell) where given. Faces are inverted `batch` at a time;
    each face's w depends only on its own loss terms and its batch's size."""
    from ..generator.synthesis import prior_latents, synthesize
    if images.ndim != 4 or images.shape[1:3] != (G.img_resolution, G.img_resolution) or images.shape[3] != 3:
        raise SynthfaceError(f"anchor faces must be [N, {G.img_resolution}, {G.img_resolution}, 3] images aligned "
                             f"as the generator's, got {tuple(images.shape)}")
    pool = prior_latents(G, list(INIT_POOL_SEEDS), 1.0)
    # the closest prior face is found at (at most) 64 px, so a 1024 px generator's pool stays small in memory
    pool_img = torch.cat([_small(synthesize(G, pool[s:s + 64])) for s in range(0, len(pool), 64)])
    was = [p.requires_grad for p in G.parameters()]
    G.requires_grad_(False)
    out = []
    try:
        for s in range(0, len(images), batch):
            target = torch.as_tensor(images[s:s + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
            start = torch.cdist(_small(images[s:s + batch]).flatten(1), pool_img.flatten(1)).argmin(1).numpy()
            w = torch.as_tensor(pool[start]).clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=lr)
            with torch.no_grad():
                e_ref = twin.embed_tensor((target * 127.5 + 128).clamp(0, 255))
            rows = slice(s, s + len(target))
            for it in range(steps):
                img = G.synthesis(w[:, None].repeat(1, G.num_ws, 1), noise_mode="const")
                img255 = (img * 127.5 + 128).clamp(0, 255)
                e = twin.embed_tensor(img255)
                loss = (img - target).square().mean() * 10 + (1 - (e * e_ref).sum(-1)).mean()
                if cell_loss is not None:
                    loss = loss + cell_loss(img255, rows).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            out.append(w.detach().numpy())
            if log:
                log(f"anchors: inverted {min(s + batch, len(images))} of {len(images)} faces (last loss {loss.item():.3f})")
    finally:
        for p, r in zip(G.parameters(), was):
            p.requires_grad_(r)
    return np.concatenate(out) if out else np.zeros((0, G.w_dim), np.float32)


class LabelTerm:
    """Per face: how far the labeller is from being `confidence` sure of the face's own cell,
    sum over attributes of max(0, -log p(cell's class) + log confidence), times `weight`.

    Why: a rare cell's faces start from (and drift toward) the generator's common look; in the demo world
    59 % of the mixes of two inverted group2 women were labelled male and thrown away by the label check,
    older women's most often, so the kept identities lost the cell's older faces. The term is zero once
    the labeller is sure, so it does not push a face past its cell."""

    def __init__(self, labeller, cells, schema, weight: float = 1.0, confidence: float = 0.99):
        self.weight, self.margin = float(weight), -float(np.log(confidence))
        parts = [l for l in getattr(labeller, "labellers", [labeller]) if hasattr(l, "logits_tensor")]
        if not parts:
            raise SynthfaceError("the anchors' label term needs a labeller torch can differentiate (an ONNX "
                                 "classifier: world, world-audit or onnx:PATH); give one with --labeller or "
                                 "--label-weight 0")
        self.net = parts[0]
        if getattr(self.net, "activation", "softmax") != "softmax":
            raise SynthfaceError(f"the anchors' label term reads class probabilities as a softmax, but labeller "
                                 f"{self.net.path} uses {self.net.activation}; use --label-weight 0")
        heads = {}
        for name in schema:
            if name not in self.net.attributes:
                raise SynthfaceError(f"the anchors' label term: labeller {self.net.path} has no {name!r} head "
                                     f"(it has {', '.join(self.net.attributes)}); use --label-weight 0")
            classes, (a, b) = self.net.attributes[name]
            want = []
            for c in cells:
                value = dict(p.split("=") for p in c.split(",")).get(name)
                if value not in classes:
                    raise SynthfaceError(f"the anchors' label term: cell {c!r} has no {name} class the labeller "
                                         f"knows ({', '.join(classes)}); use --label-weight 0")
                want.append(classes.index(value))
            heads[name] = (a, b, torch.as_tensor(want))
        self.heads = heads

    def __call__(self, images255: torch.Tensor, rows: slice) -> torch.Tensor:
        if self.weight == 0:
            return images255.new_zeros(len(images255))
        z = self.net.logits_tensor(images255)
        loss = images255.new_zeros(len(images255))
        for a, b, want in self.heads.values():
            nll = -torch.log_softmax(z[:, a:b], 1).gather(1, want[rows].to(z.device)[:, None])[:, 0]
            loss = loss + (nll - self.margin).clamp(min=0)
        return self.weight * loss


def _small(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, h, h] in [-1, 1], h = min(H, 64) (area-averaged)."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return torch.nn.functional.adaptive_avg_pool2d(x, min(x.shape[-1], 64))


def save_anchors(path, w: np.ndarray, cells, images: np.ndarray, generator_hash: str, source: str,
                 tuned_from: str = "", tuned_network: str = "") -> Path:
    """Write the anchor file atomically (crops from the faces, as the leakage check embeds them). For anchors of
    a tuned generator, `tuned_from` is the hash of the generator it was tuned from and `tuned_network` its file."""
    from ..align import arcface_crop112
    crops = arcface_crop112(images)
    arrays = {"w": np.asarray(w, np.float32), "cell": np.array([str(c) for c in cells]), "crops": crops,
              "generator_hash": np.array(generator_hash), "source": np.array(source),
              "tuned_from": np.array(tuned_from), "tuned_network": np.array(tuned_network)}
    path = Path(path)
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def load_anchors(path, G=None) -> dict:
    """The anchor file as {"w", "cell", "crops", "generator_hash", "source", "tuned_from", "tuned_network"}; a
    clear error when it is not one or was made for another generator."""
    from ..generator.synthesis import generator_hash
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in ("w", "cell", "crops", "generator_hash", "source")}
            for k in ("tuned_from", "tuned_network"):  # absent from files written before tuning existed
                a[k] = str(z[k]) if k in z.files else ""
    except (OSError, ValueError, KeyError) as e:
        raise SynthfaceError(f"--anchors {path}: not an anchor file written by `synthface anchors` ({e})") from None
    n = len(a["w"])
    if a["w"].ndim != 2 or len(a["cell"]) != n or len(a["crops"]) != n or not np.isfinite(a["w"]).all():
        raise SynthfaceError(f"--anchors {path}: inconsistent arrays (w {a['w'].shape}, cell {a['cell'].shape}, "
                             f"crops {a['crops'].shape}); rebuild it with `synthface anchors`")
    a["generator_hash"], a["source"] = str(a["generator_hash"]), str(a["source"])
    if G is not None and a["generator_hash"] != generator_hash(G):
        if a["tuned_from"] and a["tuned_from"] == generator_hash(G):
            raise SynthfaceError(f"--anchors {path} belongs to the generator tuned on its faces "
                                 f"({a['tuned_network']}): pass that file as --network")
        raise SynthfaceError(f"--anchors {path} was inverted into another generator ({a['generator_hash']}); "
                             "rebuild it with `synthface anchors --network` of this dataset's generator")
    return a


def anchors_by_cell(anchors: dict, cell_names, min_per_cell: int = 2) -> dict:
    """{cell name: w [M, w_dim]} for the requested cells that have anchors; a cell with anchors but fewer
    than `min_per_cell` is refused (a mix needs two)."""
    out = {}
    for name in cell_names:
        m = anchors["cell"] == name
        if m.any():
            if m.sum() < min_per_cell:
                raise SynthfaceError(f"--anchors: cell {name} has {int(m.sum())} anchor face(s); a mix needs at "
                                     f"least {min_per_cell}: add faces of it or leave it out of the anchor file")
            out[name] = anchors["w"][m]
    return out


def anchor_mix(W_cell: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One candidate w: a convex mix of two different anchors of the cell."""
    a, b = rng.choice(len(W_cell), 2, replace=False)
    t = rng.uniform(MIX_LOW, MIX_HIGH)
    return (t * W_cell[a] + (1 - t) * W_cell[b]).astype(np.float32)


TUNE_LR, TUNE_BATCH, LOCALITY_BATCH, LOCALITY_WEIGHT = 1e-3, 16, 16, 10.0
LOCALITY_SEEDS = range(50_000, 54_000)  # prior faces the tuned generator must keep drawing as before


def tune_generator(G, W: np.ndarray, images: np.ndarray, twin, steps: int, lr: float = TUNE_LR,
                   batch: int = TUNE_BATCH, locality_weight: float = LOCALITY_WEIGHT, seed: int = 0,
                   log: Optional[Callable[[str], None]] = None):
    """Pivotal tuning (Roich et al. 2022) of the synthesis network around the anchors: a copy of G whose
    synthesis draws each anchor face at its inverted w (its pivot) as closely as it can, while a locality
    term keeps the faces of prior latents, and of points between a pivot and a prior latent, as G drew them.

    Why: an inversion into W reaches only what G already makes; the demo generator blurs group2/female's
    textured and coloured hair and its older faces, so the mixes between inversions miss those real people
    (docs/benchmarks.md). Tuning lets G make them near the pivots and hence between them. The mapping network
    is left as it was, so the latent model fitted on G's W still applies; each image is labelled again anyway.
    Loss per step: 10 x pixel MSE + (1 - cos) of `twin` on `batch` anchors, plus `locality_weight` x 10 x
    pixel MSE against G on LOCALITY_BATCH latents. The default weight is the one that kept the demo world's other
    cells' coverage (weight 1 cost them up to 0.4 in the attribute net's space; docs/benchmarks.md)."""
    import copy

    from ..generator.synthesis import prior_latents
    if steps < 1 or len(W) < 1:
        raise SynthfaceError(f"tuning needs at least one step and one anchor (got {steps} steps, {len(W)} anchors)")
    device = next(G.parameters()).device
    Gt = copy.deepcopy(G).eval()
    Gt.requires_grad_(False)
    Gt.synthesis.requires_grad_(True)
    rng = np.random.default_rng(seed)
    pivots = torch.as_tensor(np.asarray(W, np.float32), device=device)
    target = torch.as_tensor(images).permute(0, 3, 1, 2).float().to(device) / 127.5 - 1
    with torch.no_grad():
        e_ref = torch.cat([twin.embed_tensor((target[s:s + 100] * 127.5 + 128).clamp(0, 255))
                           for s in range(0, len(target), 100)])
    pool = torch.as_tensor(prior_latents(G, list(LOCALITY_SEEDS), 1.0), device=device)
    opt = torch.optim.Adam(Gt.synthesis.parameters(), lr=lr)
    draw = lambda g, w: g.synthesis(w[:, None].repeat(1, g.num_ws, 1), noise_mode="const")  # noqa: E731
    half = LOCALITY_BATCH // 2
    for it in range(steps):
        b = torch.as_tensor(rng.choice(len(pivots), min(batch, len(pivots)), replace=False), device=device)
        img = draw(Gt, pivots[b])
        e = twin.embed_tensor((img * 127.5 + 128).clamp(0, 255))
        rec = (img - target[b]).square().mean() * 10 + (1 - (e * e_ref[b]).sum(-1)).mean()
        wl = pool[torch.as_tensor(rng.choice(len(pool), LOCALITY_BATCH, replace=False), device=device)]
        t = torch.as_tensor(rng.uniform(0, 1, (half, 1)), dtype=torch.float32, device=device)
        near = pivots[b[torch.as_tensor(rng.integers(0, len(b), half), device=device)]]
        wl = torch.cat([wl[:half], t * near + (1 - t) * wl[half:]])
        with torch.no_grad():
            before = draw(G, wl)
        loc = (draw(Gt, wl) - before).square().mean() * 10
        loss = rec + locality_weight * loc
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log and ((it + 1) % 100 == 0 or it + 1 == steps):
            log(f"anchors: tuned the generator {it + 1} of {steps} steps (anchors {rec.item():.3f}, "
                f"locality {loc.item():.4f})")
    Gt.requires_grad_(False)
    return Gt


def faces_by_cell(images: np.ndarray, model, labeller, specs, confidence: float = 0.99) -> tuple[np.ndarray, list]:
    """The faces the labeller puts in one of the requested cells at `confidence`, and their cell names
    (the latent model names the cells, as `generate --cells` does)."""
    from .cells import label_cells, matches, spec_name
    idx, conf = label_cells(labeller.predict_proba(images), model.attributes_, confidence)
    keep, cells = np.zeros(len(images), bool), np.array([""] * len(images), dtype=object)
    for spec in specs:
        m = matches(idx, conf, spec, model.schema_, model.attributes_) & ~keep
        keep |= m
        cells[m] = spec_name(spec)
    return images[keep], [str(c) for c in cells[keep]]


def save_tuned_generator(Gt, G, path, network_name: str, note: str) -> tuple[str, str]:
    """Write the tuned generator `Gt` with what makes it usable in G's place: the hash of G it was tuned from
    (latent.sampling.check_generator) and `network_name`, the network G was loaded as ('world' keeps the demo
    world's defaults for it, generator.base_network). Returns (hash of Gt, hash of G)."""
    from ..generator.checkpoint import save_generator
    from ..generator.synthesis import generator_hash
    base = generator_hash(G)
    save_generator(Gt, path, source=f"synthface: {note}",
                   extra_metadata={"tuned_from": base, "tuned_from_network": network_name, "tuning": note})
    return generator_hash(Gt), base


def build_anchors(G, images: np.ndarray, cells, twin, out, source: str, steps: int = STEPS, batch: int = BATCH,
                  log: Optional[Callable[[str], None]] = None, cell_loss=None, tune_steps: int = 0,
                  tuned_network=None, network_name: str = "", locality_weight: float = LOCALITY_WEIGHT) -> dict:
    """Invert `images` (one cell name each) and write the anchor file `out`; with `tune_steps`, also tune the
    generator around them (tune_generator) and write it to `tuned_network` (save_tuned_generator), the generator
    the anchors then belong to. Returns per-cell counts."""
    from ..generator.synthesis import generator_hash
    if len(images) == 0:
        raise SynthfaceError("no anchor faces: none of the images is confidently in a requested cell")
    if tune_steps and not tuned_network:
        raise SynthfaceError("tuning the generator needs a file to write it to (--tuned-network PATH)")
    W = invert_images(G, images, twin, steps=steps, batch=batch, log=log, cell_loss=cell_loss)
    if tune_steps:
        Gt = tune_generator(G, W, images, twin, tune_steps, locality_weight=locality_weight, log=log)
        note = (f"pivotal tuning on the anchors of {out}, {tune_steps} steps, locality weight {locality_weight:g}, "
                f"{len(W)} anchor faces ({source})")
        own, tuned_from = save_tuned_generator(Gt, G, tuned_network, network_name, note)
    else:
        own, tuned_from = generator_hash(G), ""
    save_anchors(out, W, cells, images, own, source, tuned_from=tuned_from,
                 tuned_network=str(tuned_network) if tune_steps else "")
    names, counts = np.unique(np.array(cells), return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts)}
