"""Seed -> z -> w -> image -> uint8: the one way synthface turns latents into pixels.

Everything that makes images (`synthface images`, the latent bank, cell sampling, identity
selection and variations, the GAN trainer's snapshots, the Ray workers) goes through here, so
seeding, truncation, noise and rounding are defined once:

- z for a seed follows NVIDIA's generate.py, z = RandomState(seed).randn(z_dim), so seed images
  match the seed grids published for their checkpoints;
- `noise_mode="random"` takes one torch.Generator per image, seeded by that image's noise seed,
  so random noise is reproducible per image and independent of the batch size;
- uint8 conversion uses NVIDIA's rounding, (x * 127.5 + 128) clamped and truncated.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from ..errors import SynthfaceError
from .networks import NOISE_MODES, Generator


def parse_seeds(text: str) -> list[int]:
    """'0-7,12' -> [0, 1, ..., 7, 12]."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise SynthfaceError(f"bad seed range '{part}': the end is before the start")
            seeds.extend(range(lo, hi + 1))
        elif part.isdigit():
            seeds.append(int(part))
        else:
            raise SynthfaceError(f"bad seed '{part}': use non-negative integers and ranges, e.g. --seeds 0-7,12")
    if not seeds:
        raise SynthfaceError("no seeds given: use e.g. --seeds 0-7,12")
    if max(seeds) >= 2**32:
        raise SynthfaceError("seeds must be below 2**32 (numpy RandomState's limit)")
    return seeds


def generator_hash(G) -> str:
    """Hash of the generator's parameters and buffers (format-independent: a .pkl and its
    .safetensors conversion hash the same)."""
    h = hashlib.sha256()
    for name, t in sorted(G.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    # bf16 synthesis draws other pixels from the same weights: a bank or dataset begun in one
    # precision must not resume in the other (fp32 keeps the hash it always had)
    precision = getattr(getattr(G, "synthesis", None), "cpu_precision", "fp32")
    if precision != "fp32":
        h.update(f"cpu_precision={precision}".encode())
    return h.hexdigest()[:16]


def seed_latents(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """z for each seed, exactly as NVIDIA's generate.py draws it (float64 numpy -> float32)."""
    return torch.from_numpy(np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds])).float()


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in about [-1, 1] -> [N, H, W, C] uint8, NVIDIA's rounding. Non-finite pixels (which the
    cast would turn into black silently) stop the run before any image is written."""
    if not bool(torch.isfinite(img).all()):
        raise SynthfaceError(f"the generator produced NaN or inf pixels in {int((~torch.isfinite(img)).sum())} "
                             "values; check --trunc and the network file (its weights may be damaged), or run on "
                             "--device cpu to rule out a numerical problem of the GPU kernels")
    img = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return img.cpu().numpy()


def _device(G) -> torch.device:
    return next(G.parameters()).device


@torch.no_grad()
def map_seeds(G, seeds, truncation_psi: float = 1.0, device=None) -> torch.Tensor:
    """w [N, w_dim] for seeds, truncated with psi (the prior every sampler draws from)."""
    device = device or _device(G)
    z = seed_latents(seeds, G.z_dim).to(device)
    c = G.labels(None, len(seeds), device)
    return G.mapping(z, c, truncation_psi=truncation_psi)[:, 0]


def prior_latents(G, seeds: Sequence[int], truncation_psi: float = 1.0) -> np.ndarray:
    """map_seeds as float32 numpy, in blocks of 1024 seeds (bounded memory for long lists)."""
    out = [map_seeds(G, list(seeds[s:s + 1024]), truncation_psi).cpu().numpy() for s in range(0, len(seeds), 1024)]
    return np.concatenate(out) if out else np.zeros((0, G.w_dim), np.float32)


def broadcast_ws(G, w) -> np.ndarray:
    """[N, w_dim] -> [N, num_ws, w_dim]: the same w for every layer."""
    return np.repeat(np.asarray(w, np.float32)[:, None], G.num_ws, 1)


@torch.no_grad()
def synthesize(G, w, noise_mode: str = "const", batch_size: int = 64,
               noise_seeds: Optional[Sequence[int]] = None) -> np.ndarray:
    """uint8 images [N, H, W, 3] from w [N, w_dim] (the same w for every layer) or per-layer
    ws [N, num_ws, w_dim]. `noise_mode="random"` needs one noise seed per image."""
    if noise_mode not in NOISE_MODES:
        raise SynthfaceError(f"noise mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
    if noise_mode == "random" and (noise_seeds is None or len(noise_seeds) != len(w)):
        raise SynthfaceError("noise_mode='random' needs one noise seed per image")
    device = _device(G)
    out = []
    for s in range(0, len(w), batch_size):
        x = torch.as_tensor(w[s:s + batch_size], dtype=torch.float32, device=device)
        if x.ndim == 2:
            x = x.unsqueeze(1).repeat(1, G.num_ws, 1)
        gens = None
        if noise_mode == "random":
            gens = [torch.Generator(device=device).manual_seed(int(k)) for k in noise_seeds[s:s + batch_size]]
        out.append(to_uint8(G.synthesis(x, noise_mode=noise_mode, noise_generator=gens)))
    return np.concatenate(out) if out else np.zeros((0, G.img_resolution, G.img_resolution, 3), np.uint8)


@torch.no_grad()
def generate_images(G: Generator, seeds: Sequence[int], truncation_psi: float = 1.0,
                    truncation_cutoff: Optional[int] = None, noise_mode: str = "const",
                    class_idx: Optional[int] = None, batch_size: int = 8,
                    device: Optional[torch.device] = None, progress: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (seed, HWC uint8 image) for each seed, as NVIDIA's gen_images.py would draw it
    (truncation cutoff, class labels, per-seed random noise). Results do not depend on batch_size."""
    from ..utils import progress_bar

    if noise_mode not in NOISE_MODES:
        raise SynthfaceError(f"--noise-mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
    if batch_size < 1:
        raise SynthfaceError("--batch must be at least 1")
    device = device or _device(G)
    seeds = list(seeds)
    bar = progress_bar(len(seeds), "images", unit="images", enabled=progress)
    try:
        for i in range(0, len(seeds), batch_size):
            chunk = seeds[i:i + batch_size]
            z = seed_latents(chunk, G.z_dim).to(device)
            try:
                c = G.labels(class_idx, len(chunk), device)
            except ValueError as e:
                raise SynthfaceError(str(e)) from None
            gens = None
            if noise_mode == "random":
                gens = [torch.Generator(device=device).manual_seed(s) for s in chunk]
            img = G(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                    noise_mode=noise_mode, noise_generator=gens)
            for s, arr in zip(chunk, to_uint8(img)):
                yield s, arr
            bar.update(len(chunk))
    finally:
        bar.close()
