"""Refined variations: after the linear step along the labelled directions, a few gradient steps on the
identity's per-layer latents through the generator, toward the image's target nuisance values and back
toward the identity.

Why: the linear readouts explain little of pose and expression in W (held-out R^2 about 0.2-0.4 on the demo
generator), so a linear step reaches about half of the real per-person spread, and a recogniser trained on
identities that vary half as much loses several points (docs/experiments.md, the a50 diagnostic). The map
from w to a face's pose is nonlinear but deterministic, so the target can be approached directly:

    minimise over d (the offsets of the layers below mix_from, the ones that carry pose and shape)
        mean_k ((r_k(G(ws + d)) - t_k) / s_k)^2  +  lam_id * max(0, c - cos(e(G(ws + d)), e_ref))  +  lam_d * |d|^2

with r the nuisance regressor (run with torch ops), t the image's target (one real face's values), s the
targets' spread, e a differentiable twin of the dataset's recogniser and e_ref the identity's reference
embedding. The label and consistency checks still judge every refined image afterwards, with the
dataset's own (ONNX) models.

c, the identity target, is 1 by default: the identity term pulls every image toward its reference. On the
demo world that makes an identity's images more alike than a real person's (pair similarity median 0.93
against 0.83-0.86 for renderer people, docs/benchmarks.md), so a dataset can set c to the real data's typical
genuine similarity (`--refine-identity-target`): below it the term pulls, above it images are free to vary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..errors import SynthfaceError


@dataclass
class Refiner:
    regressor: object          # labelling.nuisance.OnnxNuisanceRegressor (predict_tensor)
    embedder: object           # an embedder with embed_tensor (identity.torch_embedder.TorchBackboneEmbedder)
    target_std: np.ndarray     # [k] spread of the targets, per nuisance
    used: np.ndarray           # [k] bool: nuisances the directions vary
    steps: int = 15
    lr: float = 0.03
    lam_id: float = 4.0
    lam_d: float = 0.01
    id_target: float = 1.0     # c above: the identity term is zero once cos(e, e_ref) >= c

    def refine(self, G, ws: np.ndarray, targets: np.ndarray, e_ref: np.ndarray, layers: int) -> np.ndarray:
        """ws [B, num_ws, w_dim] -> refined ws (layers [0, layers) moved; the rest, e.g. style-mixed fine
        layers, kept). targets [B, k] in the regressor's names order."""
        if self.steps <= 0 or layers <= 0 or len(ws) == 0:
            return ws
        dev = next(G.parameters()).device
        base = torch.as_tensor(ws, dtype=torch.float32, device=dev)
        t = torch.as_tensor(targets[:, self.used], dtype=torch.float32, device=dev)
        s = torch.as_tensor(np.maximum(self.target_std[self.used], 1e-6), dtype=torch.float32, device=dev)
        ref = torch.as_tensor(e_ref, dtype=torch.float32, device=dev)
        used = torch.as_tensor(np.nonzero(self.used)[0], device=dev)
        d = torch.zeros_like(base[:, :layers], requires_grad=True)
        opt = torch.optim.Adam([d], lr=self.lr)
        was = [p.requires_grad for p in G.parameters()]
        G.requires_grad_(False)
        try:
            for _ in range(self.steps):
                img = (G.synthesis(torch.cat([base[:, :layers] + d, base[:, layers:]], 1), noise_mode="const")
                       * 127.5 + 128).clamp(0, 255)
                y = self.regressor.predict_tensor(img)[:, used]
                e = self.embedder.embed_tensor(img)
                loss = (((y - t) / s) ** 2).mean() + self.lam_id * (self.id_target - e @ ref).clamp(min=0).mean() \
                    + self.lam_d * d.square().sum(-1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        finally:
            for p, w in zip(G.parameters(), was):
                p.requires_grad_(w)
        out = base.detach().clone()
        out[:, :layers] += d.detach()
        return out.cpu().numpy()


def differentiable_twin(embedder, device: str = "cpu"):
    """The dataset's recogniser as a torch module: itself when it is one (torch:/arcface: specs), the demo
    world's recogniser's torch twin for `world`; otherwise a clear error."""
    if hasattr(embedder, "embed_tensor"):
        return embedder
    from ..assets import asset
    path = getattr(embedder, "path", None)
    if path is not None and str(path) == str(asset("pack") / "recognition.onnx"):
        from .torch_embedder import TorchBackboneEmbedder
        return TorchBackboneEmbedder("world-recognizer", device=device)
    raise SynthfaceError("--refine-steps needs a recogniser torch can differentiate: give --recognizer torch:PATH or "
                         "arcface:PATH (an ONNX or insightface recogniser gives no gradients), or --refine-steps 0")


def make_refiner(steps: int, nuisance_regressor: Optional[str], embedder, directions,
                 device: str = "cpu", id_target: Optional[float] = None) -> Optional[Refiner]:
    """The Refiner for `steps` > 0 gradient steps (None for 0), reading nuisances with the
    `nuisance_regressor` spec; `device`: the generator's; `id_target`: c (None: 1)."""
    if steps <= 0:
        if id_target is not None:
            raise SynthfaceError("--refine-identity-target sets the refinement's identity term: give --refine-steps N "
                                 "too, or leave it out")
        return None
    if directions is None:
        raise SynthfaceError("--refine-steps refines labelled variations: use --variations labelled with a nuisance "
                             "regressor (--nuisance-regressor world or onnx:PATH), or --refine-steps 0")
    from ..labelling.nuisance import load_nuisance_regressor
    return Refiner(load_nuisance_regressor(nuisance_regressor), differentiable_twin(embedder, device),
                   directions.targets.std(0), np.asarray(directions.used, bool), steps=steps,
                   id_target=1.0 if id_target is None else float(id_target))
