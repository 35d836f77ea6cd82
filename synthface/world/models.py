"""The demo world's recognisers and attribute classifiers: small CNNs, their training on
rendered identities, measured accuracy, and ONNX export in insightface's formats.

Two of each kind are trained independently (different architecture, seed and identity
range): the first ones are the pipeline's labeller and embedder, the second ones only audit
results downstream, so no result is judged by the model that produced it.

Input conventions are insightface's: recognisers take the 112x112 ArcFace crop as RGB
(x - 127.5) / 127.5; the genderage model takes the 96x96 box crop as RGB (x - 127.5) / 128.
Normalisation is not baked into the graphs, because insightface applies it itself.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..align import arcface_matrix, attribute_matrix, warp_affine
from ..fairness.metrics import kfold_accuracy
from ..train.losses import CosFace, MarginHead
# the architectures live in synthface.nets.world_nets (importable without the world); re-exported here
from ..nets.world_nets import (AttributeLogits, AttributeNet, GenderAgeHead, Recogniser, _bn_act,  # noqa: F401
                              _DepthwiseBlock, _Residual, backbone)
from .renderer import GENDERS, GROUPS
from .world import World, take

RECOGNISER_NORM = (127.5, 127.5)
ATTRIBUTE_NORM = (127.5, 128.0)


# ------------------------------------------------------------------------------ data

@dataclass
class ModelSpec:
    name: str
    task: str              # recognition | attributes
    arch: str              # resnet | mobile | plain
    crop: str              # arcface (112) | attribute (96)
    seed: int
    first_identity: int    # identity range of the training split
    identities: int
    images_per_identity: int
    epochs: int
    batch: int = 128
    lr: float = 2e-3


def render_pool(world: World, first: int, n_ids: int, k: int, size: int = 64, log: Callable = print) -> dict:
    """k images of each of n_ids identities, with labels; images uint8 [N, size, size, 3]."""
    imgs, ident_rows = [], []
    t0 = time.time()
    step = 64
    for s in range(first, first + n_ids, step):
        ids = list(range(s, min(s + step, first + n_ids)))
        ident = world.identities(ids)
        rows = np.repeat(np.arange(len(ids)), k)
        reps = take(ident, rows)
        imgs.append(world.render(reps, np.tile(np.arange(k), len(ids)), size))
        ident_rows.append({key: reps[key] for key in ("index", "group", "gender", "age")})
    pool = {key: np.concatenate([r[key] for r in ident_rows]) for key in ident_rows[0]}
    pool["images"] = np.concatenate(imgs)
    pool["label"] = pool["index"] - first
    log(f"rendered {len(pool['images'])} images of {n_ids} identities in {time.time() - t0:.0f}s")
    return pool


def crop_batch(images_u8: np.ndarray, crop: str, rng: np.random.Generator | None = None) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float crops in 0..255, with random jitter, blur, noise and colour
    changes when `rng` is given (so the models also read slightly degraded generator output)."""
    x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float()
    N, _, H, _ = x.shape
    out = 112 if crop == "arcface" else 96
    M = arcface_matrix(H, out) if crop == "arcface" else attribute_matrix(H, out)
    M = np.broadcast_to(M, (N, 2, 3)).copy()
    if rng is not None:
        # small similarity jitter in the output frame: rotation, scale, shift
        ang = rng.normal(0, 0.04, N)
        sc = np.exp(rng.normal(0, 0.04, N))
        sh = rng.normal(0, 0.02 * out, (N, 2))
        c = out / 2
        R = np.stack([np.stack([np.cos(ang) * sc, -np.sin(ang) * sc], 1),
                      np.stack([np.sin(ang) * sc, np.cos(ang) * sc], 1)], 1)
        A = np.concatenate([R, (np.array([c, c]) - R @ np.array([c, c]) + sh)[..., None]], 2)
        M = np.einsum("nij,njk->nik", np.concatenate([A, np.broadcast_to([[[0, 0, 1]]], (N, 1, 3))], 1),
                      np.concatenate([M, np.broadcast_to([[[0, 0, 1]]], (N, 1, 3))], 1))[:, :2]
        blur = torch.from_numpy(rng.random(N) < 0.3)
        if blur.any():
            x[blur] = F.avg_pool2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), 3, 1)
        low = torch.from_numpy(rng.random(N) < 0.15)
        if low.any():
            x[low] = F.interpolate(F.interpolate(x[low], scale_factor=0.5, mode="bilinear", antialias=True),
                                   size=(H, H), mode="bilinear")
        x = x * torch.from_numpy(rng.uniform(0.88, 1.12, (N, 3, 1, 1))).float()
        x = x + torch.from_numpy(rng.normal(0, 1, (N, 1, 1, 1)) * 4).float()
        x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(int(rng.integers(2**31)))) * \
            torch.from_numpy(rng.uniform(0, 6, (N, 1, 1, 1))).float()
        x = x.clamp(0, 255)
    return warp_affine(x, M, out)


def normalise(x: torch.Tensor, task: str) -> torch.Tensor:
    mean, std = RECOGNISER_NORM if task == "recognition" else ATTRIBUTE_NORM
    return (x - mean) / std


# ------------------------------------------------------------------------------ training

def build(spec: ModelSpec) -> nn.Module:
    size = 112 if spec.crop == "arcface" else 96
    return Recogniser(spec.arch, in_size=size) if spec.task == "recognition" else AttributeNet(spec.arch, in_size=size)


class _PoolItems(torch.utils.data.Dataset):
    """The rendered pool as training items. Items are row numbers; `collate` crops and degrades a
    whole batch at once (warping a batch is far cheaper than one image at a time), with a
    generator seeded by (seed, epoch, rows), so a resumed run draws the same augmentation."""

    def __init__(self, pool: dict, spec: ModelSpec):
        self.pool, self.spec, self.epoch = pool, spec, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return len(self.pool["images"])

    def __getitem__(self, i):
        return int(i)

    def collate(self, rows):
        rows = np.asarray(rows)
        rng = np.random.default_rng([self.spec.seed, self.epoch, *rows[:4].tolist()])
        batch = {"image": normalise(crop_batch(self.pool["images"][rows], self.spec.crop, rng), self.spec.task)}
        for key in ("label", "group", "gender"):
            batch[key] = torch.from_numpy(self.pool[key][rows])
        batch["age"] = torch.from_numpy(self.pool["age"][rows] / 100).float()
        return batch


class _RecognitionLoss(nn.Module):
    """CosFace (s = 30, m = 0.35) over the training identities."""

    def __init__(self, net: nn.Module, identities: int):
        super().__init__()
        self.net = net
        self.head = MarginHead(128, identities, CosFace(30.0, 0.35))

    def forward(self, batch):
        return self.head(self.net(batch["image"]), batch["label"])


class _AttributeLoss(nn.Module):
    """Cross-entropy on group and gender, smooth L1 on age / 100."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, batch):
        g, s, a = self.net(batch["image"])
        return (F.cross_entropy(g, batch["group"]) + F.cross_entropy(s, batch["gender"])
                + 5 * F.smooth_l1_loss(a[:, 0], batch["age"], beta=0.05))


def train_model(spec: ModelSpec, pool: dict, log: Callable = print, out=None, resume: bool = False,
                device: str = "cpu") -> nn.Module:
    """Train one of the world's nets on synthface's training stack (AdamW, one-cycle schedule).
    `out` keeps the run's checkpoint and log.jsonl (resumable with resume=True); without it they
    go to a temporary folder."""
    import tempfile

    from ..train.engine import Trainer, seed_everything

    seed_everything(spec.seed)
    net = build(spec)
    model = _RecognitionLoss(net, spec.identities) if spec.task == "recognition" else _AttributeLoss(net)
    items = _PoolItems(pool, spec)

    def optimizer(m):
        return torch.optim.AdamW(m.parameters(), lr=spec.lr, weight_decay=5e-4)

    def schedule(opt, total):
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=total, pct_start=0.1)

    with tempfile.TemporaryDirectory() as tmp:
        Trainer(out or tmp, spec.epochs, spec.batch, seed=spec.seed, device=device, log_every=50, resume=resume,
                log=lambda m: log(f"{spec.name} {m}")).fit(model, items, optimizer, schedule,
                                                           collate_fn=items.collate)
    return net.eval()


@torch.no_grad()
def predict(net: nn.Module, images: np.ndarray, task: str, crop: str, batch: int = 256):
    outs = []
    for s in range(0, len(images), batch):
        x = normalise(crop_batch(images[s:s + batch], crop), task)
        o = net(x)
        outs.append(o if isinstance(o, tuple) else (o,))
    return tuple(torch.cat([o[i] for o in outs]).numpy() for i in range(len(outs[0])))


def verification_pairs(identity: np.ndarray, group: np.ndarray, seed: int = 0, per_identity: int = 2):
    """Genuine pairs (two images of one identity) and as many impostor pairs drawn within the
    same group (the harder and usual protocol), with 10 folds."""
    rng = np.random.default_rng(seed)
    by_id: dict[int, list[int]] = {}
    for i, v in enumerate(identity):
        by_id.setdefault(int(v), []).append(i)
    ids = sorted(by_id)
    a, b, same = [], [], []
    for v in ids:
        rows = by_id[v]
        for _ in range(per_identity):
            i, j = rng.choice(rows, 2, replace=False)
            a.append(i), b.append(j), same.append(True)
            others = [u for u in ids if u != v and group[by_id[u][0]] == group[rows[0]]]
            u = others[rng.integers(len(others))]
            a.append(rng.choice(rows)), b.append(rng.choice(by_id[u])), same.append(False)
    a, b, same = np.array(a), np.array(b), np.array(same)
    folds = np.arange(len(a)) % 10
    return a, b, same, folds


def evaluate(spec: ModelSpec, net: nn.Module, pool: dict) -> dict:
    """Accuracy on held-out identities, overall and per group x gender cell."""
    res: dict = {"eval_images": int(len(pool["images"])), "eval_identities": int(len(np.unique(pool["index"])))}
    cells = [(g, s) for g in range(len(GROUPS)) for s in range(len(GENDERS))]
    if spec.task == "recognition":
        emb, = predict(net, pool["images"], spec.task, spec.crop)
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        a, b, same, folds = verification_pairs(pool["index"], pool["group"])
        scores = (emb[a] * emb[b]).sum(1)
        res["verification_accuracy"], _ = kfold_accuracy(scores, same, folds)
        res["pairs"] = int(len(a))
        res["genuine_mean"] = float(scores[same].mean())
        res["impostor_mean"] = float(scores[~same].mean())
        res["impostor_p99"] = float(np.quantile(scores[~same], 0.99))
        per = {}
        for g, s in cells:
            m = (pool["group"][a] == g) & (pool["gender"][a] == s)
            per[f"{GROUPS[g]}/{GENDERS[s]}"] = kfold_accuracy(scores[m], same[m], folds[m])[0]
        res["verification_accuracy_per_cell"] = per
    else:
        g, s, age = predict(net, pool["images"], spec.task, spec.crop)
        pg, ps = g.argmax(1), s.argmax(1)
        res["group_accuracy"] = float((pg == pool["group"]).mean())
        res["gender_accuracy"] = float((ps == pool["gender"]).mean())
        res["age_mae_years"] = float(np.abs(age[:, 0] * 100 - pool["age"]).mean())
        prob_g = torch.softmax(torch.from_numpy(g), 1).numpy()
        prob_s = torch.softmax(torch.from_numpy(s), 1).numpy()
        conf_g, conf_s = prob_g.max(1), prob_s.max(1)
        res["confident_0.9_fraction"] = float(((conf_g >= 0.9) & (conf_s >= 0.9)).mean())
        res["group_confident_0.9_fraction"] = float((conf_g >= 0.9).mean())
        res["gender_confident_0.9_fraction"] = float((conf_s >= 0.9).mean())
        # the pipeline thresholds these probabilities, so they must mean what they say
        res["group_calibration_error"] = expected_calibration_error(prob_g, pool["group"])
        res["gender_calibration_error"] = expected_calibration_error(prob_s, pool["gender"])
        per = {}
        for gi, si in cells:
            m = (pool["group"] == gi) & (pool["gender"] == si)
            per[f"{GROUPS[gi]}/{GENDERS[si]}"] = {"group": float((pg[m] == gi).mean()),
                                                   "gender": float((ps[m] == si).mean())}
        res["accuracy_per_cell"] = per
    return res


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    conf, hit = probs.max(1), probs.argmax(1) == labels
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    err = 0.0
    for b in np.unique(which):
        m = which == b
        err += m.mean() * abs(hit[m].mean() - conf[m].mean())
    return float(err)


# ------------------------------------------------------------------------------ export

def export_onnx(module: nn.Module, path: Path, input_name: str, output_name: str, size: int):
    """Legacy exporter, opset 17, dynamic batch, static H/W (insightface routes on them)."""
    import warnings

    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (x,), str(path), dynamo=False, opset_version=17,
                          input_names=[input_name], output_names=[output_name],
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
    return path


def sidecar(spec: ModelSpec, metrics: dict) -> dict:
    """JSON describing an attribute ONNX: input convention and the slices of its output."""
    size = 112 if spec.crop == "arcface" else 96
    mean, std = ATTRIBUTE_NORM
    return {
        "format": "synthface.onnx-classifier", "format_version": 1, "name": spec.name,
        "input": {"size": size, "channels": "RGB", "layout": "NCHW", "mean": mean, "std": std,
                  "crop": "ffhq_arcface" if spec.crop == "arcface" else "ffhq_attribute"},
        "output": "logits", "activation": "softmax",
        "attributes": {"group": {"classes": list(GROUPS), "slice": [0, 3]},
                       "gender": {"classes": list(GENDERS), "slice": [3, 5]}},
        "metrics": metrics, "spec": asdict(spec),
    }


def save_json(obj, path: Path):
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
