"""Seed -> image generation, the Python API behind `synthface images`.

Latents follow NVIDIA's generate.py convention, z = RandomState(seed).randn(1, z_dim),
so our seed images match the seed grids published for their checkpoints.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .errors import SynthfaceError
from .generator.networks import NOISE_MODES, Generator
from .fileio import atomic_write


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


def seed_latents(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """z for each seed, exactly as NVIDIA's generate.py draws it (float64 numpy -> float32)."""
    return torch.from_numpy(np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds])).float()


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in about [-1, 1] -> [N, H, W, C] uint8, NVIDIA's rounding."""
    img = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return img.cpu().numpy()


@torch.no_grad()
def generate_images(G: Generator, seeds: Sequence[int], truncation_psi: float = 1.0,
                    truncation_cutoff: Optional[int] = None, noise_mode: str = "const",
                    class_idx: Optional[int] = None, batch_size: int = 8,
                    device: Optional[torch.device] = None, progress: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (seed, HWC uint8 image) for each seed. Results do not depend on batch_size."""
    if noise_mode not in NOISE_MODES:
        raise SynthfaceError(f"--noise-mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
    if batch_size < 1:
        raise SynthfaceError("--batch must be at least 1")
    device = device or next(G.parameters()).device
    seeds = list(seeds)
    bar = _progress(len(seeds), "images", progress)
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
                # one generator per seed: random noise is reproducible per image, batch-independent
                gens = [torch.Generator(device=device).manual_seed(s) for s in chunk]
            img = G(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                    noise_mode=noise_mode, noise_generator=gens)
            for s, arr in zip(chunk, to_uint8(img)):
                yield s, arr
            bar.update(len(chunk))
    finally:
        bar.close()


def _progress(total: int, unit: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, disable=not (enabled and sys.stderr.isatty()), leave=False)


def save_image_atomic(arr: np.ndarray, path: os.PathLike) -> Path:
    """Write a PNG via a temporary file and rename, so no half-written image is ever left."""
    mode = "L" if arr.ndim == 2 or arr.shape[2] == 1 else "RGB"
    img = Image.fromarray(arr.squeeze(-1) if mode == "L" and arr.ndim == 3 else arr, mode)
    return atomic_write(path, lambda f: img.save(f, format="PNG"), suffix=".png")


def image_grid(images: Sequence[np.ndarray], cols: Optional[int] = None, pad: int = 2) -> np.ndarray:
    """Tile HWC images into one grid image (white padding)."""
    if not images:
        raise SynthfaceError("no images to tile")
    n = len(images)
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h, w, c = images[0].shape
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = im
    return grid
