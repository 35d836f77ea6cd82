"""The demo world's nuisance regressor: pose, expression, light and glasses read off a face.

Renderer faces carry their nuisance values (renderer.draw_nuisance), so a small CNN learns to read
them back from pixels; the labelled variation directions of synthface.identity.directions are fitted
from its predictions on generated faces, exactly as they would be from any ONNX regressor on a real
checkpoint. It is trained on renderer people of its own identity range (NUISANCE_FIRST), disjoint
from every range the world's models, calibration faces and experiments use, and exported to ONNX
with a JSON sidecar in the format synthface.labelling.nuisance reads.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .world import BALANCED, World

NUISANCE_FIRST = 6_000_000
# (name, kind, what the value is): regression targets are the renderer's own parameters; glasses is a
# logit (the ONNX output), read as a continuous quantity by the direction fit.
NUISANCES = (("yaw", "regression", "head turn, radians"), ("roll", "regression", "in-plane tilt, radians"),
             ("smile", "regression", "mouth-corner lift (renderer units)"),
             ("mouth_open", "regression", "mouth opening, 0..1"),
             ("light_x", "regression", "horizontal light direction x strength"),
             ("light_y", "regression", "vertical light direction x strength"),
             ("brightness", "regression", "log exposure"), ("glasses", "logit", "glasses worn"))
# The ArcFace crop (at 64 px): the same regressor reads generated FFHQ-aligned faces and the 112x112
# crops a dataset stores.
INPUT = {"size": 64, "channels": "RGB", "mean": 127.5, "std": 127.5, "crop": "ffhq_arcface"}


def nuisance_values(q: dict) -> np.ndarray:
    """The renderer's nuisance dict -> [N, len(NUISANCES)] targets (glasses as 0/1)."""
    return np.stack([q["yaw"], q["roll"], q["smile"], q["mouth_open"], q["light"][:, 0], q["light"][:, 1],
                     np.log(q["brightness"]), q["glasses"].astype(np.float64)], 1).astype(np.float32)


class NuisanceNet(nn.Module):
    """Four strided conv blocks and a linear head: one output per nuisance."""

    def __init__(self, outputs: int = len(NUISANCES), width: int = 16):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        layers = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True),
                       nn.Conv2d(b, b, 3, 1, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1] * 16, outputs)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def render_training_set(n_ids: int, images: int, first: int = NUISANCE_FIRST, seed: int = 0,
                        log: Callable = print) -> tuple[np.ndarray, np.ndarray]:
    """n_ids balanced renderer people x `images` images: (uint8 [N, 64, 64, 3], targets [N, k])."""
    from ..align import arcface_crop
    from .renderer import render
    from .world import take
    world = World(seed=seed, distribution=BALANCED)
    imgs, ys = [], []
    t0 = time.time()
    for s in range(first, first + n_ids, 64):
        ids = list(range(s, min(s + 64, first + n_ids)))
        ident = take(world.identities(ids), np.repeat(np.arange(len(ids)), images))
        j = np.tile(np.arange(images), len(ids))
        q = world.nuisance(ident, j)
        imgs.append(arcface_crop(render(ident, q, 64), INPUT["size"]).round().clamp(0, 255).byte()
                    .permute(0, 2, 3, 1).numpy())
        ys.append(nuisance_values(q))
    log(f"rendered {sum(len(i) for i in imgs)} nuisance training faces in {time.time() - t0:.0f}s")
    return np.concatenate(imgs), np.concatenate(ys)


def _degrade(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur and noise at random, so the regressor also reads the generator's softer output."""
    n = x.shape[0]
    k = torch.tensor([1.0, 2.0, 1.0]) / 4
    blur = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), (k[:, None] * k[None, :]).expand(3, 1, 3, 3),
                    groups=3)
    pick = (torch.rand(n, 1, 1, 1, generator=gen) < 0.5).float()
    x = pick * blur + (1 - pick) * x
    return x + torch.randn(x.shape, generator=gen) * torch.rand(n, 1, 1, 1, generator=gen) * 0.04


def train_regressor(images: np.ndarray, targets: np.ndarray, epochs: int = 8, batch: int = 128, lr: float = 2e-3,
                    seed: int = 0, log: Callable = print) -> tuple[NuisanceNet, dict]:
    """Fit NuisanceNet (standardised MSE on the regressions, BCE on glasses); returns the net with
    the targets' mean/std folded into its head, so it outputs renderer units (and a glasses logit)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    kinds = [k for _, k, _ in NUISANCES]
    reg = torch.tensor([k == "regression" for k in kinds])
    mu = torch.from_numpy(targets.mean(0)) * reg
    sd = torch.where(reg, torch.from_numpy(targets.std(0)) + 1e-6, torch.ones(len(kinds)))
    net = NuisanceNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(images) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    X = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    Y = (torch.from_numpy(targets) - mu) / sd
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(X), generator=gen)
        total = 0.0
        for b in range(len(X) // batch):
            rows = perm[b * batch:(b + 1) * batch]
            x = _degrade((X[rows].float() - INPUT["mean"]) / INPUT["std"], gen)
            out = net(x)
            loss = F.mse_loss(out[:, reg], Y[rows][:, reg]) + \
                F.binary_cross_entropy_with_logits(out[:, ~reg], Y[rows][:, ~reg])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        log(f"nuisance regressor epoch {ep + 1}/{epochs}: loss {total / max(1, len(X) // batch):.4f}")
    with torch.no_grad():  # fold the standardisation into the head: outputs in renderer units
        net.head.weight.mul_(sd[:, None])
        net.head.bias.mul_(sd).add_(mu)
    return net.eval(), {"epochs": epochs, "batch": batch, "lr": lr, "train_images": len(images), "seed": seed}


@torch.no_grad()
def predict(net: NuisanceNet, images: np.ndarray, batch: int = 512) -> np.ndarray:
    out = []
    for s in range(0, len(images), batch):
        x = torch.from_numpy(images[s:s + batch]).permute(0, 3, 1, 2).float()
        out.append(net((x - INPUT["mean"]) / INPUT["std"]).numpy())
    return np.concatenate(out)


def evaluate(pred: np.ndarray, targets: np.ndarray) -> dict:
    """Per nuisance: R^2 and MAE for regressions, accuracy for glasses."""
    out = {}
    for k, (name, kind, _) in enumerate(NUISANCES):
        y, p = targets[:, k], pred[:, k]
        if kind == "regression":
            out[name] = {"r2": float(1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum()),
                         "mae": float(np.abs(y - p).mean())}
        else:
            out[name] = {"accuracy": float(((p > 0) == (y > 0.5)).mean()), "positive_rate": float(y.mean())}
    return out


def sidecar(metrics: dict, training: dict) -> dict:
    return {"input": INPUT, "output": "values",
            "nuisances": {name: {"index": k, "kind": kind, "description": what}
                          for k, (name, kind, what) in enumerate(NUISANCES)},
            "training": {**training, "identities_first": NUISANCE_FIRST, "source": "demo-world renderer faces"},
            "metrics_held_out": metrics}


def build(out_dir: Path, n_ids: int = 3000, images: int = 6, epochs: int = 5, log: Callable = print) -> dict:
    """Render, train, evaluate on held-out renderer people and export nuisance.onnx + nuisance.json."""
    from ..fileio import write_json_atomic
    from .models import export_onnx
    X, Y = render_training_set(n_ids, images, log=log)
    Xv, Yv = render_training_set(500, 4, first=NUISANCE_FIRST + 500_000, log=log)
    net, training = train_regressor(X, Y, epochs=epochs, log=log)
    metrics = evaluate(predict(net, Xv), Yv)
    log(json.dumps(metrics))
    out_dir = Path(out_dir)
    export_onnx(net, out_dir / "nuisance.onnx", "input", "values", INPUT["size"])
    meta = sidecar(metrics, training)
    write_json_atomic(out_dir / "nuisance.json", meta)
    return meta
